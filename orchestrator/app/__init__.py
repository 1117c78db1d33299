"""The application layer: each use case of Nexus written once, for the CLI, the HTTP API and the console.

Interfaces parse their input, call a use case here and render its answer; they
do not talk to the bus on their own. Errors are drawn in `app.errors`.
"""
