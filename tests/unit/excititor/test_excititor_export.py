"""Excititor export: sample and corpus exports, formats against schemas, round trip, strict, publish."""

from __future__ import annotations

import collections
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from vexhelpers import write_json

from stella_mirror.bundle import canonical, store
from stella_mirror.bundle.signing import SigningKey, TrustedKeys
from stella_mirror.errors import ExportRejectedError
from stella_mirror.excititor.config import load_config, parse_config
from stella_mirror.excititor.export import ExportSummary, export_samples, product_iri, run_export, samples_config
from stella_mirror.excititor.providers import NOT_VEX
from stella_mirror.excititor.sources import openvex
from stella_mirror.excititor.sources.base import ReadContext
from stella_mirror.publish import ExportRoot

REPO = Path(__file__).resolve().parents[3]
SCHEMAS = REPO / "schema"
HERE = Path(__file__).parent
NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)


def _validator(path: Path) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads(path.read_bytes()), format_checker=FormatChecker())


def _valid(validator: Draft202012Validator, doc: Any) -> None:
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def _valid_openvex(doc: dict[str, Any]) -> None:
    """Validate against the OpenVEX schema; ``uniqueItems`` over thousands of statements is quadratic in
    jsonschema, so large documents are checked statement by statement plus a hashed uniqueness test."""
    validator = _validator(HERE / "openvex_json_schema.json")
    statements = doc["statements"]
    if len(statements) <= 200:
        _valid(validator, doc)
        return
    _valid(validator, {**doc, "statements": statements[:1]})
    statement = validator.evolve(schema={"$defs": validator.schema["$defs"], "$ref": "#/$defs/statement"})
    for st in statements:
        _valid(statement, st)
    assert len({canonical.dumps(st) for st in statements}) == len(statements)


def _artifact(export_dir: Path, domain: str, key: str) -> tuple[dict[str, Any], bytes]:
    index = orjson.loads((export_dir / "mirror" / domain / "index.json").read_bytes())
    (entry,) = [e for e in index["exports"] if e["exportKey"] == key]
    return entry, (export_dir / "mirror" / domain / entry["path"]).read_bytes()


@pytest.fixture
def sample_export(tmp_path: Path, signing_key: SigningKey) -> ExportSummary:
    return run_export(load_config(samples_config()), signing_key, tmp_path / "root", generated_at=NOW, strict=True)


def test_sample_export_verifies_and_matches_schemas(sample_export: ExportSummary, signing_key: SigningKey) -> None:
    verdict = store.verify_path(sample_export.export_dir.parent, TrustedKeys([signing_key.public]), NOW)
    assert verdict.domains == ["community", "primary"] and verdict.sequence == 1
    index_schema = _validator(SCHEMAS / "excititor-index.schema.json")
    consensus_schema = _validator(SCHEMAS / "excititor-consensus.schema.json")
    claim_schema = _validator(SCHEMAS / "excititor-claim.schema.json")
    for domain in ("primary", "community"):
        index = orjson.loads((sample_export.export_dir / "mirror" / domain / "index.json").read_bytes())
        _valid(index_schema, index)
        assert index["expiresAt"] == "2024-06-08T12:00:00Z" and index["sequence"] == 1
        for entry in index["exports"]:
            data = (sample_export.export_dir / "mirror" / domain / entry["path"]).read_bytes()
            if entry["format"] == "jsonl":
                lines = data.splitlines()
                assert len(lines) == entry["recordCount"]
                for line in lines:
                    assert canonical.dumps_compact(orjson.loads(line)) == line
                    _valid(claim_schema, orjson.loads(line))
                assert "policyRevision" not in entry
                continue
            doc = orjson.loads(data)
            assert canonical.dumps(doc) == data  # streamed bytes are exactly the canonical form
            if entry["format"] == "json":
                _valid(consensus_schema, doc)
                assert len(doc["records"]) == doc["recordCount"] == entry["recordCount"]
                assert doc["policyRevision"] == entry["policyRevision"]
            else:
                _valid_openvex(doc)
                assert len(doc["statements"]) == entry["recordCount"]
                for st in doc["statements"]:
                    datetime.fromisoformat(st["timestamp"].replace("Z", "+00:00"))  # date-time, checked by hand


def test_sample_disagreements_are_resolved_and_kept(sample_export: ExportSummary) -> None:
    _, data = _artifact(sample_export.export_dir, "primary", "consensus")
    records = {(r["vulnerabilityId"], r["productKey"]): r for r in orjson.loads(data)["records"]}
    webapp = records[("CVE-2024-990001", "pkg:pypi/acme-webapp@2.4.1")]
    assert (webapp["status"], webapp["justification"]) == ("not_affected", "vulnerable_code_not_in_execute_path")
    assert webapp["aliases"] == ["GHSA-q7w3-x8v4-9m2p"]  # the hub said GHSA-…, folded into the CVE
    assert [(c["providerId"], c["status"]) for c in webapp["conflicts"]] == [("vexhub", "affected")]
    assert {c["providerId"] for c in webapp["claims"]} == {"acme", "northwind", "vexhub"}
    libacme = records[("CVE-2024-990004", "pkg:apk/northwind/libacme@1.2.3-r1")]
    assert libacme["status"] == "under_investigation" and libacme["resolution"] == "weighted"
    agent = records[("CVE-2024-990003", "pkg:golang/example.com/acme/agent@v1.7.0")]
    assert agent["status"] == "fixed"
    assert [c["reason"] for c in agent["claims"] if c["providerId"] == "vexhub"] == ["unjustified"]


def test_openvex_round_trip_gives_the_same_statuses(sample_export: ExportSummary) -> None:
    _, consensus_bytes = _artifact(sample_export.export_dir, "primary", "consensus")
    expected = {
        (r["vulnerabilityId"], r["productKey"]): (r["status"], r["justification"])
        for r in orjson.loads(consensus_bytes)["records"]
    }
    _, vex_bytes = _artifact(sample_export.export_dir, "primary", "openvex")
    result = openvex.read(orjson.loads(vex_bytes), ReadContext("openvex.json", "mirror", "sha256:" + "0" * 64))
    got = {(c.vulnerability_id, c.product_key): (c.status, c.justification) for c in result.items}
    assert got == expected
    assert len(expected) == 8
    # acme-render is a subcomponent of acme-webapp in ACME's statement: it stays one in the OpenVEX output
    subs = {(c.vulnerability_id, c.product_key): (c.context or {}).get("subcomponents") for c in result.items}
    assert subs[("CVE-2024-990001", "pkg:pypi/acme-webapp@2.4.1")] == ["pkg:pypi/acme-render@0.9.3"]
    assert not any(key[1].startswith("pkg:pypi/acme-render") for key in got)


@pytest.mark.parametrize(
    ("key", "iri"),
    [
        ("pkg:pypi/flask@2.0", "pkg:pypi/flask@2.0"),
        ("cpe:2.3:a:acme:web:1.0:*:*:*:*:*:*:*", "cpe:2.3:a:acme:web:1.0:*:*:*:*:*:*:*"),
        ("nginx", "urn:stella-mirror:product:nginx"),
        ("acme web/1.0", "urn:stella-mirror:product:acme%20web%2F1.0"),
    ],
)
def test_scheme_less_product_keys_become_iris_and_read_back(key: str, iri: str) -> None:
    assert product_iri(key) == iri
    doc = {
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://example.com/vex/1",
        "author": "t",
        "timestamp": "2024-01-01T00:00:00Z",
        "version": 1,
        "statements": [{"vulnerability": {"name": "CVE-2024-1"}, "products": [{"@id": iri}], "status": "affected"}],
    }
    result = openvex.read(doc, ReadContext("x.json", "p", "sha256:" + "0" * 64))
    assert [c.product_key for c in result.items] == [key]


def test_filters_shape_the_domains(sample_export: ExportSummary) -> None:
    entry, data = _artifact(sample_export.export_dir, "community", "consensus")
    doc = orjson.loads(data)
    assert entry["sourceProviders"] == ["northwind", "vexhub"]
    assert {c["providerId"] for r in doc["records"] for c in r["claims"]} == {"northwind", "vexhub"}
    assert [p["id"] for p in doc["providers"]] == ["northwind", "vexhub"]
    # Without the vendor's under_investigation (1.0), northwind's fixed (0.8) beats the hub's affected (0.5).
    records = {(r["vulnerabilityId"], r["productKey"]): r["status"] for r in doc["records"]}
    assert records[("CVE-2024-990004", "pkg:apk/northwind/libacme@1.2.3-r1")] == "fixed"
    _, primary = _artifact(sample_export.export_dir, "primary", "consensus")
    assert orjson.loads(primary)["policyRevision"] != doc["policyRevision"]
    _, vex = _artifact(sample_export.export_dir, "community", "openvex")
    keys = [st["products"][0]["@id"] for st in orjson.loads(vex)["statements"]]
    assert keys and all(k.startswith(("pkg:pypi/", "pkg:golang/")) for k in keys)


def _config_with_bad_doc(tmp_path: Path) -> Path:
    good = {
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://example.test/1",
        "author": "a",
        "timestamp": "2024-01-01T00:00:00Z",
        "version": 1,
        "statements": [{"vulnerability": {"name": "CVE-2024-1"}, "products": ["pkg:pypi/a@1"], "status": "fixed"}],
    }
    write_json(tmp_path / "vex/vendor/good.json", good)
    bad = {**good, "statements": [{**good["statements"][0], "status": "kaput"}]}
    write_json(tmp_path / "vex/vendor/bad.json", bad)
    config = {
        "providers": [{"id": "vendor", "kind": "vendor", "weight": 1, "paths": ["vex/vendor/*.json"]}],
        "domains": [{"id": "primary", "exports": [{"key": "consensus", "format": "json"}]}],
    }
    (tmp_path / "excititor.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "excititor.yaml"


def test_malformed_document_is_skipped_and_counted(tmp_path: Path, signing_key: SigningKey) -> None:
    summary = run_export(load_config(_config_with_bad_doc(tmp_path)), signing_key, tmp_path / "root")
    (err,) = summary.report.rejected
    assert (err.path, err.pointer) == ("vex/vendor/bad.json", "/statements/0/status")
    assert summary.claims == 1 and summary.report.documents == 1
    assert ExportRoot(tmp_path / "root").active_id() == summary.export_id


def test_strict_publishes_nothing(tmp_path: Path, signing_key: SigningKey) -> None:
    with pytest.raises(ExportRejectedError) as info:
        run_export(load_config(_config_with_bad_doc(tmp_path)), signing_key, tmp_path / "root", strict=True)
    assert "vex/vendor/bad.json#/statements/0/status" in str(info.value)
    root = tmp_path / "root"
    assert not root.exists() or not any(p for p in root.iterdir() if p.name != ".lock")


def test_sequence_grows_and_old_exports_are_pruned(tmp_path: Path, signing_key: SigningKey) -> None:
    cfg = load_config(samples_config())
    root = tmp_path / "root"
    first = run_export(cfg, signing_key, root, export_id="one", generated_at=NOW)
    second = run_export(cfg, signing_key, root, export_id="two", generated_at=NOW + timedelta(hours=1))
    assert (first.sequence, second.sequence) == (1, 2)
    claims = "mirror/primary/exports/claims/claims.jsonl"
    assert (root / "one" / claims).read_bytes() == (root / "two" / claims).read_bytes()  # deterministic output
    third = run_export(cfg, signing_key, root, export_id="three", generated_at=NOW + timedelta(hours=2), keep=1)
    assert third.sequence == 3
    assert ExportRoot(root).active_id() == "three" and ExportRoot(root).export_ids() == ["three"]
    index = orjson.loads((root / "latest/mirror/primary/index.json").read_bytes())
    assert (index["sequence"], index["exportId"], index["generatedAt"]) == (3, "three", "2024-06-01T14:00:00Z")


def test_export_samples_for_the_demo(tmp_path: Path, signing_key: SigningKey) -> None:
    summary = export_samples(tmp_path / "excititor", signing_key, generated_at=NOW)
    assert summary.claims == 14 and not summary.report.rejected
    counts = {(a.domain_id, a.export_key): a.record_count for a in summary.artifacts}
    assert counts == {
        ("primary", "consensus"): 8,
        ("primary", "claims"): 14,
        ("primary", "openvex"): 8,
        ("community", "consensus"): 7,
        ("community", "openvex"): 5,
    }
    store.verify_path(tmp_path / "excititor", TrustedKeys([signing_key.public]), NOW)


def test_corpus_export(corpus: Path, tmp_path: Path, signing_key: SigningKey) -> None:
    """All VEX families of the corpus in one export; the corpus grows, so the counts come from its files.

    csaf/**/*.json also matches JSON files that are not CSAF documents (ROLIE feeds, aggregator and
    provider metadata), and openvex/**/*.json matches VEX Repository ``manifest.json`` files: they are
    skipped and counted, never rejected. Byte-identical copies (CycloneDX Case-6 repeats Case-13's
    bom-1..3) are read once.
    """
    globs = {"openvex": "openvex/**/*.json", "csaf": "csaf/**/*.json", "cdx": "cyclonedx-vex/**/*.json"}
    cfg = parse_config(
        {
            "providers": [
                {"id": "openvex", "kind": "vendor", "weight": 1.0, "paths": [str(corpus / globs["openvex"])]},
                {"id": "csaf", "kind": "distro", "weight": 0.8, "paths": [str(corpus / globs["csaf"])]},
                {"id": "cdx", "kind": "hub", "weight": 0.5, "paths": [str(corpus / globs["cdx"])]},
            ],
            "domains": [
                {
                    "id": "all",
                    "exports": [
                        {"key": "consensus", "format": "json"},
                        {"key": "claims", "format": "jsonl"},
                        {"key": "openvex", "format": "openvex"},
                    ],
                },
            ],
        },
        corpus,
    )
    summary = run_export(cfg, signing_key, tmp_path / "root", generated_at=NOW)
    report = summary.report
    # Independent tally from the file system: every matched file is read, skipped or a duplicate.
    files = [p for g in globs.values() for p in corpus.glob(g) if p.is_file()]
    digests = collections.Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in files)
    not_vex = [p for p in files if not _looks_like_vex(p.read_bytes())]
    assert report.rejected == []
    assert len(report.duplicates) == sum(n - 1 for n in digests.values())
    assert len(report.skipped) == len(not_vex) and len(not_vex) >= 9
    assert report.documents + len(report.skipped) + len(report.duplicates) == len(files)
    assert all("/" in s.path and not s.path.startswith("/") for s in report.skipped)
    assert all(s.path.startswith(("csaf/", "openvex/")) for s in report.skipped)
    assert {s.reason for s in report.skipped} == {NOT_VEX}
    per_provider = {p: s.claims for p, s in report.providers.items()}
    assert set(per_provider) == {"openvex", "csaf", "cdx"} and all(per_provider.values())
    assert sum(per_provider.values()) == summary.claims
    counts = {a.export_key: a.record_count for a in summary.artifacts}
    assert counts["claims"] == summary.claims
    _, data = _artifact(summary.export_dir, "all", "claims")
    lines = [orjson.loads(line) for line in data.splitlines()]
    assert len(lines) == summary.claims
    paths = {c["source"]["path"] for c in lines}
    # the corpus lies outside the config folder: names stay relative, no host path leaks into the export
    assert paths and not any(p.startswith("/") or str(corpus) in p for p in paths)
    assert "openvex/vexctl/examples/openvex/demo.vex.json" in paths
    _, data = _artifact(summary.export_dir, "all", "openvex")
    _valid_openvex(orjson.loads(data))
    _, data = _artifact(summary.export_dir, "all", "consensus")
    records = orjson.loads(data)["records"]
    # one consensus record per (vulnerability, product) pair that the claims name
    assert counts["consensus"] == counts["openvex"] == len(records) <= summary.claims
    statuses = collections.Counter(r["status"] for r in records)
    assert sum(statuses.values()) == len(records) and statuses["affected"] > statuses["fixed"] > 0


def _looks_like_vex(data: bytes) -> bool:
    """A VEX document of one of the three families, judged by the marker each format requires."""
    return b'"csaf_version"' in data or b'"bomFormat"' in data or b'"@context"' in data


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"keep": 0}, "keep"), ({"expires_in": timedelta(0)}, "expiresIn"), ({"export_id": "../x"}, "exportId")],
)
def test_bad_arguments_touch_nothing(tmp_path: Path, signing_key: SigningKey, kwargs: dict[str, Any], key: str) -> None:
    from stella_mirror.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        run_export(load_config(samples_config()), signing_key, tmp_path / "root", **kwargs)
    assert info.value.key_path == key
    assert not (tmp_path / "root").exists()


def test_schema_version_1_artifacts_still_verify(tmp_path: Path, signing_key: SigningKey) -> None:
    """Exports written before artifacts became content-addressed (schemaVersion 1, with exportId and
    generatedAt inside) keep verifying: verify checks artifacts by signed size and digest, whatever
    their schemaVersion; the current writer emits EXCITITOR_ARTIFACT_SCHEMA without those fields."""
    from stella_mirror.bundle.model import EXCITITOR_ARTIFACT_SCHEMA
    from stella_mirror.bundle.writer import ExcititorArtifact, ExportStamp, write_excititor_domain

    old = {"domainId": "d", "exportId": "old", "generatedAt": "2024-06-01T12:00:00Z", "schemaVersion": 1}

    def write(out: Any) -> int:
        out.write(canonical.dumps({**old, "exportKey": "c", "recordCount": 0, "records": []}))
        return 0

    stage = tmp_path / "old"
    stamp = ExportStamp("old", 1, "2024-06-01T12:00:00Z", "2024-06-08T12:00:00Z")
    art = ExcititorArtifact("c", "json", "consensus", "consensus.json", write, [])
    write_excititor_domain(stage, "d", "D", stamp, [art], signing_key)
    verdict = store.verify_export_dir(stage, TrustedKeys([signing_key.public]), NOW)
    assert (verdict.export_id, verdict.domains) == ("old", ["d"])
    assert EXCITITOR_ARTIFACT_SCHEMA == 2
    current = export_samples(tmp_path / "new", signing_key, generated_at=NOW)
    _, data = _artifact(current.export_dir, "primary", "consensus")
    doc = orjson.loads(data)
    assert doc["schemaVersion"] == EXCITITOR_ARTIFACT_SCHEMA and "exportId" not in doc and "generatedAt" not in doc
