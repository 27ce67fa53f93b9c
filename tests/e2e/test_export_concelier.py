"""``stella-mirror export concelier`` end to end: the real CLI in a subprocess, on the shared corpus and
on the built-in samples, checked by ``stella-mirror verify`` and by software we did not write
(openssl, Node's jose, Python's jwcrypto, jsonschema)."""

from __future__ import annotations

import base64
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

import clitools
from stella_mirror.concelier.model import interval_range

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus"
SAMPLES = REPO / "src" / "stella_mirror" / "samples" / "concelier"
SCHEMAS = REPO / "schema"
INTEROP = REPO / "tests" / "interop"
EXPORT_ID = "20261129T163000Z"
GENERATED_AT = "2026-11-29T16:30:00Z"
# The corpus export's domains, identity and lifetime (fixed, so two exports can be compared byte for byte).
CORPUS_ARGS = (
    "--domain",
    "primary",
    "--domain",
    "community=ecosystem:PyPI,Go",
    "--domain",
    "vendor=source:csaf",
    "--export-id",
    EXPORT_ID,
    "--generated-at",
    GENERATED_AT,
    "--expires-in",
    "36500d",
)

pytestmark = pytest.mark.e2e


def cli(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The real CLI (tests/clitools.py); with ``check``, a non-zero exit fails the test with its output."""
    proc = clitools.cli(*args)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args[:2]} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def export(out: Path, keys: Path, *sources: str, extra: tuple[str, ...] = (), check: bool = True) -> Any:
    args: list[str | Path] = ["export", "concelier", "--key", keys / "mirror-key.pem", "--out", out, "--json"]
    for s in sources:
        args += ["--source", s]
    proc = cli(*args, *extra, check=check)
    return (orjson.loads(proc.stdout) if proc.returncode == 0 else None), proc


def bundle(root: Path, domain: str = "primary") -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((root / "latest" / "mirror" / domain / "bundle.json").read_bytes())
    return data


def by_key(root: Path, domain: str = "primary") -> dict[str, Any]:
    return {a["advisoryKey"]: a for a in bundle(root, domain)["advisories"]}


def recount_sources(root: Path, domain: str) -> list[dict[str, Any]]:
    """A domain's manifest ``sources``, recomputed from its bundle: advisories per source, latest recordedAt."""
    stats: dict[str, list[Any]] = {}
    for adv in bundle(root, domain)["advisories"]:
        for source in {p["source"] for p in adv["provenance"]}:
            stats.setdefault(source, [0, None])[0] += 1
        for p in adv["provenance"]:
            slot = stats[p["source"]]
            if p["recordedAt"] and (slot[1] is None or p["recordedAt"] > slot[1]):
                slot[1] = p["recordedAt"]
    return [{"advisoryCount": n, "lastRecordedAt": last, "source": s} for s, (n, last) in sorted(stats.items())]


def manifest_sources(root: Path, domain: str) -> list[dict[str, Any]]:
    manifest = orjson.loads((root / "latest" / "mirror" / domain / "manifest.json").read_bytes())
    sources: list[dict[str, Any]] = manifest["sources"]
    return sources


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = orjson.loads((SCHEMAS / f"concelier-{name}.schema.json").read_bytes())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# --- the shared corpus --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    base = tmp_path_factory.mktemp("corpus-export")
    keys = base / "keys"
    cli("keys", "generate", "--out", keys)
    out = base / "root"
    summary, _ = export(
        out,
        keys,
        f"osv:{CORPUS / 'osv'}",
        f"csaf:{CORPUS / 'csaf'}",
        extra=CORPUS_ARGS,
    )
    return out, keys, summary


def test_corpus_counts(corpus_export: tuple[Path, Path, dict[str, Any]]) -> None:
    """The export's counts agree with the file system and with its own bundles (the corpus grows, so
    nothing here is pinned to a snapshot):

    - read = every OSV file + every CSAF document; skipped = the other files under csaf/ (.asc,
      .sha512, changes.csv, index.txt, ROLIE feeds, provider and aggregator metadata);
    - advisories = records - merges; the unfiltered domain holds every advisory, ``vendor``
      (source:csaf) every advisory with a CSAF provenance entry, ``community`` (ecosystem:PyPI,Go)
      every advisory with an affected package in one of those ecosystems.
    """
    out, _keys, s = corpus_export
    files = [p for p in CORPUS.joinpath("osv").rglob("*") if p.is_file()]
    csaf = [p for p in CORPUS.joinpath("csaf").rglob("*") if p.is_file()]
    csaf_docs = [p for p in csaf if p.suffix == ".json" and b'"csaf_version"' in p.read_bytes()]
    assert s["documentsRejected"] == 0
    assert s["documentsRead"] == len(files) + len(csaf_docs)
    assert s["documentsSkipped"] == len(csaf) - len(csaf_docs)
    assert s["records"] >= s["documentsRead"] and s["mergesMade"] > 0 and s["mergedAdvisories"] > 0
    assert s["advisories"] == s["records"] - s["mergesMade"]
    counts = {d["domainId"]: d["advisoryCount"] for d in s["domains"]}
    primary = bundle(out)["advisories"]
    assert counts["primary"] == len(primary) == s["advisories"]
    assert counts["vendor"] == sum(any(p["source"] == "csaf" for p in a["provenance"]) for a in primary)
    assert counts["community"] == sum(any(x["ecosystem"] in ("PyPI", "Go") for x in a["affected"]) for a in primary)
    for domain in ("vendor", "community"):
        assert len(bundle(out, domain)["advisories"]) == counts[domain]


def test_source_statistics_agree_with_the_bundles(corpus_export: tuple[Path, Path, dict[str, Any]]) -> None:
    """Per domain, the manifest's per-source counts and latest ``recordedAt`` are those of its bundle.

    The exporter tallies them per record while reading and corrects them for the records that merge
    (the filters here are monotone), so a recount from the published advisories checks that bookkeeping.
    """
    root = corpus_export[0]
    for domain in ("primary", "community", "vendor"):
        assert manifest_sources(root, domain) == recount_sources(root, domain), domain
    primary = {s["source"]: s["advisoryCount"] for s in manifest_sources(root, "primary")}
    vendor = {s["source"]: s["advisoryCount"] for s in manifest_sources(root, "vendor")}
    # every advisory with a CSAF record is in the source:csaf domain; some advisories have both sources
    assert set(primary) == {"csaf", "osv"} and primary["csaf"] == vendor["csaf"]
    advisories = len(bundle(root)["advisories"])
    assert max(primary.values()) < advisories < sum(primary.values())


def test_corpus_export_verifies(corpus_export: tuple[Path, Path, dict[str, Any]]) -> None:
    out, keys, s = corpus_export
    proc = cli("verify", out, "--key", keys / "mirror-key.pub")
    assert f"OK concelier export {EXPORT_ID} sequence 1: 3 domain(s) [community, primary, vendor]" in proc.stdout
    assert s["sequence"] == 1 and s["exportId"] == EXPORT_ID


def test_pypa_and_golang_records_sharing_a_cve_merge(corpus_export: tuple[Path, Path, dict[str, Any]]) -> None:
    adv = by_key(corpus_export[0])["CVE-2014-5277"]
    assert [p["documentId"] for p in adv["provenance"]] == ["GO-2022-0636", "PYSEC-2014-80"]
    assert adv["aliases"] == ["CVE-2014-5277", "GHSA-8w94-cf6g-c8mg", "GO-2022-0636", "PYSEC-2014-80"]
    assert [(a["ecosystem"], a["package"]) for a in adv["affected"]] == [
        ("Go", "github.com/docker/docker"),
        ("PyPI", "docker-py"),
    ]
    # Go's vulndb records zero times; the pypa record supplies the real ones.
    assert adv["modified"] == "2021-08-27T03:22:03.349219Z"


def test_csaf_and_osv_records_sharing_a_cve_merge(corpus_export: tuple[Path, Path, dict[str, Any]]) -> None:
    adv = by_key(corpus_export[0])["CVE-2023-29409"]
    # Other OSV databases (Bitnami's BIT-golang-2023-29409) may add their own record of the same CVE.
    assert {("csaf", "ICSA-24-046-11"), ("csaf", "ICSA-24-137-07"), ("osv", "GO-2023-1987")} <= {
        (p["source"], p["documentId"]) for p in adv["provenance"]
    }
    ecosystems = {a["ecosystem"] for a in adv["affected"]}
    assert "Go" in ecosystems and "Siemens" in ecosystems
    assert adv["title"]  # first non-empty by source priority (osv was given first)


def test_csaf_cpe_product_resolution(corpus_export: tuple[Path, Path, dict[str, Any]]) -> None:
    adv = by_key(corpus_export[0])["CVE-2022-27193"]
    assert [p["documentId"] for p in adv["provenance"]] == ["BSI-2022-0001"]
    assert adv["affected"] == [
        {
            "ecosystem": "CPE",
            "package": "cpe:/a:csaf-tools:cvrf-csaf-converter",
            "purl": None,
            "ranges": [interval_range("FIXED", {"introduced": None, "fixed": "1.0.0-rc2", "lastAffected": None})],
            "versions": ["1.0.0-alpha", "1.0.0-dev1", "1.0.0-dev2", "1.0.0-dev3", "1.0.0-rc1"],
            "severity": [],
            "ecosystemSpecific": [],
            "databaseSpecific": [],
        }
    ]


def test_yaml_unquoted_timestamps_come_out_as_rfc3339(corpus_export: tuple[Path, Path, dict[str, Any]]) -> None:
    # PYSEC-2023-121.yaml writes "modified: 2023-07-25T16:31:58.309647Z" without quotes.
    raw = (CORPUS / "osv" / "pypa" / "zstd" / "PYSEC-2023-121.yaml").read_text()
    assert "\nmodified: 2023-07-25T16:31:58.309647Z\n" in raw
    adv = next(a for a in bundle(corpus_export[0])["advisories"] if "PYSEC-2023-121" in a["aliases"])
    prov = next(p for p in adv["provenance"] if p["documentId"] == "PYSEC-2023-121")
    assert prov["recordedAt"] == "2023-07-25T16:31:58.309647Z"


def test_domain_filters(corpus_export: tuple[Path, Path, dict[str, Any]]) -> None:
    out = corpus_export[0]
    for adv in bundle(out, "community")["advisories"]:
        assert any(a["ecosystem"] in ("PyPI", "Go") for a in adv["affected"]), adv["advisoryKey"]
    for adv in bundle(out, "vendor")["advisories"]:
        assert any(p["source"] == "csaf" for p in adv["provenance"]), adv["advisoryKey"]


def test_corpus_output_matches_schemas(corpus_export: tuple[Path, Path, dict[str, Any]]) -> None:
    out = corpus_export[0] / "latest" / "mirror"
    validator("index").validate(orjson.loads((out / "index.json").read_bytes()))
    for domain in ("primary", "community", "vendor"):
        validator("manifest").validate(orjson.loads((out / domain / "manifest.json").read_bytes()))
    # The full 15 MB bundle takes a while in pure-Python jsonschema; the vendor one covers CSAF shapes,
    # and every fifth primary advisory covers the rest.
    validator("bundle").validate(bundle(corpus_export[0], "vendor"))
    primary = bundle(corpus_export[0])
    primary["advisories"] = primary["advisories"][::5]
    validator("bundle").validate(primary)


# --- independent signature checks -----------------------------------------------------------------


def test_openssl_verifies_the_sig_files(corpus_export: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    out, keys, _ = corpus_export
    for rel in ("mirror/index.json", "mirror/primary/bundle.json"):
        target = out / "latest" / rel
        der = tmp_path / "sig.der"
        der.write_bytes(base64.b64decode(target.with_name(target.name + ".sig").read_bytes()))
        proc = subprocess.run(
            [
                "openssl",
                "dgst",
                "-sha256",
                "-verify",
                str(keys / "mirror-key.pub"),
                "-signature",
                str(der),
                str(target),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0 and "Verified OK" in proc.stdout, proc.stderr
    # and openssl refuses a changed file
    changed = tmp_path / "changed.json"
    changed.write_bytes((out / "latest" / "mirror" / "index.json").read_bytes() + b" ")
    der.write_bytes(base64.b64decode((out / "latest" / "mirror" / "index.json.sig").read_bytes()))
    proc = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(keys / "mirror-key.pub"), "-signature", str(der), str(changed)],
        capture_output=True,
    )
    assert proc.returncode != 0


@pytest.fixture(scope="module")
def node_jose() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (CI installs it)")
    if not (INTEROP / "node_modules" / "jose").is_dir():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=INTEROP, check=True, timeout=300)
    return INTEROP / "verify-jws.mjs"


def test_node_jose_verifies_the_detached_jws(
    corpus_export: tuple[Path, Path, dict[str, Any]], node_jose: Path, tmp_path: Path
) -> None:
    out, keys, _ = corpus_export
    for rel in ("mirror/index.json", "mirror/primary/bundle.json", "mirror/vendor/bundle.json"):
        target = out / "latest" / rel
        proc = subprocess.run(
            ["node", str(node_jose), str(target), str(target) + ".jws", str(keys / "jwks.json")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        header = orjson.loads(proc.stdout)
        assert header["b64"] is False and header["crit"] == ["b64"] and header["alg"] == "ES256"
    changed = tmp_path / "index.json"
    changed.write_bytes(
        (out / "latest" / "mirror" / "index.json").read_bytes().replace(b'"sequence":1', b'"sequence":9')
    )
    proc = subprocess.run(
        [
            "node",
            str(node_jose),
            str(changed),
            str(out / "latest" / "mirror" / "index.json.jws"),
            str(keys / "jwks.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "signature verification failed" in proc.stderr


def test_jwcrypto_verifies_the_detached_jws(corpus_export: tuple[Path, Path, dict[str, Any]]) -> None:
    from jwcrypto import jwk, jws

    out, keys, _ = corpus_export
    key = jwk.JWK.from_pem((keys / "mirror-key.pub").read_bytes())
    for rel in ("mirror/index.json", "mirror/community/bundle.json"):
        target = out / "latest" / rel
        token = jws.JWS()
        token.deserialize((out / "latest" / (rel + ".jws")).read_text().strip())
        token.verify(key, detached_payload=target.read_bytes())
        assert token.jose_header["b64"] is False
        bad = jws.JWS()
        bad.deserialize((out / "latest" / (rel + ".jws")).read_text().strip())
        with pytest.raises(jws.InvalidJWSSignature):
            bad.verify(key, detached_payload=target.read_bytes() + b"\n")


# --- determinism ----------------------------------------------------------------------------------


def test_same_input_in_another_order_gives_identical_bytes(
    corpus_export: tuple[Path, Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Copy the corpus flat under shuffled file names (so enumeration order differs completely) and export again."""
    out, keys, _ = corpus_export
    rng = random.Random(20261129)
    for kind in ("osv", "csaf"):
        files = sorted(p for p in (CORPUS / kind).rglob("*") if p.is_file())
        rng.shuffle(files)
        dest = tmp_path / "shuffled" / kind
        dest.mkdir(parents=True)
        for i, src in enumerate(files):
            shutil.copyfile(src, dest / f"{len(files) - i:05d}-{src.name}")
    out2 = tmp_path / "root2"
    export(
        out2,
        keys,
        f"osv:{tmp_path / 'shuffled' / 'osv'}",
        f"csaf:{tmp_path / 'shuffled' / 'csaf'}",
        extra=(*CORPUS_ARGS, "--workers", "2"),
    )
    a, b = out / "latest" / "mirror", out2 / "latest" / "mirror"
    for rel in (
        "index.json",
        "primary/bundle.json",
        "community/bundle.json",
        "vendor/bundle.json",
        "primary/manifest.json",
    ):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


# --- the built-in samples: strictness, malformed input, delta, pruning ----------------------------


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    cli("keys", "generate", "--out", d)
    return d


def _copy_samples(dest: Path) -> tuple[Path, Path]:
    shutil.copytree(SAMPLES / "osv", dest / "osv")
    shutil.copytree(SAMPLES / "csaf", dest / "csaf")
    return dest / "osv", dest / "csaf"


def test_samples_export_and_schemas(tmp_path: Path, keys: Path) -> None:
    summary, _ = export(tmp_path / "root", keys, f"osv:{SAMPLES / 'osv'}", f"csaf:{SAMPLES / 'csaf'}")
    assert (summary["documentsRead"], summary["documentsSkipped"], summary["documentsRejected"]) == (10, 1, 0)
    # 8 OSV + 3 CSAF vulnerabilities; CVE-2099-10001 folds 3 records, CVE-2099-10002 folds 2.
    assert (summary["records"], summary["advisories"], summary["mergesMade"]) == (11, 8, 3)
    advs = by_key(tmp_path / "root")
    assert sorted(p["documentId"] for p in advs["CVE-2099-10002"]["provenance"]) == [
        "EXMPL-SA-2099-001",
        "GO-2099-0002",
    ]
    assert advs["GHSA-gggg-hhhh-jjjj"]["severity"] == "medium"  # no CVE: keyed by its id; MODERATE → medium
    assert advs["CVE-2099-10007"]["withdrawn"] == "2099-07-20T00:00:00Z"
    mirror = tmp_path / "root" / "latest" / "mirror"
    validator("index").validate(orjson.loads((mirror / "index.json").read_bytes()))
    validator("manifest").validate(orjson.loads((mirror / "primary" / "manifest.json").read_bytes()))
    validator("bundle").validate(bundle(tmp_path / "root"))
    cli("verify", tmp_path / "root", "--key", keys / "mirror-key.pub")


def test_two_exports_of_the_same_input_give_the_same_bundle(tmp_path: Path, keys: Path) -> None:
    """bundle.json carries no export id or time (schemaVersion 2): its bytes and digest depend on the input only,
    while the index and manifest still name each export."""
    sources = (f"osv:{SAMPLES / 'osv'}", f"csaf:{SAMPLES / 'csaf'}")
    export(tmp_path / "a", keys, *sources, extra=("--export-id", "one", "--generated-at", "2030-01-01T00:00:00Z"))
    export(tmp_path / "b", keys, *sources, extra=("--export-id", "two", "--generated-at", "2031-06-01T12:00:00Z"))
    a, b = (tmp_path / x / "latest" / "mirror" / "primary" for x in ("a", "b"))
    assert (a / "bundle.json").read_bytes() == (b / "bundle.json").read_bytes()
    doc = orjson.loads((a / "bundle.json").read_bytes())
    assert doc["schemaVersion"] == 2 and "exportId" not in doc and "generatedAt" not in doc
    ma, mb = (orjson.loads((d / "manifest.json").read_bytes()) for d in (a, b))
    assert (ma["exportId"], mb["exportId"]) == ("one", "two")
    assert ma["bundle"]["digest"] == mb["bundle"]["digest"]
    for root in (tmp_path / "a", tmp_path / "b"):
        cli("verify", root, "--key", keys / "mirror-key.pub")


def test_sources_are_named_after_their_folder_and_skipped_files_are_named(tmp_path: Path, keys: Path) -> None:
    """Two sources holding the same document each keep their provenance entry; dot files and other files are
    counted as skipped and named with the reason."""
    for name in ("pypa", "mirror-of-pypa"):
        shutil.copytree(SAMPLES / "osv", tmp_path / name)
    (tmp_path / "pypa" / ".DS_Store").write_bytes(b"\0\0")
    (tmp_path / "pypa" / "README.txt").write_text("not an advisory")
    summary, _ = export(tmp_path / "root", keys, f"osv:{tmp_path / 'pypa'}", f"osv:{tmp_path / 'mirror-of-pypa'}/")
    assert {(Path(s["path"]).name, s["reason"]) for s in summary["skipped"]} >= {
        (".DS_Store", "dot file (hidden): not read"),
        ("README.txt", "not an OSV .json/.yaml file"),
    }
    assert summary["documentsSkipped"] == len(summary["skipped"])
    for adv in bundle(tmp_path / "root")["advisories"]:
        by_source: dict[str, set[tuple[str, str]]] = {}
        for p in adv["provenance"]:
            by_source.setdefault(p["source"], set()).add((p["documentId"], p["digest"]))
        assert set(by_source) == {"pypa", "mirror-of-pypa"}
        assert by_source["pypa"] == by_source["mirror-of-pypa"]
    _, proc = export(
        tmp_path / "dup", keys, f"osv:{tmp_path / 'pypa'}", f"osv:pypa={tmp_path / 'mirror-of-pypa'}", check=False
    )
    assert proc.returncode == 3 and "two sources are named 'pypa'" in proc.stderr


def _malformed(dest: Path) -> dict[str, tuple[bytes, str]]:
    """File name → (bytes, expected fragment of the error)."""
    good = (SAMPLES / "osv" / "SMPL-2099-0005.json").read_bytes()
    doc = orjson.loads(good)
    wrong_type = {**doc, "aliases": "CVE-2099-10005"}
    no_id = {k: v for k, v in doc.items() if k != "id"}
    bad_range = orjson.loads(good)
    bad_range["affected"][0]["ranges"].append({"type": "FOO", "events": []})
    bomb = b'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n".encode() for i in range(8)
    )
    cases = {
        "truncated.json": (good[: len(good) // 2], "truncated.json: not valid JSON"),
        "wrong-type.json": (orjson.dumps(wrong_type), "wrong-type.json#/aliases: expected an array, got string"),
        "no-id.json": (orjson.dumps(no_id), "no-id.json#/id: required field is missing"),
        "bad-range.json": (
            orjson.dumps(bad_range),
            "bad-range.json#/affected/0/ranges/1/type: unknown range type 'FOO'",
        ),
        "bomb.yaml": (bomb, "bomb.yaml: YAML document uses more than 16 aliases"),
        "deep.json": (b"[" * 100_000 + b"]" * 100_000, "deep.json: not valid JSON"),
        "latin1.json": (good.replace(b"XML external", b"XML \xe9xternal"), "latin1.json: not valid JSON"),
    }
    for name, (data, _) in cases.items():
        (dest / name).write_bytes(data)
    return cases


def test_malformed_documents_are_rejected_and_listed(tmp_path: Path, keys: Path) -> None:
    osv_dir, csaf_dir = _copy_samples(tmp_path / "in")
    cases = _malformed(osv_dir)
    summary, proc = export(tmp_path / "root", keys, f"osv:{osv_dir}", f"csaf:{csaf_dir}")
    assert "Traceback" not in proc.stderr
    assert summary["documentsRejected"] == len(cases)
    assert summary["advisories"] == 8  # the good documents are all there
    messages = {Path(r["path"]).name: r["message"] for r in summary["rejected"]}
    for name, (_, fragment) in cases.items():
        assert fragment in messages[name], messages[name]
        assert str(osv_dir / name) in messages[name]  # the message names the file by its path
    # The human summary counts them and shows the first few errors.
    proc = cli(
        "export",
        "concelier",
        "--key",
        keys / "mirror-key.pem",
        "--out",
        tmp_path / "root2",
        "--source",
        f"osv:{osv_dir}",
    )
    assert f"documents: 8 read, 0 skipped, {len(cases)} rejected" in proc.stdout
    assert f"  rejected {osv_dir / 'bad-range.json'}#/affected/0/ranges/1/type: unknown range type 'FOO'" in proc.stdout
    assert f"… and {len(cases) - 5} more" in proc.stdout


def test_strict_rejection_publishes_nothing(tmp_path: Path, keys: Path) -> None:
    osv_dir, csaf_dir = _copy_samples(tmp_path / "in")
    root = tmp_path / "root"
    export(root, keys, f"osv:{osv_dir}", f"csaf:{csaf_dir}", extra=("--export-id", "first"))
    before = sorted(p.name for p in root.iterdir())
    (osv_dir / "bad-range.json").write_bytes(b'{"id": "X", "modified": "2099-01-01T00:00:00Z", "affected": [{')
    _, proc = export(
        root, keys, f"osv:{osv_dir}", f"csaf:{csaf_dir}", extra=("--strict", "--export-id", "second"), check=False
    )
    assert proc.returncode == 5, proc.stderr
    assert "export-rejected" in proc.stderr and "bad-range.json" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in root.iterdir()) == before  # no new export, no leftover staging
    assert os.readlink(root / "latest") == "first"


def test_delta_sequence_and_pruning(tmp_path: Path, keys: Path) -> None:
    osv_dir, csaf_dir = _copy_samples(tmp_path / "in")
    root = tmp_path / "root"
    srcs = (f"osv:{osv_dir}", f"csaf:{csaf_dir}")
    first, _ = export(root, keys, *srcs, extra=("--export-id", "e1", "--keep", "2"))
    assert first["domains"][0]["delta"] == {"baseExportId": None, "added": 0, "changed": 0, "removed": 0}
    # change one advisory, remove one, add one
    changed = orjson.loads((osv_dir / "SMPL-2099-0005.json").read_bytes())
    changed["summary"] = "XXE in acme-xml (updated)"
    (osv_dir / "SMPL-2099-0005.json").write_bytes(orjson.dumps(changed))
    (osv_dir / "SMPL-2099-0008.json").unlink()
    (osv_dir / "SMPL-2099-0009.json").write_bytes(
        orjson.dumps({"id": "SMPL-2099-0009", "modified": "2099-09-09T00:00:00Z", "aliases": ["CVE-2099-10009"]})
    )
    second, _ = export(root, keys, *srcs, extra=("--export-id", "e2", "--keep", "2"))
    assert second["sequence"] == 2
    manifest = orjson.loads((root / "latest" / "mirror" / "primary" / "manifest.json").read_bytes())
    assert manifest["delta"] == {
        "baseExportId": "e1",
        "added": ["CVE-2099-10009"],
        "changed": ["CVE-2099-10005"],
        "removed": ["CVE-2099-10008"],
    }
    # an unchanged re-export reports no changes, and --keep 2 prunes the oldest
    third, _ = export(root, keys, *srcs, extra=("--export-id", "e3", "--keep", "2"))
    manifest = orjson.loads((root / "latest" / "mirror" / "primary" / "manifest.json").read_bytes())
    assert manifest["delta"] == {"baseExportId": "e2", "added": [], "changed": [], "removed": []}
    assert third["sequence"] == 3
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == ["e2", "e3", "latest"]
    cli("verify", root, "--key", keys / "mirror-key.pub", "--min-sequence", "3")


def test_config_file_with_relative_paths(tmp_path: Path, keys: Path) -> None:
    _copy_samples(tmp_path / "cfg")
    (tmp_path / "cfg" / "export.yaml").write_text(
        "sources:\n"
        "  - {kind: osv, path: osv}\n"
        "  - {kind: csaf, path: csaf, name: example-psirt}\n"
        "domains:\n"
        "  - {id: all, displayName: Everything}\n"
        "  - {id: vendor, filter: 'source:csaf'}\n"
        "  - {id: py, filter: 'ecosystem:PyPI;severity:high,critical'}\n"
        "expiresIn: 2d\n"
        "keep: 1\n"
    )
    proc = cli(
        "export",
        "concelier",
        "--config",
        tmp_path / "cfg" / "export.yaml",
        "--key",
        keys / "mirror-key.pem",
        "--out",
        tmp_path / "root",
        "--generated-at",
        "2099-12-01T00:00:00Z",
    )
    assert "domain vendor: 3 advisories" in proc.stdout
    assert "domain py: 1 advisories" in proc.stdout  # CVE-2099-10001 (high); example-auth is medium
    assert "export 20991201T000000Z sequence 1 expires 2099-12-03T00:00:00Z" in proc.stdout
    index = orjson.loads((tmp_path / "root" / "latest" / "mirror" / "index.json").read_bytes())
    assert [d["displayName"] for d in index["domains"]] == ["Everything", "Py", "Vendor"]
    vendor = next(d for d in index["domains"] if d["domainId"] == "vendor")
    assert {s["source"] for s in vendor["sources"]} == {"example-psirt", "osv"}
    # A severity filter is not monotone (a merge may change the severity): counted per advisory instead.
    for domain in ("all", "py", "vendor"):
        assert manifest_sources(tmp_path / "root", domain) == recount_sources(tmp_path / "root", domain), domain


def test_bad_configuration_is_a_clear_error(tmp_path: Path, keys: Path) -> None:
    proc = cli(
        "export",
        "concelier",
        "--key",
        keys / "mirror-key.pem",
        "--out",
        tmp_path / "r",
        "--source",
        "rss:/nowhere",
        check=False,
    )
    assert proc.returncode == 3 and "--source" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli(
        "export",
        "concelier",
        "--key",
        keys / "mirror-key.pem",
        "--out",
        tmp_path / "r",
        "--source",
        f"osv:{SAMPLES / 'osv'}",
        "--domain",
        "x=colour:red",
        check=False,
    )
    assert proc.returncode == 3 and "colour:red" in proc.stderr
