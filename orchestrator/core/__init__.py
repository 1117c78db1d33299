"""Pure core: the reducer (a deterministic fold over the log) and the decisions.

Nothing here imports nats, duckdb, asyncio or time; clocks and ids come in as arguments.
"""
