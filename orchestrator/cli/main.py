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
        # Not click's standalone mode: a usage error is ours to print, on one line like the others.
        code = command(sys.argv[1:]).main(sys.argv[1:], prog_name="nexus", standalone_mode=False)
    except SystemExit:
        gc.freeze()  # see below
        raise
    except CliError as exc:
        err.print(f"nexus: error: {exc}", markup=False, highlight=False)
        sys.exit(exc.code)
    except Exception as exc:
        sys.exit(_error(exc))
    # The process ends here and its memory with it: spare the interpreter's exit-time
    # collections a walk over every object the imports made (~15% of `nexus run`'s CPU).
    # Objects left in reference cycles then get no __del__ at exit, which Python never
    # promised; every verb closes what it opened.
    gc.freeze()
    sys.exit(code if type(code) is int else 0)  # a verb's typer.Exit(n), else 0


def _error(exc: Exception) -> int:
    """A usage error (click's, as typer raises them) or a Nexus error: one line on stderr, the exit code."""
    import typer

    from orchestrator.cli.common import err

    if isinstance(exc, typer.Abort):
        err.print("nexus: aborted", markup=False, highlight=False)
        return 1
    if isinstance(exc, typer.TyperException):
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":  # `nexus`, `nexus pipeline`: their help
            if message := exc.format_message():  # (a rich help has printed itself already)
                err.print(message, markup=False, highlight=False, end="")
            return 2
        hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
        err.print(f"nexus: error: {exc.format_message()}{hint}", markup=False, highlight=False)
        return exc.exit_code
    from schemas.errors import InvalidId, NexusError  # imported only now: `nexus --help` does without the schemas

    if not isinstance(exc, NexusError):
        raise exc
    err.print(f"nexus: error: {exc}", markup=False, highlight=False)
    return 2 if isinstance(exc, InvalidId) else 1  # an id no job, node or pipeline can have: a usage error


if __name__ == "__main__":
    main()
