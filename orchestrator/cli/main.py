"""`nexus`: the single entry point. Verbs live in one module per group (run.py, jobs.py, state.py,
daemons.py, ...), wired into one click group in verbs.py."""

from __future__ import annotations

import gc
import sys

from orchestrator.cli import process


def main() -> None:
    """Entry point: Nexus errors become one line on stderr and an exit code, never a traceback."""
    process.start()  # before typer and the verb's own imports: see orchestrator.cli.process
    from orchestrator.cli.common import CliError, err
    from orchestrator.cli.verbs import command

    try:
        command(sys.argv[1:])()
    except SystemExit:  # how click ends every verb that did not fail with an error of ours
        # The process ends here and its memory with it: spare the interpreter's exit-time
        # collections a walk over every object the imports made (~15% of `nexus run`'s CPU).
        # Objects left in reference cycles then get no __del__ at exit, which Python never
        # promised; every verb closes what it opened.
        gc.freeze()
        raise
    except CliError as exc:
        err.print(f"nexus: error: {exc}", markup=False, highlight=False)
        sys.exit(exc.code)
    except Exception as exc:
        from schemas.errors import NexusError  # imported only now: `nexus --help` does without the schemas

        if not isinstance(exc, NexusError):
            raise
        err.print(f"nexus: error: {exc}", markup=False, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
