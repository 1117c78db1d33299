"""Wire types of Nexus: events, subjects, codec and JSON Schema export.

This package imports msgspec only; every process (orchestrator, agent, CLI,
external tools) shares it.
"""
