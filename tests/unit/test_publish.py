"""Atomic publish: a failed export changes nothing; the lock keeps writers apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from stella_mirror.bundle.signing import SigningKey
from stella_mirror.errors import ConfigError, LockedError
from stella_mirror.publish import ExportRoot, check_export_id
from treebuilder import advisory, publish_concelier


def test_failed_staging_leaves_latest_untouched(tmp_path: Path, signing_key: SigningKey) -> None:
    (tmp_path / "operator-notes").mkdir()  # not an export: pruning must leave it alone
    publish_concelier(tmp_path, signing_key, {"p": [advisory("CVE-1")]}, "e1")
    root = ExportRoot(tmp_path)
    with pytest.raises(RuntimeError), root.locked(), root.staging("e2") as stage:
        (stage / "partial").write_text("half")
        raise RuntimeError("killed mid-export")
    assert root.active_id() == "e1"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "e1",
        "keys",
        "latest",
        "operator-notes",
    ]
    assert not list(tmp_path.glob(".staging-*"))


def test_lock_is_exclusive(tmp_path: Path) -> None:
    root = ExportRoot(tmp_path)
    with root.locked(), pytest.raises(LockedError, match="lock held"), ExportRoot(tmp_path).locked():
        pass


def test_existing_export_id_is_refused(tmp_path: Path, signing_key: SigningKey) -> None:
    publish_concelier(tmp_path, signing_key, {"p": [advisory("CVE-1")]}, "e1")
    with pytest.raises(ConfigError, match="already exists"), ExportRoot(tmp_path).staging("e1"):
        pass


@pytest.mark.parametrize("bad", ["", "latest", "../x", "a/b", ".hidden", "x" * 200])
def test_bad_export_ids(bad: str) -> None:
    with pytest.raises(ConfigError, match="export id"):
        check_export_id(bad)
