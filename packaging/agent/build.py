"""Build the `nexus-agent` wheel from this repo: stage schemas/, bus/ and agent/ with the
pyproject.toml next to this file, then `pip wheel` it into build/agent-dist/ (pip fetches setuptools for the build, as for any sdist)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PACKAGES = ("schemas", "bus", "agent")


def main() -> int:
    out = ROOT / "build" / "agent-dist"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nexus-agent-") as tmp:
        stage = Path(tmp)
        shutil.copy(HERE / "pyproject.toml", stage / "pyproject.toml")
        (stage / "README.md").write_text("Nexus node agent; see the Nexus README, section Layout.\n")
        for pkg in PACKAGES:
            shutil.copytree(ROOT / pkg, stage / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(stage)]
        subprocess.run(cmd, check=True)
    for wheel in sorted(out.glob("nexus_agent-*.whl")):
        print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
