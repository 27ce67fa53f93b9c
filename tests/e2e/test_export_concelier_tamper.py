"""Tampering with a published Concelier export: ``stella-mirror verify`` refuses each change with the
exit code of README's table and a message naming the file."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from clitools import cli, flip

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "src" / "stella_mirror" / "samples" / "concelier"

pytestmark = pytest.mark.e2e



@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("tamper")
    keys = base / "keys"
    assert cli("keys", "generate", "--out", keys).returncode == 0
    proc = cli(
        "export",
        "concelier",
        "--key",
        keys / "mirror-key.pem",
        "--out",
        base / "root",
        "--source",
        f"osv:{SAMPLES / 'osv'}",
        "--source",
        f"csaf:{SAMPLES / 'csaf'}",
        "--domain",
        "primary",
        "--domain",
        "community=ecosystem:PyPI,Go",
        "--export-id",
        "e1",
    )
    assert proc.returncode == 0, proc.stderr
    return base / "root", keys



def swap_domain_bundle(mirror: Path) -> None:
    for name in ("bundle.json", "bundle.json.jws", "bundle.json.sig"):
        shutil.copyfile(mirror / "community" / name, mirror / "primary" / name)


CASES: list[tuple[str, Callable[[Path], None], int, str]] = [
    ("bundle byte", lambda m: flip(m / "primary" / "bundle.json", 100), 11, "mirror/primary/bundle.json"),
    ("jws byte", lambda m: flip(m / "primary" / "bundle.json.jws", -5), 10, "mirror/primary/bundle.json.jws"),
    ("index byte", lambda m: flip(m / "index.json", 50), 10, "mirror/index.json"),
    ("manifest byte", lambda m: flip(m / "primary" / "manifest.json", 30), 11, "mirror/primary/manifest.json"),
    ("other domain's bundle", swap_domain_bundle, 11, "mirror/primary/bundle.json"),
    ("bundle missing", lambda m: (m / "primary" / "bundle.json").unlink(), 14, "mirror/primary/bundle.json"),
]


@pytest.mark.parametrize(("change", "code", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_tampering_is_refused(
    published: tuple[Path, Path], tmp_path: Path, change: Callable[[Path], None], code: int, named: str
) -> None:
    root, keys = published
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    assert cli("verify", copy, "--key", keys / "mirror-key.pub").returncode == 0
    change(copy / "latest" / "mirror")
    proc = cli("verify", copy, "--key", keys / "mirror-key.pub")
    assert proc.returncode == code, proc.stderr
    assert named in proc.stderr
    assert "Traceback" not in proc.stderr


def test_min_sequence_above_the_index_is_a_rollback(published: tuple[Path, Path]) -> None:
    root, keys = published
    assert cli("verify", root, "--key", keys / "mirror-key.pub", "--min-sequence", "1").returncode == 0
    proc = cli("verify", root, "--key", keys / "mirror-key.pub", "--min-sequence", "2")
    assert proc.returncode == 13 and "mirror/index.json" in proc.stderr


def test_expired_index(tmp_path: Path, published: tuple[Path, Path]) -> None:
    _, keys = published
    proc = cli(
        "export",
        "concelier",
        "--key",
        keys / "mirror-key.pem",
        "--out",
        tmp_path / "old",
        "--source",
        f"osv:{SAMPLES / 'osv'}",
        "--generated-at",
        "2020-01-01T00:00:00Z",
        "--expires-in",
        "1h",
    )
    assert proc.returncode == 0, proc.stderr
    proc = cli("verify", tmp_path / "old", "--key", keys / "mirror-key.pub")
    assert proc.returncode == 12 and "mirror/index.json" in proc.stderr and "2020-01-01T01:00:00Z" in proc.stderr


def test_a_different_key_is_a_signature_error(tmp_path: Path, published: tuple[Path, Path]) -> None:
    root, _ = published
    assert cli("keys", "generate", "--out", tmp_path / "other").returncode == 0
    proc = cli("verify", root, "--key", tmp_path / "other" / "mirror-key.pub")
    assert proc.returncode == 10 and "mirror/index.json" in proc.stderr
