"""The event log and bus: Nexus's one door to NATS JetStream.

port.EventBus        what services and clients may ask (publish, follow, read, output,
                     heartbeats, the agent's dispatch consumer, request/reply)
errors               BusError and its family, the only errors the port raises
nats_bus.NatsBus     the NATS adapter (with nats_consumers, nats_nodes, nats_setup):
                     the only importer of nats-py, which maps its errors once
memory.MemoryBus     the in-process twin; both pass tests/contract/
"""
