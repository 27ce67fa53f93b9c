"""Helpers for the sync e2e tests: run the real CLI, compare a served export with its source, keys."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

CLI = [sys.executable, "-c", "from stella_mirror.cli.main import main; main()"]


def run_cli(
    *args: str | Path, env: Mapping[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``stella-mirror ARGS…`` in a fresh interpreter (JSON logs: stderr is not a terminal)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=full_env)


def sync_args(source: str, dest: Path, kind: str, key: Path, state: Path, *extra: str | Path) -> list[str | Path]:
    return ["sync", "--source", source, "--dest", dest, "--kind", kind, "--trust-key", key, "--state-dir", state,
            *extra]


def files(export_dir: Path) -> dict[str, bytes]:
    """Every regular file of an export directory by relative path (dot-names excluded), precompressed ``.zst``
    variants included: the signed index lists them and the sync carries them."""
    out = {}
    for p in sorted(export_dir.rglob("*")):
        rel = p.relative_to(export_dir).as_posix()
        if p.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            out[rel] = p.read_bytes()
    return out


def assert_serves(dest: Path, source_export: Path, key: Path) -> None:
    """``dest``'s latest is byte-for-byte ``source_export`` and ``stella-mirror verify`` passes on it."""
    served = dest / "latest"
    assert served.is_symlink(), f"{dest} serves nothing"
    assert os.readlink(served) == source_export.name
    assert files(served.resolve()) == files(source_export)
    res = run_cli("verify", dest, "--key", key)
    assert res.returncode == 0, res.stdout + res.stderr


def history(state: Path) -> list[dict[str, Any]]:
    res = run_cli("sync", "history", "--state-dir", state, "--json", "--limit", "100")
    assert res.returncode == 0, res.stderr
    runs: list[dict[str, Any]] = orjson.loads(res.stdout)
    return runs


def log_events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log lines of a run."""
    return [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
