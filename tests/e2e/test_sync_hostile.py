"""Hostile upstreams, for every kind of source: a forged index (a real export copied, its ``exportId`` edited to
name a kept export, the served one, an operator's directory or a plain file in the root, its ``sequence`` raised;
the signatures are the original ones) — and a forged offline kit whose own ``kit.json`` digests match the forged
files. Each run fails as a signature failure (exit 10, history and status say ``signature``) and the root — every
file's SHA-256, every directory and link — is exactly what it was before (only the sync's own status file
records the attempt)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from rsyncproc import rsync_daemon
from s3proc import S3Endpoint
from serverproc import running
from stella_mirror.bundle import canonical
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.sync.status import STATUS_FILE, read_status
from synctools import history, run_cli, sync_args
from treebuilder import advisory, publish_concelier

pytestmark = pytest.mark.e2e
CLAIMS = ["e1", "e2", "backup", "notes.txt"]
"""A kept export, the served export, an operator's directory, a plain file in the root."""


def root_listing(root: Path) -> dict[str, str]:
    """Every entry under ``root``: files by SHA-256, links by target, directories (the status file aside)."""
    out = {}
    for dirpath, dirs, names in os.walk(root):
        for name in dirs + names:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel == STATUS_FILE:
                continue
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def forge(export_dir: Path, out: Path, export_id: str, sequence: int = 3) -> Path:
    """A copy of ``export_dir`` whose index claims ``export_id`` and ``sequence``, under its original signatures."""
    shutil.copytree(export_dir, out)
    index = out / "mirror" / "index.json"
    doc = orjson.loads(index.read_bytes())
    index.write_bytes(canonical.dumps({**doc, "exportId": export_id, "sequence": sequence}))
    return out


def forged_kit(export_dir: Path, out: Path) -> Path:
    """An offline kit of ``export_dir`` with a ``kit.json`` of its own: every digest matches the forged files."""
    members = {
        f"export/{p.relative_to(export_dir).as_posix()}": p.read_bytes()
        for p in sorted(export_dir.rglob("*"))
        if p.is_file()
    }
    index = orjson.loads(members["export/mirror/index.json"])
    manifest = {
        "schemaVersion": 1,
        "kind": "concelier",
        "exportId": index["exportId"],
        "sequence": index["sequence"],
        "createdAt": index["generatedAt"],
        "keyIds": [],
        "files": [
            {"path": n, "sizeBytes": len(d), "digest": "sha256:" + hashlib.sha256(d).hexdigest()}
            for n, d in members.items()
        ],
    }
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in {"kit.json": orjson.dumps(manifest), **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


@contextmanager
def downstream(tmp_path: Path, signing_key: SigningKey, keydir: Path) -> Iterator[tuple[Path, Path, Path, Path]]:
    """Upstream e1, e2, e3; a downstream root serving e2 and keeping e1, beside an operator's ``backup/`` and
    ``notes.txt``. Yields (upstream e3 export dir, dest, state dir, key)."""
    up, dest, state, key = tmp_path / "up", tmp_path / "dest", tmp_path / "state", keydir / "mirror-key.pub"
    for n in (1, 2):
        publish_concelier(up, signing_key, {"primary": [advisory(f"CVE-{n}")]}, f"e{n}")
        assert run_cli(*sync_args(str(up), dest, "concelier", key, state)).returncode == 0
    e3 = publish_concelier(up, signing_key, {"primary": [advisory("CVE-3")]}, "e3")
    (dest / "backup" / "mirror").mkdir(parents=True)
    (dest / "backup" / "mirror" / "keep-me.json").write_text('{"operator": true}\n')
    (dest / "notes.txt").write_text("an operator's notes\n")
    assert os.readlink(dest / "latest") == "e2" and (dest / "e1").is_dir()
    yield e3, dest, state, key


def assert_refused(res_code: int, stderr: str, dest: Path, state: Path, before: dict[str, str], claim: str) -> None:
    assert res_code == 10, f"{claim}: {stderr}"
    assert root_listing(dest) == before, f"{claim}: the root changed"
    run = history(state)[0]
    assert run["outcome"] == "signature", claim
    status = read_status(dest)
    assert status is not None and status.last_outcome == "signature" and status.export_id == "e2"


def test_forged_index_from_a_directory(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    with downstream(tmp_path, signing_key, keydir) as (e3, dest, state, key):
        before = root_listing(dest)
        for claim in CLAIMS:
            forged = forge(e3, tmp_path / f"forged-{claim}", claim)
            res = run_cli(*sync_args(f"file://{forged}", dest, "concelier", key, state))
            assert_refused(res.returncode, res.stderr, dest, state, before, claim)
            assert "[signature]" in res.stderr and "rollback" not in res.stderr
        # Twice more, as the attack repeats it: the next run's clean-up removes nothing either.
        for _ in range(2):
            res = run_cli(*sync_args(f"file://{tmp_path / 'forged-e1'}", dest, "concelier", key, state))
            assert_refused(res.returncode, res.stderr, dest, state, before, "e1 again")
        assert run_cli(*sync_args(f"file://{e3}", dest, "concelier", key, state)).returncode == 0
        assert (dest / "backup" / "mirror" / "keep-me.json").is_file() and (dest / "notes.txt").is_file()


def test_forged_index_from_s3(tmp_path: Path, keydir: Path, signing_key: SigningKey, s3_endpoint: S3Endpoint) -> None:
    s3_endpoint.aws("s3", "mb", "s3://hostile")
    with downstream(tmp_path, signing_key, keydir) as (e3, dest, state, key):
        before = root_listing(dest)
        for claim in CLAIMS:
            forged = forge(e3, tmp_path / f"forged-{claim}", claim)
            s3_endpoint.aws("s3", "rm", "s3://hostile/c", "--recursive", "--only-show-errors")
            s3_endpoint.aws("s3", "cp", forged, "s3://hostile/c", "--recursive", "--only-show-errors")
            res = run_cli(*sync_args("s3://hostile/c", dest, "concelier", key, state), env=s3_endpoint.env())
            assert_refused(res.returncode, res.stderr, dest, state, before, claim)


def test_forged_index_from_rsync(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    with downstream(tmp_path, signing_key, keydir) as (e3, dest, state, key):
        before = root_listing(dest)
        module = tmp_path / "module"
        with rsync_daemon(tmp_path / "rsyncd", module) as daemon:
            for claim in CLAIMS:
                forge(e3, module / claim, claim)
                res = run_cli(*sync_args(f"{daemon.url}/{claim}", dest, "concelier", key, state))
                assert_refused(res.returncode, res.stderr, dest, state, before, claim)


def test_forged_index_from_an_https_upstream(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    with downstream(tmp_path, signing_key, keydir) as (e3, dest, state, key):
        before = root_listing(dest)
        for claim in CLAIMS:
            upstream_root = tmp_path / f"upstream-{claim}"
            upstream_root.mkdir()
            forge(e3, upstream_root / "e3", claim)
            (upstream_root / "latest").symlink_to("e3")
            env = {
                "CONCELIER__MIRROR__EXPORTROOT": str(upstream_root),
                "EXCITITOR__MIRROR__ENABLED": "false",
                "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
            }
            with running(tmp_path / f"srv-{claim}", env=env) as up:
                res = run_cli(*sync_args(up.base, dest, "concelier", key, state))
            assert_refused(res.returncode, res.stderr, dest, state, before, claim)


def test_forged_offline_kit(tmp_path: Path, keydir: Path, signing_key: SigningKey) -> None:
    with downstream(tmp_path, signing_key, keydir) as (e3, dest, state, key):
        before = root_listing(dest)
        for claim in CLAIMS:
            kit = forged_kit(forge(e3, tmp_path / f"forged-{claim}", claim), tmp_path / f"{claim}.tar")
            res = run_cli(*sync_args(str(kit), dest, "concelier", key, state))
            assert_refused(res.returncode, res.stderr, dest, state, before, claim)


def test_a_non_canonical_object_key_is_refused_naming_it(
    tmp_path: Path, keydir: Path, signing_key: SigningKey, s3_endpoint: S3Endpoint
) -> None:
    """``mirror//index.json`` beside a real export would pass for an Excititor domain index (the domain ""):
    the listing is refused, naming the key, rather than normalised."""
    s3_endpoint.aws("s3", "mb", "s3://odd")
    e1 = publish_concelier(tmp_path / "up", signing_key, {"primary": [advisory("CVE-1")]}, "e1")
    s3_endpoint.aws("s3", "cp", e1, "s3://odd/x", "--recursive", "--only-show-errors")
    s3_endpoint.aws(
        "s3api",
        "put-object",
        "--bucket",
        "odd",
        "--key",
        "x/mirror//index.json",
        "--body",
        e1 / "mirror" / "index.json",
    )
    res = run_cli(
        *sync_args("s3://odd/x", tmp_path / "dest", "excititor", keydir / "mirror-key.pub", tmp_path / "state"),
        env=s3_endpoint.env(),
    )
    assert res.returncode == 4 and "'x/mirror//index.json' is not a canonical path" in res.stderr, res.stderr
    assert not (tmp_path / "dest" / "latest").exists()
