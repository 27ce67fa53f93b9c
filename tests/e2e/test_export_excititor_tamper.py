"""Tampering with and rolling back a published Excititor export: ``stella-mirror verify`` refuses each
with the documented exit code (10 signature, 11 digest, 12 expired, 13 rollback, 14 malformed)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from clitools import cli, flip
from stella_mirror.bundle.files import sign_file
from stella_mirror.bundle.keyfiles import load_signing_key

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "src" / "stella_mirror" / "samples" / "excititor" / "config.yaml"

pytestmark = pytest.mark.e2e



def export(keys: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("export", "excititor", "--config", CONFIG, "--key", keys / "mirror-key.pem", "--out", out, *extra)


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("tamper")
    keys = base / "keys"
    assert cli("keys", "generate", "--out", keys).returncode == 0
    proc = export(keys, base / "root", "--export-id", "e1")
    assert proc.returncode == 0, proc.stderr
    return base / "root", keys



def resign_garbage_index(mirror: Path, keys: Path) -> None:
    """A correctly signed index that is not an index: only the schema check can refuse it."""
    index = mirror / "primary" / "index.json"
    index.write_bytes(b'{"schemaVersion": 1, "domainId": "primary", "exports": "none"}\n')
    sign_file(load_signing_key(keys / "mirror-key.pem"), index, "mirror/primary/")


ARTIFACT = "primary/exports/consensus/consensus.json"
CASES: list[tuple[str, Callable[[Path, Path], None], int, str]] = [
    ("artifact byte", lambda m, k: flip(m / ARTIFACT, 200), 11, f"mirror/{ARTIFACT}"),
    ("artifact jws byte", lambda m, k: flip(m / (ARTIFACT + ".jws"), -5), 10, f"mirror/{ARTIFACT}.jws"),
    ("artifact .sig", lambda m, k: flip(m / (ARTIFACT + ".sig"), 10), 10, f"mirror/{ARTIFACT}.sig"),
    ("index byte", lambda m, k: flip(m / "community" / "index.json", 40), 10, "mirror/community/index.json.jws"),
    ("index .sig byte", lambda m, k: flip(m / "primary" / "index.json.sig", 10), 10, "mirror/primary/index.json.sig"),
    ("artifact missing", lambda m, k: (m / "primary/exports/openvex/openvex.openvex.json").unlink(), 14,
     "mirror/primary/exports/openvex/openvex.openvex.json"),
    ("signed garbage index", resign_garbage_index, 14, "mirror/primary/index.json"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "code", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_tampering_is_refused(
    published: tuple[Path, Path], tmp_path: Path, change: Callable[[Path, Path], None], code: int, named: str
) -> None:
    root, keys = published
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    assert cli("verify", copy, "--key", keys / "mirror-key.pub").returncode == 0
    change(copy / "latest" / "mirror", keys)
    proc = cli("verify", copy, "--key", keys / "mirror-key.pub")
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert named in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rollback_is_refused_with_min_sequence(tmp_path: Path, published: tuple[Path, Path]) -> None:
    _, keys = published
    out = tmp_path / "root"
    assert export(keys, out, "--export-id", "s1").returncode == 0
    assert export(keys, out, "--export-id", "s2").returncode == 0
    pub = keys / "mirror-key.pub"
    assert cli("verify", out, "--key", pub, "--min-sequence", "2").returncode == 0
    # A mirror that has seen sequence 2 is handed the older export again.
    proc = cli("verify", out / "s1", "--key", pub, "--min-sequence", "2")
    assert proc.returncode == 13, proc.stderr
    assert "sequence 1 is older" in proc.stderr


def test_expired_index_is_refused(tmp_path: Path, published: tuple[Path, Path]) -> None:
    _, keys = published
    out = tmp_path / "root"
    proc = export(keys, out, "--generated-at", "2020-01-01T00:00:00Z", "--expires-in", "1d")
    assert proc.returncode == 0, proc.stderr
    verdict = cli("verify", out, "--key", keys / "mirror-key.pub")
    assert verdict.returncode == 12
    assert "expired at 2020-01-02T00:00:00Z" in verdict.stderr


def test_other_key_is_refused(tmp_path: Path, published: tuple[Path, Path]) -> None:
    root, _ = published
    other = tmp_path / "other"
    assert cli("keys", "generate", "--out", other).returncode == 0
    proc = cli("verify", root, "--key", other / "mirror-key.pub")
    assert proc.returncode == 10 and "mirror/" in proc.stderr
