"""HTTP API under /api/v1 (FastAPI) and the server process that hosts it."""
