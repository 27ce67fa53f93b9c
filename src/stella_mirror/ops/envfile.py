"""Read an env file the way the runbook uses it (``set -a; . env/mirror.env; set +a``): through bash itself,
so quoting, comments and expansions mean exactly what they mean to the operator's shell."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from stella_mirror.config import SECTIONS
from stella_mirror.errors import ConfigError


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of our sections (``CONCELIER__…``, ``MIRROR__…``) that sourcing ``path`` sets."""
    script = 'set -a; . "$1"; set +a; exec env -0'
    res = subprocess.run(
        ["bash", "-c", script, "bash", str(path)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        raise ConfigError(str(path), res.stderr.decode(errors="replace").strip() or "cannot be sourced by bash")
    pairs = (item.split("=", 1) for item in res.stdout.decode().split("\0") if "=" in item)
    prefixes = tuple(f"{s.upper()}__" for s in SECTIONS)
    return {k: v for k, v in pairs if k.upper().startswith(prefixes)}
