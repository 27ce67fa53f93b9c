"""README's first command, as written, on a copy of the project: a virtual environment made from scratch, the project
installed into it by pip (Debian's own python refuses a system-wide install, PEP 668), then the installed
``stella-mirror --version`` in place of the demo (which serves until stopped; tests/e2e/test_serve_demo.py runs it).

pip uses this machine's configuration: PyPI, or a local index/wheel directory where one is configured."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]


def first_command() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("## Two commands"):]
    block = block[block.index("```bash") + len("```bash"): block.index("```", block.index("```bash") + 7)]
    [command] = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")][:1]
    return command.strip()


def debian_python() -> str | None:
    """``/usr/bin/python3`` when it is Debian's externally managed (PEP 668) interpreter with ``venv`` usable."""
    probe = ("import ensurepip, os, sys, sysconfig; "
             "sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')) else 1)")
    python = "/usr/bin/python3"
    if os.path.exists(python) and subprocess.run([python, "-c", probe], capture_output=True).returncode == 0:
        return python
    return None


def test_the_first_command_installs_into_a_fresh_venv(tmp_path: Path) -> None:
    command = first_command()
    assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install -e . && ")
    assert command.endswith(" && stella-mirror demo")
    project = tmp_path / "stella-mirror"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, project / name)
    shutil.copytree(REPO / "src", project / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    install = command.removesuffix(" && stella-mirror demo") + " && stella-mirror --version"
    # A shell as a new operator has it: Debian's own python3 where this machine has it (externally managed: a
    # system-wide pip install is refused), else this interpreter; none of the test run's Python settings.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(debian_python() or sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = str(bin_dir) + os.pathsep + env.get("PATH", "")
    res = subprocess.run(["bash", "-euo", "pipefail", "-c", install], cwd=project, env=env, capture_output=True,
                         text=True, timeout=880)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert re.search(rf"^stella-mirror {re.escape(version)}$", res.stdout, re.MULTILINE), res.stdout[-2000:]
    # The venv's stella-mirror is this copy, installed into .venv — not the test run's own installation.
    where = subprocess.run([str(project / ".venv" / "bin" / "python"), "-c",
                            "import stella_mirror; print(stella_mirror.__file__)"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.splitlines()[0] == str(project / "src" / "stella_mirror" / "__init__.py"), where.stdout
    assert (project / ".venv" / "bin" / "stella-mirror").is_file()
