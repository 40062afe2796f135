"""The agent listener: a raw ASGI app (FastAPI is for the admin side only)."""
