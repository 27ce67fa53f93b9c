"""The publication plan: which files, with which digests, in which order (no network)."""

from __future__ import annotations

from pathlib import Path

from stella_mirror.bundle import store
from stella_mirror.bundle.keyfiles import load_trusted_keys
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.timeutil import utcnow
from stella_mirror.upload.plan import DOMAIN_INDEX, INDEX, MANIFEST, PAYLOAD, Plan, file_sha256, plan_export
from synctools import files
from treebuilder import advisory, publish_concelier, publish_excititor


def plan_of(export_dir: Path, keydir: Path) -> Plan:
    verdict = store.verify_export_dir(export_dir, load_trusted_keys([keydir / "mirror-key.pub"]), utcnow())
    return plan_export(export_dir, verdict)


def test_concelier_order_and_digests(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    e1 = publish_concelier(tmp_path / "root", signing_key, {d: [advisory(f"CVE-{d}-1")] for d in "ab"}, "e1")
    (e1 / "mirror" / "a" / "bundle.json.zst").write_bytes(b"not covered by any signature")
    plan = plan_of(e1, keydir)
    rels = [i.rel for i in plan.items]
    assert set(rels) == set(files(e1)) - {"mirror/a/bundle.json.zst"}, "only what the signed indexes cover"
    assert [i.phase for i in plan.items] == sorted(i.phase for i in plan.items)
    phase = {i.rel: i.phase for i in plan.items}
    assert phase["mirror/a/bundle.json"] == phase["mirror/a/bundle.json.jws"] == PAYLOAD
    assert phase["mirror/a/manifest.json"] == MANIFEST
    assert phase["mirror/a/index.json"] == phase["mirror/a/index.json.sig"] == DOMAIN_INDEX
    assert phase["mirror/index.json"] == phase["mirror/index.json.jws"] == INDEX
    assert all(i.sha256 == file_sha256(e1 / i.rel) and i.size == (e1 / i.rel).stat().st_size for i in plan.items)
    waves = [[i.rel for i in wave] for wave in plan.waves()]
    assert waves[-1] == ["mirror/index.json"], "the index alone, last"
    assert sorted(waves[-2]) == ["mirror/index.json.jws", "mirror/index.json.sig"], "its signatures just before"
    assert sum(len(w) for w in waves) == len(rels)


def test_excititor_domain_indexes_last(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    x1 = publish_excititor(tmp_path / "root", signing_key, {d: {"k": [{"d": d}]} for d in "ab"}, "x1")
    plan = plan_of(x1, keydir)
    assert {i.rel for i in plan.items} == set(files(x1))
    waves = [[i.rel for i in wave] for wave in plan.waves()]
    assert sorted(waves[-1]) == ["mirror/a/index.json", "mirror/b/index.json"]
    assert all(rel.endswith((".jws", ".sig")) for rel in waves[-2])
    assert all(i.phase == PAYLOAD for wave in plan.waves()[:-2] for i in wave)


def test_targets_are_what_the_sync_reads(tmp_path: Path, keydir: Path) -> None:
    """--to is classified by the sync's own source for the URL; what no sync source writes is refused (exit 3)."""
    import pytest

    from stella_mirror.errors import ConfigError
    from stella_mirror.sync.config import SourceOptions
    from stella_mirror.upload.directory import DirectoryTarget
    from stella_mirror.upload.rsync import RsyncTarget
    from stella_mirror.upload.run import open_target

    keys = load_trusted_keys([keydir / "mirror-key.pub"])
    opts = SourceOptions()
    assert isinstance(open_target("mirror-share:/srv/exports/concelier", opts, keys), RsyncTarget)
    assert isinstance(open_target("rsync://host/module/concelier", opts, keys), RsyncTarget)
    target = open_target(f"file://{tmp_path}/root", opts, keys)
    assert isinstance(target, DirectoryTarget) and target.root.path == tmp_path / "root"
    for bad in ("https://mirror.example/concelier", "ftp://host/x", "rsync://user:pw@host/module"):
        with pytest.raises(ConfigError) as err:
            open_target(bad, opts, keys)
        assert err.value.key_path == "--to"
        assert "pw" not in str(err.value)
