"""The operators' listener: REST API, metrics and dashboard (FastAPI)."""
