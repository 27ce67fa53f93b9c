"""Faithful records (issue 17): the shared OSV corpus through the real CLI, then checked from the bundle alone.

- Round trip: every OSV document of the corpus is rebuilt from its provenance entry, equal to the source
  (JSON compared as parsed JSON, YAML as parsed data with timestamps as written).
- Semantics: for every version a document names (``versions`` and SEMVER/ECOSYSTEM events), "is it
  affected?" answered from the canonical record's intervals equals the answer of OSV's evaluation
  algorithm, written here from the specification (https://ossf.github.io/osv-schema/#evaluation) and
  applied to the source documents: not the exporter's code.
- Aliases: every alias of every advisory finds that advisory, and no other.
- Named regressions: OSV-2022-572, CVE-2021-43818, Bitnami per-package CVSS, CVSS v4 only.
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from univers import versions as uv

import clitools

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO.parent / "shared" / "corpus"
DATABASES = ("pypa", "golang", "bitnami", "oss-fuzz")

pytestmark = pytest.mark.e2e


_SAFE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: the same data, faster


class _TimestampsAsWritten(_SAFE):  # type: ignore[misc]
    """YAML as data, timestamps left as the strings they were written as (JSON has no timestamp type)."""


_TimestampsAsWritten.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _SAFE.yaml_implicit_resolvers.items()
}


def source_document(path: Path) -> Any:
    """A corpus document as parsed data, normalised through JSON."""
    data = path.read_bytes()
    doc = yaml.load(data, Loader=_TimestampsAsWritten) if path.suffix in (".yaml", ".yml") else orjson.loads(data)
    return orjson.loads(orjson.dumps(doc))


def corpus_files(db: str) -> list[Path]:
    return sorted(p for p in (CORPUS / "osv" / db).rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The four OSV databases as four sources (each named after its folder), exported once."""
    if not CORPUS.is_dir():
        pytest.skip(f"shared corpus not found at {CORPUS}")
    base = tmp_path_factory.mktemp("fidelity")
    proc = clitools.cli("keys", "generate", "--out", base / "keys")
    assert proc.returncode == 0, proc.stderr
    args: list[str | Path] = ["export", "concelier", "--key", base / "keys" / "mirror-key.pem", "--out", base / "out"]
    for db in DATABASES:
        args += ["--source", f"osv:{CORPUS / 'osv' / db}"]
    proc = clitools.cli(*args, "--json", "--expires-in", "36500d")
    assert proc.returncode == 0, proc.stderr
    bundle: dict[str, Any] = orjson.loads((base / "out" / "latest" / "mirror" / "primary" / "bundle.json").read_bytes())
    return bundle


def test_every_osv_document_is_rebuilt_from_the_bundle(exported: dict[str, Any]) -> None:
    entries = {(p["source"], p["digest"]): p for a in exported["advisories"] for p in a["provenance"]}
    seen = 0
    for db in DATABASES:
        for path in corpus_files(db):
            digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
            entry = entries.get((db, digest))
            assert entry is not None, f"{path}: no provenance entry of source {db!r}"
            assert entry["osv"] == source_document(path), path
            seen += 1
    assert seen == len(entries)  # one entry per document, none invented


# --- the semantics property -------------------------------------------------------------------------------

# The reference's version orders (univers), chosen here from the OSV ecosystems the corpus uses.
_ORDERS: dict[str, type[uv.Version]] = {"PyPI": uv.PypiVersion}


def _order(range_type: str, ecosystem: str) -> type[uv.Version] | None:
    return uv.SemverVersion if range_type == "SEMVER" else _ORDERS.get(ecosystem)


@functools.lru_cache(maxsize=1 << 17)
def _parse(cls: type[uv.Version], text: str) -> uv.Version | None:
    try:
        return cls(text)
    except Exception:
        return None


def reference_affected(version: str, ecosystem: str, entries: list[dict[str, Any]]) -> bool | None:
    """OSV's evaluation algorithm on source ``affected`` entries; None where a version does not parse."""
    for entry in entries:
        if version in (entry.get("versions") or []):
            return True
    for entry in entries:
        for rng in entry.get("ranges") or []:
            cls = _order(rng["type"], ecosystem)
            if cls is None:
                continue  # GIT: a commit graph, not this version's order
            v = _parse(cls, version)
            if v is None:
                return None
            keyed = []
            for event in rng["events"]:
                ((kind, value),) = event.items()
                if kind == "introduced" and value == "0":
                    keyed.append((0, None, kind, value))
                    continue
                parsed = _parse(cls, value)
                if parsed is None:
                    return None
                keyed.append((1, parsed, kind, value))
            zeros = [k for k in keyed if k[0] == 0]
            rest = sorted((k for k in keyed if k[0] == 1), key=lambda k: k[1])  # stable: ties keep source order
            affected = False
            for _, bound, kind, _value in zeros + rest:
                if kind == "introduced":
                    if bound is None or v >= bound:
                        affected = True
                elif kind == "fixed":
                    if v >= bound:
                        affected = False
                elif kind == "last_affected" and v > bound:
                    affected = False
            if affected:
                return True
    return False


def canonical_affected(version: str, ecosystem: str, entries: list[dict[str, Any]]) -> bool | None:
    """The canonical record's answer: listed versions, then the derived intervals; None where it has none."""
    if any(version in e["versions"] for e in entries):
        return True
    for entry in entries:
        for rng in entry["ranges"]:
            if rng["type"] == "GIT":
                continue
            cls = _order(rng["type"], ecosystem)
            if rng["intervals"] is None or cls is None:
                return None
            v = _parse(cls, version)
            if v is None:
                return None
            for iv in rng["intervals"]:
                texts = (iv["introduced"], iv["fixed"], iv["lastAffected"])
                lo, fixed, last = (None if x is None else _parse(cls, x) for x in texts)
                if any(x is not None and b is None for x, b in zip(texts, (lo, fixed, last), strict=True)):
                    return None  # a bound this order cannot read: no answer
                if lo is not None and v < lo:
                    continue
                if fixed is not None and v >= fixed:
                    continue
                if last is not None and v > last:
                    continue
                return True
    return False


def test_is_this_version_affected_agrees_with_the_osv_algorithm(exported: dict[str, Any]) -> None:
    checked = undecided = 0
    for adv in exported["advisories"]:
        sources: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for prov in adv["provenance"]:
            for entry in prov["osv"].get("affected") or []:
                if entry.get("package"):
                    sources[(entry["package"]["ecosystem"], entry["package"]["name"])].append(entry)
        for (ecosystem, name), entries in sources.items():
            canonical = [a for a in adv["affected"] if (a["ecosystem"], a["package"]) == (ecosystem, name)]
            assert canonical, (adv["advisoryKey"], ecosystem, name)
            named = {v for e in entries for v in e.get("versions") or []}
            named |= {
                value
                for e in entries
                for r in e.get("ranges") or []
                if r["type"] != "GIT"
                for ev in r["events"]
                for value in ev.values()
            }
            for version in sorted(named):
                want = reference_affected(version, ecosystem, entries)
                got = canonical_affected(version, ecosystem, canonical)
                if want is None or got is None:
                    undecided += 1
                    continue
                assert got == want, (adv["advisoryKey"], ecosystem, name, version)
                checked += 1
    assert checked > 10 * max(undecided, 1), (checked, undecided)


# --- aliases -----------------------------------------------------------------------------------------------


def test_every_alias_finds_its_advisory(exported: dict[str, Any]) -> None:
    """The documented lookup (docs/concelier.md, "Looking up an advisory"): index every advisory by each of its
    ``aliases``. Each alias names exactly one advisory, so distinct CVEs folded through a shared GHSA or GO id
    each find the advisory that holds them."""
    index: dict[str, list[str]] = defaultdict(list)
    for adv in exported["advisories"]:
        assert adv["advisoryKey"] in adv["aliases"]
        for alias in adv["aliases"]:
            index[alias].append(adv["advisoryKey"])
    for adv in exported["advisories"]:
        for alias in adv["aliases"]:
            assert index[alias] == [adv["advisoryKey"]], alias
        for prov in adv["provenance"]:  # every id and alias a source states is among them
            assert {prov["osv"]["id"], *prov["osv"].get("aliases", [])} <= set(adv["aliases"])
    several = [a for a in exported["advisories"] if sum(x.startswith("CVE-") for x in a["aliases"]) > 1]
    assert several  # the corpus folds distinct CVEs: each of them is found above


# --- named regressions -------------------------------------------------------------------------------------


def _holding(bundle: dict[str, Any], osv_id: str) -> dict[str, Any]:
    return next(a for a in bundle["advisories"] if osv_id in a["aliases"])


def test_oss_fuzz_git_range_with_two_introduced_is_fixed(exported: dict[str, Any]) -> None:
    adv = _holding(exported, "OSV-2022-572")
    [aff] = [a for a in adv["affected"] if a["package"] == "dnsmasq"]
    [rng] = aff["ranges"]
    assert rng["type"] == "GIT" and rng["repo"] == "git://thekelleys.org.uk/dnsmasq.git"
    assert rng["events"] == [
        {"introduced": "20b4a4ea5b19f3143add1342dde74a0be2b30a86"},
        {"introduced": "151d7dc5eaabb38a2a7cb2ace72fe8860f4415ae"},
        {"fixed": "ec8f3e65c19e8dee114e31759d447926d3ebd7cf"},
    ]  # the fix is there: nothing says "never fixed"
    assert rng["intervals"] is None  # a commit graph has no version order to derive intervals from
    assert "v2.88" in aff["versions"]


def test_lxml_keeps_both_git_fixes_and_the_pypi_range(exported: dict[str, Any]) -> None:
    adv = _holding(exported, "PYSEC-2021-852")
    assert adv["advisoryKey"] == "CVE-2021-43818"
    [aff] = [a for a in adv["affected"] if a["ecosystem"] == "PyPI" and a["package"] == "lxml"]
    git = [r for r in aff["ranges"] if r["type"] == "GIT" and r["repo"] == "https://github.com/lxml/lxml"]
    assert [r["events"] for r in git] == [
        [
            {"introduced": "0"},
            {"fixed": "f2330237440df7e8f39c3ad1b1aa8852be3b27c0"},
            {"fixed": "12fa9669007180a7bb87d990c375cf91ca5b664a"},
        ]
    ]
    eco = [r for r in aff["ranges"] if r["type"] == "ECOSYSTEM"]
    assert {"introduced": None, "fixed": "4.6.5", "lastAffected": None} in [iv for r in eco for iv in r["intervals"]]
    assert "4.6.5" not in aff["versions"]  # commit hashes stay in GIT ranges, next to their repo


def test_bitnami_only_advisory_keeps_cvss_and_severity(exported: dict[str, Any]) -> None:
    only = [a for a in exported["advisories"] if {p["source"] for p in a["provenance"]} == {"bitnami"}]
    with_vectors = [a for a in only if any(e.get("severity") for p in a["provenance"] for e in p["osv"]["affected"])]
    assert with_vectors
    for adv in with_vectors:
        vectors = {s["score"] for p in adv["provenance"] for e in p["osv"]["affected"] for s in e.get("severity") or []}
        assert vectors <= {c["vector"] for c in adv["cvss"]}, adv["advisoryKey"]
        assert all(c["baseScore"] is not None for c in adv["cvss"])
        assert adv["severity"] is not None, adv["advisoryKey"]


def test_cvss_v4_only_advisory_has_a_severity(exported: dict[str, Any]) -> None:
    v4_only = [a for a in exported["advisories"] if a["cvss"] and {c["version"] for c in a["cvss"]} == {"4.0"}]
    assert v4_only
    for adv in v4_only:
        assert adv["severity"] in ("low", "medium", "high", "critical", "none"), adv["advisoryKey"]
        assert all(c["baseScore"] is not None for c in adv["cvss"])
    # No advisory with a vector lacks a severity.
    assert all(a["severity"] is not None for a in exported["advisories"] if a["cvss"])
