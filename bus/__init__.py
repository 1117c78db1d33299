"""The event log and bus: Nexus's one door to NATS JetStream.

`nats_bus.NatsBus` is the only importer of nats-py; its errors are `bus.errors`.
Shared by the orchestrator, the agent and every client.
"""
