"""The HTTP API of Nexus (DESIGN.md section 7): Litestar behind uvicorn, msgspec bodies, SSE streams."""
