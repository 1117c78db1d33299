"""The `nexus` command line: one module per group of verbs, wired in `verbs`, run by `main`."""
