"""agent.pty_spawn (posix_spawn instead of fork) gives a job the same terminal as ptyprocess did:
its own session led by the command, the pty as controlling terminal, stdio on it, no
descriptor of the agent's, default SIGPIPE; and the runner still falls back to ptyprocess
for a job with a working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent import pty_spawn
from agent.pty_runner import PtyRunner, RunSpec, SpawnFailed

pytestmark = pytest.mark.skipif(not pty_spawn.AVAILABLE, reason="posix_spawn with file actions is Linux/glibc only")

PROBE = (
    'read -r _ sid _ < <(ps -o pid=,sid=,tty= -p $$); echo "leader=$([ "$sid" = "$$" ] && echo yes || echo no)"; '
    'echo "ctty=$(ps -o tty= -p $$ | tr -d " ")"; echo "stdin=$(readlink /proc/$$/fd/0)"; '
    'ls /proc/$$/fd | sort -n | tr "\\n" " "; echo; yes | head -c 1; echo; stty size'
)


async def run(spec: RunSpec) -> tuple[int | None, bytes]:
    chunks: list[bytes] = []

    async def on_output(data: bytes) -> None:
        chunks.append(data)

    result = await PtyRunner().run(spec, on_output)
    return result.exit_code, b"".join(chunks)


@pytest.mark.asyncio
async def test_the_job_leads_its_session_on_the_pty_and_inherits_nothing(tmp_path: Path) -> None:
    leak = os.open(tmp_path / "agent-file", os.O_CREAT | os.O_RDWR)
    os.set_inheritable(leak, True)  # as a library that forgets O_CLOEXEC would leave it
    try:
        code, out = await run(RunSpec(argv=["bash", "-c", PROBE], rows=40, cols=100))
    finally:
        os.close(leak)
    text = out.decode()
    assert code == 0, text
    lines = text.splitlines()
    assert lines[0] == "leader=yes"
    assert lines[1].startswith("ctty=pts/")
    assert lines[2] == f"stdin=/dev/{lines[1].removeprefix('ctty=')}"
    fds = lines[3].split()
    assert fds[:3] == ["0", "1", "2"] and str(leak) not in fds, fds
    assert lines[4] == "y" and "Broken pipe" not in text  # SIGPIPE at its default: `yes` ends quietly
    assert lines[5] == "40 100"
    assert "\r" not in text  # no output processing


@pytest.mark.asyncio
async def test_an_exec_that_fails_is_spawn_failed_and_a_working_directory_still_works(tmp_path: Path) -> None:
    script = tmp_path / "no-format"  # executable, but neither a binary nor a #! script: exec refuses it
    script.write_text("echo hi\n")
    script.chmod(0o755)
    with pytest.raises(SpawnFailed):
        await run(RunSpec(argv=[str(script)]))
    code, out = await run(RunSpec(argv=["bash", "-c", "pwd; ps -o tty= -p $$"], cwd=str(tmp_path)))
    assert code == 0
    assert out.decode().splitlines()[0] == str(tmp_path)
    assert out.decode().splitlines()[1].strip().startswith("pts/")
