"""`stella-mirror pull` against a real `serve`: N → N+1 with a few changed records moves a small fraction of
the changed bundle (counted in the server's access log), from N and from N−2; corrupt served chunks are refused
and fall back to a full download; `.zst` variants are listed, fetched and checked; Excititor domains too."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clitools import cli, flip
from serverproc import ServerProc, start_server
from stella_mirror.bundle.keyfiles import generate_keypair
from stella_mirror.bundle.signing import SigningKey
from treebuilder import advisory, publish_concelier, publish_excititor

pytestmark = pytest.mark.e2e


def _advisories(
    n: int,
    edits: dict[int, str] | None = None,
    drop: set[int] = frozenset(),  # type: ignore[assignment]
    add: int = 0,
) -> list[dict[str, Any]]:
    rnd = random.Random(7)
    out = []
    for i in range(n + add):
        a = advisory(f"CVE-2024-{i:05d}", package=f"pkg{i % 97}")
        words = rnd.choices(["overflow", "parser", "crash", "remote", "denial", "heap", "token", "auth"], k=60)
        a["description"] = " ".join(words)
        if i >= n:
            a["description"] = "added in this export " + a["description"]
        if edits and i in edits:
            a["summary"] = edits[i]
        if i not in drop:
            out.append(a)
    return out


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, SigningKey, ServerProc]]:
    key = generate_keypair(tmp_path / "keys")
    root = tmp_path / "concelier"
    publish_concelier(root, key, {"primary": _advisories(2500), "small": _advisories(3)}, "e1", keep=5)
    sp = start_server(
        tmp_path / "srv",
        env={
            "CONCELIER__MIRROR__EXPORTROOT": str(root),
            "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
            "CONCELIER__MIRROR__DOMAINS__1__ID": "small",
            "EXCITITOR__MIRROR__ENABLED": "false",
        },
        ready_path="/readyz",
    )
    try:
        yield root, key, sp
    finally:
        sp.stop()


def _served(sp: ServerProc, export_id: str) -> None:
    """Wait until the server's index names ``export_id`` (it notices a switched ``latest`` within its TTL)."""
    deadline = time.monotonic() + 15
    while json.loads(httpx.get(sp.url("/concelier/exports/index.json")).content)["exportId"] != export_id:
        assert time.monotonic() < deadline, "the server never served " + export_id
        time.sleep(0.2)


def _access_bytes(sp: ServerProc, since: int) -> tuple[int, int, list[dict[str, Any]]]:
    """Body bytes and requests the server logged after line ``since`` (the log is flushed every 0.5 s)."""
    time.sleep(1.2)
    lines = [json.loads(x) for x in sp.access_lines()[since:]]
    return sum(int(x.get("bytes") or 0) for x in lines), len(lines), lines


def _pull(sp: ServerProc, out: Path, key: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    res = cli(
        "pull", f"{sp.base}/concelier/exports", "--domain", "primary", "--out", out, "--key", key, "--json", *extra
    )
    last = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "{}"
    return res.returncode, json.loads(last) if last.startswith("{") else {}, res.stdout + res.stderr


def _bundle(export: Path) -> Path:
    return export / "mirror" / "primary" / "bundle.json"


def test_pull_n_to_n1_fetches_a_small_fraction_and_verifies(
    mirror: tuple[Path, SigningKey, ServerProc], tmp_path: Path
) -> None:
    root, key, sp = mirror
    pub = tmp_path / "keys" / "mirror-key.pub"
    out = tmp_path / "consumer"
    # First pull: nothing local — the precompressed variant travels, and its uncompressed digest is checked.
    mark = len(sp.access_lines())
    code, first, text = _pull(sp, out, pub)
    assert code == 0, text
    assert first["payloads"] == {"mirror/primary/bundle.json": "compressed"}, first
    full_size = _bundle(root / "e1").stat().st_size
    manifest = json.loads((root / "e1" / "mirror" / "primary" / "manifest.json").read_bytes())
    zst = manifest["bundle"]["encodings"][0]
    assert zst["encoding"] == "zstd" and zst["path"] == "mirror/primary/bundle.json.zst"
    assert (root / "e1" / zst["path"]).stat().st_size == zst["sizeBytes"]
    served, _, lines = _access_bytes(sp, mark)
    assert any(x.get("encoding") == "zstd" and x["path"].endswith("bundle.json") for x in lines), lines
    assert served < 0.5 * full_size, (served, full_size)
    assert _bundle(out / "latest").read_bytes() == _bundle(root / "e1").read_bytes()

    # N+1: 4 records edited, 2 added, 1 removed, in a 2500-record bundle.
    edits = {10: "edited a", 900: "edited b", 1700: "edited c", 2400: "edited d"}
    publish_concelier(
        root, key, {"primary": _advisories(2500, edits, {1200}, add=2), "small": _advisories(3)}, "e2", keep=5
    )
    _served(sp, "e2")
    mark = len(sp.access_lines())
    code, second, text = _pull(sp, out, pub)
    assert code == 0, text
    assert second["payloads"] == {"mirror/primary/bundle.json": "delta"}, second
    served, requests, _ = _access_bytes(sp, mark)
    new_size = _bundle(root / "e2").stat().st_size
    print(f"N->N+1: served {served} bytes in {requests} requests for a {new_size}-byte bundle")
    assert served < 0.10 * new_size, (served, new_size)
    assert _bundle(out / "latest").read_bytes() == _bundle(root / "e2").read_bytes()
    assert cli("verify", out, "--key", pub).returncode == 0

    # Two more exports; the consumer still holds e1 and e2 and is two behind e4.
    publish_concelier(
        root,
        key,
        {"primary": _advisories(2500, {**edits, 5: "e3"}, {1200}, add=2), "small": _advisories(3)},
        "e3",
        keep=5,
    )
    publish_concelier(
        root,
        key,
        {"primary": _advisories(2500, {**edits, 5: "e3", 2000: "e4"}, {1200, 300}, add=3), "small": _advisories(3)},
        "e4",
        keep=5,
    )
    _served(sp, "e4")
    mark = len(sp.access_lines())
    code, third, text = _pull(sp, out, pub)
    assert code == 0, text
    assert third["payloads"] == {"mirror/primary/bundle.json": "delta"}, third
    served, _, _ = _access_bytes(sp, mark)
    assert served < 0.10 * _bundle(root / "e4").stat().st_size
    assert (out / "latest").resolve().name == "e4"
    # Pulling again changes nothing and fetches only the index.
    code, again, text = _pull(sp, out, pub)
    assert code == 0 and again["upToDate"] is True, text


def test_corrupt_chunks_are_refused_then_a_full_download_or_a_clean_failure(
    mirror: tuple[Path, SigningKey, ServerProc], tmp_path: Path
) -> None:
    root, key, sp = mirror
    pub = tmp_path / "keys" / "mirror-key.pub"
    out = tmp_path / "consumer"
    assert _pull(sp, out, pub)[0] == 0
    publish_concelier(
        root,
        key,
        {"primary": _advisories(2500, {10: "edited", 2000: "edited too"}), "small": _advisories(3)},
        "e2",
        keep=5,
    )
    _served(sp, "e2")
    # The served identity bytes are tampered where the consumer lacks them (an edited record's chunk);
    # the .zst variant is intact, so the fallback full download yields a verified copy.
    bundle = _bundle(root / "e2")
    offset = bundle.read_bytes().index(b"edited too")
    flip(bundle, offset)
    code, res, text = _pull(sp, out, pub)
    assert code == 0, text
    assert res["payloads"] == {"mirror/primary/bundle.json": "compressed"}, res
    assert "does not match the chunk table" in res["fallbacks"][0], res
    flip(bundle, offset)  # what the consumer holds is the signed bundle, not the tampered bytes
    assert _bundle(out / "latest").read_bytes() == bundle.read_bytes()

    # Now both representations are corrupt: a clean failure, and the last verified copy stays.
    publish_concelier(
        root,
        key,
        {"primary": _advisories(2500, {10: "third", 2000: "edited too"}), "small": _advisories(3)},
        "e3",
        keep=5,
    )
    _served(sp, "e3")
    e3 = _bundle(root / "e3")
    flip(e3, e3.read_bytes().index(b"third"))
    flip(e3.with_name("bundle.json.zst"), 100)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and ".partial" not in p.parts}
    code, _, text = _pull(sp, out, pub)
    assert code == 11, text
    assert "[digest]" in text
    assert (out / "latest").resolve().name == "e2"
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and ".partial" not in p.parts}
    assert after == before
    assert cli("verify", out, "--key", pub).returncode == 0


def test_an_older_index_is_a_rollback_and_a_wrong_key_a_signature_error(
    mirror: tuple[Path, SigningKey, ServerProc], tmp_path: Path
) -> None:
    _root, _key, sp = mirror
    pub = tmp_path / "keys" / "mirror-key.pub"
    out = tmp_path / "consumer"
    assert _pull(sp, out, pub)[0] == 0
    code, _, text = _pull(sp, out, pub, "--min-sequence", "5")
    assert code == 13, text
    # One directory holds one domain: another one is refused before anything is fetched.
    res = cli("pull", f"{sp.base}/concelier/exports", "--domain", "small", "--out", out, "--key", pub)
    assert res.returncode == 3 and "holds domain(s) primary" in res.stderr, res.stderr
    other = tmp_path / "other"
    generate_keypair(other)
    code, _, text = _pull(sp, tmp_path / "fresh", other / "mirror-key.pub")
    assert code == 10, text
    assert not (tmp_path / "fresh" / "latest").exists()


def test_pull_an_excititor_domain_with_a_delta(tmp_path: Path) -> None:
    key = generate_keypair(tmp_path / "keys")
    pub = tmp_path / "keys" / "mirror-key.pub"
    root = tmp_path / "excititor"

    def records(tag: str) -> list[dict[str, Any]]:
        recs = [
            {"id": f"VEX-{i:05d}", "status": "not_affected", "text": " ".join(["justification"] * 20) + str(i)}
            for i in range(3000)
        ]
        recs[1234]["status"] = tag
        return recs

    static = [{"id": f"S-{i}", "status": "fixed"} for i in range(50)]  # unchanged between the two exports
    publish_excititor(root, key, {"vex": {"consensus": records("affected"), "static": static}}, "x1")
    sp = start_server(
        tmp_path / "srv",
        env={
            "EXCITITOR__MIRROR__EXPORTROOT": str(root),
            "EXCITITOR__MIRROR__DOMAINS__0__ID": "vex",
            "CONCELIER__MIRROR__ENABLED": "false",
        },
        ready_path="/readyz",
    )
    try:
        out = tmp_path / "consumer"
        url = f"{sp.base}/excititor/mirror"
        res = cli("pull", url, "--domain", "vex", "--out", out, "--key", pub, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        assert json.loads(res.stdout)["payloads"] == {
            "mirror/vex/exports/consensus/consensus.json": "compressed",
            "mirror/vex/exports/static/static.json": "compressed",
        }
        res = cli("verify", url, "--key", pub)
        assert res.returncode == 0 and "1 domain(s) [vex]" in res.stdout, res.stdout + res.stderr
        publish_excititor(root, key, {"vex": {"consensus": records("fixed"), "static": static}}, "x2")
        deadline = time.monotonic() + 15
        while json.loads(httpx.get(sp.url("/excititor/mirror/vex/index")).content)["exportId"] != "x2":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        res = cli("pull", url, "--domain", "vex", "--out", out, "--key", pub, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        outcome = json.loads(res.stdout)
        # The changed artifact by delta; the unchanged one by its digest from the kept copy: 0 payload bytes.
        assert outcome["payloads"] == {
            "mirror/vex/exports/consensus/consensus.json": "delta",
            "mirror/vex/exports/static/static.json": "reused",
        }, outcome
        size = (root / "x2" / "mirror/vex/exports/consensus/consensus.json").stat().st_size
        assert outcome["bytes"] < 0.1 * size, (outcome, size)
        assert cli("verify", out, "--key", pub).returncode == 0
    finally:
        sp.stop()


def test_an_interrupted_download_resumes_with_range(
    mirror: tuple[Path, SigningKey, ServerProc], tmp_path: Path
) -> None:
    root, _key, sp = mirror
    pub = tmp_path / "keys" / "mirror-key.pub"
    out = tmp_path / "consumer"
    manifest = json.loads((root / "e1" / "mirror" / "primary" / "manifest.json").read_bytes())
    zst = manifest["bundle"]["encodings"][0]
    data = (root / "e1" / zst["path"]).read_bytes()
    half = len(data) // 2
    partial = out / ".partial" / f"{zst['digest'].removeprefix('sha256:')}.zstd"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:half])  # what a killed pull left
    mark = len(sp.access_lines())
    code, res, text = _pull(sp, out, pub)
    assert code == 0, text
    assert res["payloads"] == {"mirror/primary/bundle.json": "compressed"}
    _, _, lines = _access_bytes(sp, mark)
    (bundle_get,) = [x for x in lines if x["path"].endswith("/bundle.json")]
    assert bundle_get["status"] == 206 and bundle_get["range"] == f"bytes={half}-", bundle_get
    assert bundle_get["bytes"] == len(data) - half
    assert _bundle(out / "latest").read_bytes() == _bundle(root / "e1").read_bytes()
    assert not partial.exists()
