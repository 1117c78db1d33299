"""Nexus node agent: runs dispatched jobs in a PTY and reports on them."""
