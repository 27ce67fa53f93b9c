"""Run the real CLI in a fresh interpreter, and small file-tampering helpers for e2e tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def cli(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``stella-mirror ARGS…`` via the console entry point, output captured as text."""
    cmd = [sys.executable, "-c", "from stella_mirror.cli.main import main; main()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def flip(path: Path, offset: int) -> None:
    """Flip one bit of the byte at ``offset`` (negative counts from the end)."""
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
