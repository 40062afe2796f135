"""The pure core: everything that decides, nothing that does I/O.

Modules here never import asyncio, httpx, fastapi, starlette, sqlmodel,
sqlalchemy, asyncpg or uvicorn (``tests/core/test_purity.py`` keeps it so).
Callers give them values and get values back: a policy set and a request in,
a ``Decision`` out; a journal entry and a response in, its inverse call out.
"""
