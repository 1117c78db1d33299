"""The Nexus orchestrator: reducer and decisions (pure, in `core`), DuckDB store, NATS adapter, CLI."""
