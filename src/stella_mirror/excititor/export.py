"""Build and publish a signed Excititor export: claims → consensus → per-domain artifacts.

Artifact formats (DESIGN §4):

* ``json`` — consensus view: one canonical object ``{domainId, exportKey, filters, policyRevision,
  providers, recordCount, records[], schemaVersion}``, records sorted by (vulnerabilityId, productKey)
  and streamed (claims view: ``{claims[], …}`` likewise);
* ``jsonl`` — one canonical record per line (claims, or consensus records);
* ``openvex`` — the consensus as an OpenVEX v0.2.0 document, one statement per (vulnerability, product);
  a product's subcomponents stay subcomponents of that product.

Artifacts are content-addressed (schemaVersion 2, :data:`EXCITITOR_ARTIFACT_SCHEMA`): they carry no
export id and no generation time, so the same input gives byte-identical artifacts in every export
(the export id, sequence and times live in the signed index). The OpenVEX document's ``@id`` is derived
from the input (policy revision and the digests of the documents behind its statements) and its
``timestamp`` is the latest claim time (the Unix epoch for a document without any).

Publication follows :mod:`stella_mirror.publish`: lock the root, stage a complete export, verify the
staged tree against the signing key, switch ``latest``, prune. With ``strict`` any rejected input
document refuses the export before the root is touched.
"""

from __future__ import annotations

import importlib.resources
import re
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from stella_mirror.bundle import canonical, store
from stella_mirror.bundle.digest import Writable
from stella_mirror.bundle.model import EXCITITOR_ARTIFACT_SCHEMA
from stella_mirror.bundle.signing import SigningKey, TrustedKeys
from stella_mirror.bundle.writer import ExcititorArtifact, ExportStamp, read_sequence, write_excititor_domain
from stella_mirror.errors import ConfigError, ExportRejectedError
from stella_mirror.excititor.claims import AFFECTED, NOT_AFFECTED, Claim, time_key
from stella_mirror.excititor.config import Domain, ExcititorConfig, ExportSpec, Filters, Provider, load_config
from stella_mirror.excititor.consensus import Consensus, PairKey
from stella_mirror.excititor.providers import ClaimSet, LoadReport, load_claims
from stella_mirror.excititor.sources.openvex import PRODUCT_URN
from stella_mirror.publish import ExportRoot, check_export_id, next_sequence
from stella_mirror.timeutil import rfc3339, utcnow

OPENVEX_CONTEXT = "https://openvex.dev/ns/v0.2.0"
EPOCH = "1970-01-01T00:00:00Z"
DEFAULT_ACTION = "No remediation was stated by the contributing providers; see the consensus export for their claims."


@dataclass
class ArtifactSummary:
    """One written artifact."""

    domain_id: str
    export_key: str
    format: str
    view: str
    path: str
    record_count: int
    source_providers: list[str]


@dataclass
class ExportSummary:
    """What an export run published."""

    export_id: str
    sequence: int
    generated_at: str
    expires_at: str
    export_dir: Path
    claims: int
    report: LoadReport
    artifacts: list[ArtifactSummary] = field(default_factory=list)


# --- artifact writers --------------------------------------------------------------------------------


def _provider_list(providers: Iterable[Provider]) -> list[dict[str, Any]]:
    return [{"id": p.id, "kind": p.kind, "weight": p.weight} for p in sorted(providers, key=lambda p: p.id)]


def write_consensus_json(out: Writable, consensus: Consensus, keys: list[PairKey], header: dict[str, Any]) -> int:
    """The consensus view as one canonical JSON object with a streamed ``records`` array."""
    early = {
        **header,
        "policyRevision": consensus.policy_revision,
        "providers": _provider_list(consensus.providers.values()),
        "recordCount": len(keys),
    }
    writer = canonical.StreamingObjectWriter(out, "records", early)
    for record in consensus.records(keys):
        writer.write_item(record)
    writer.finish({"schemaVersion": EXCITITOR_ARTIFACT_SCHEMA})
    return writer.count


def write_consensus_jsonl(out: Writable, consensus: Consensus, keys: list[PairKey]) -> int:
    """One consensus record per line."""
    count = 0
    for record in consensus.records(keys):
        out.write(canonical.dumps(record))
        count += 1
    return count


def write_claims_jsonl(out: Writable, claims: list[Claim]) -> int:
    """One claim per line."""
    for c in claims:
        out.write(canonical.dumps(c.as_record()))
    return len(claims)


def write_claims_json(out: Writable, claims: list[Claim], header: dict[str, Any]) -> int:
    """The claims view as one canonical JSON object with a streamed ``claims`` array."""
    writer = canonical.StreamingObjectWriter(out, "claims", {})
    for c in claims:
        writer.write_item(c.as_record())
    writer.finish({**header, "recordCount": len(claims), "schemaVersion": EXCITITOR_ARTIFACT_SCHEMA})
    return writer.count


_IRI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def product_iri(product_key: str) -> str:
    """OpenVEX wants an IRI in ``@id``: keys without a scheme (v0.0.1 ids like ``nginx``) become a URN.

    Our OpenVEX reader turns the URN back into the original key, so a round trip keeps product keys.
    """
    if _IRI_SCHEME.match(product_key) and " " not in product_key:
        return product_key
    return PRODUCT_URN + urllib.parse.quote(product_key, safe="")


def _component(key: str) -> dict[str, Any]:
    """An OpenVEX product or subcomponent for a product key."""
    out: dict[str, Any] = {"@id": product_iri(key)}
    if key.startswith("pkg:"):
        out["identifiers"] = {"purl": key}
    return out


def openvex_statement(record: dict[str, Any], fallback_time: str) -> dict[str, Any]:
    """One consensus record as an OpenVEX v0.2.0 statement (valid against the OpenVEX JSON schema)."""
    vulnerability: dict[str, Any] = {"name": record["vulnerabilityId"]}
    if record["aliases"]:
        vulnerability["aliases"] = record["aliases"]
    product = _component(record["productKey"])
    if record["subcomponents"]:
        product["subcomponents"] = [_component(s) for s in record["subcomponents"]]
    weights = ", ".join(f"{s}={w:g}" for s, w in record["weights"].items()) or "none counted"
    statement: dict[str, Any] = {
        "vulnerability": vulnerability,
        "products": [product],
        "status": record["status"],
        "status_notes": f"stella-mirror consensus ({record['resolution']}; weights {weights})",
        "timestamp": record["lastUpdated"] or fallback_time,
    }
    if record["status"] == NOT_AFFECTED:
        # The schema wants exactly one of justification / impact_statement; a consensus not_affected
        # has at least one (unjustified claims do not count): the label when there is one.
        if record["justification"]:
            statement["justification"] = record["justification"]
        else:
            statement["impact_statement"] = record["impactStatement"]
    elif record["status"] == AFFECTED:
        statement["action_statement"] = record["detail"] or DEFAULT_ACTION
    return statement


def write_openvex(out: Writable, consensus: Consensus, keys: list[PairKey], meta: dict[str, Any]) -> int:
    """The consensus as an OpenVEX v0.2.0 document with a streamed ``statements`` array."""
    writer = canonical.StreamingObjectWriter(
        out,
        "statements",
        {"@context": OPENVEX_CONTEXT, "@id": meta["id"], "author": meta["author"], "role": "aggregator"},
    )
    for record in consensus.records(keys):
        writer.write_item(openvex_statement(record, meta["timestamp"]))
    writer.finish(
        {
            "timestamp": meta["timestamp"],
            "tooling": f"stella-mirror excititor consensus (policy {consensus.policy_revision})",
            "version": 1,
        }
    )
    return writer.count


# --- planning ----------------------------------------------------------------------------------------


class _Planner:
    """Consensus sets per provider selection, computed once and shared between exports."""

    def __init__(self, config: ExcititorConfig, claims: list[Claim]) -> None:
        self.config = config
        self.claims = claims
        self._cache: dict[tuple[str, ...], Consensus] = {}

    def providers(self, filters: Filters) -> list[Provider]:
        if not filters.providers:
            return list(self.config.providers)
        return [p for p in self.config.providers if p.id in filters.providers]

    def consensus(self, filters: Filters) -> Consensus:
        providers = self.providers(filters)
        key = tuple(sorted(p.id for p in providers))
        if key not in self._cache:
            self._cache[key] = Consensus(self.claims, providers)
        return self._cache[key]

    def claims_for(self, filters: Filters) -> list[Claim]:
        folder = self.consensus(Filters()).folder
        wanted = {p.id for p in self.providers(filters)}
        out = []
        for c in self.claims:
            if c.provider_id not in wanted or not filters.product_matches(c.product_key):
                continue
            if filters.vulnerabilities:
                key = folder.key(c.vulnerability_id)
                ids = [c.vulnerability_id, *c.aliases, key, *folder.aliases(key)]
                if not filters.vulnerability_matches(ids):
                    continue
            out.append(c)
        out.sort(
            key=lambda c: (c.vulnerability_id, c.product_key, c.provider_id, time_key(c.issued_at), c.document_digest)
        )
        return out


def _artifact(planner: _Planner, domain: Domain, spec: ExportSpec) -> tuple[ExcititorArtifact, ArtifactSummary]:
    header = {"domainId": domain.id, "exportKey": spec.key, "filters": spec.filters.as_dict()}
    extra: dict[str, Any] = {}
    write: Callable[[Writable], int]
    if spec.view == "consensus":
        consensus = planner.consensus(spec.filters)
        keys = consensus.keys(spec.filters)
        sources = consensus.source_providers(keys)
        extra["policyRevision"] = consensus.policy_revision
        count = len(keys)
        if spec.format == "json":

            def write(out: Writable) -> int:
                return write_consensus_json(out, consensus, keys, header)

        elif spec.format == "jsonl":

            def write(out: Writable) -> int:
                return write_consensus_jsonl(out, consensus, keys)

        else:
            digest, latest = consensus.input_digest(keys)
            meta = {
                "id": f"urn:stella-mirror:excititor:{domain.id}:{spec.key}:{digest.removeprefix('sha256:')}",
                "author": f"stella-mirror Excititor ({domain.display_name})",
                "timestamp": latest or EPOCH,
            }

            def write(out: Writable) -> int:
                return write_openvex(out, consensus, keys, meta)

    else:
        claims = planner.claims_for(spec.filters)
        sources = sorted({c.provider_id for c in claims})
        count = len(claims)
        if spec.format == "jsonl":

            def write(out: Writable) -> int:
                return write_claims_jsonl(out, claims)

        else:

            def write(out: Writable) -> int:
                return write_claims_json(out, claims, header)

    art = ExcititorArtifact(spec.key, spec.format, spec.view, spec.filename, write, sources, extra)
    summary = ArtifactSummary(
        domain.id,
        spec.key,
        spec.format,
        spec.view,
        f"mirror/{domain.id}/exports/{spec.key}/{spec.filename}",
        count,
        sources,
    )
    return art, summary


# --- the export run ----------------------------------------------------------------------------------


def _export_id(root: ExportRoot, generated: datetime, sequence: int) -> str:
    base = generated.strftime("%Y%m%dT%H%M%SZ")
    return base if not (root.path / base).exists() else f"{base}-{sequence}"


def run_export(
    config: ExcititorConfig,
    key: SigningKey,
    out_root: Path,
    *,
    export_id: str | None = None,
    generated_at: datetime | None = None,
    expires_in: timedelta = timedelta(days=7),
    keep: int = 3,
    strict: bool = False,
    claim_set: ClaimSet | None = None,
) -> ExportSummary:
    """Load claims, compute consensus, write every domain, verify the staged tree and publish it."""
    # Argument mistakes are refused before any document is read or the root is touched.
    if keep < 1:
        raise ConfigError("keep", "must be at least 1")
    if expires_in <= timedelta(0):
        raise ConfigError("expiresIn", "must be positive")
    if export_id is not None:
        check_export_id(export_id)
    loaded = claim_set if claim_set is not None else load_claims(config.providers, config.base_dir)
    if strict and loaded.report.rejected:
        first = loaded.report.rejected[0]
        raise ExportRejectedError(
            f"--strict: {len(loaded.report.rejected)} document(s) rejected, nothing published; first: {first}"
        )
    generated = (generated_at or utcnow()).replace(microsecond=0)
    root = ExportRoot(out_root)
    planner = _Planner(config, loaded.claims)
    with root.locked():
        sequence = next_sequence(root, read_sequence)
        eid = export_id or _export_id(root, generated, sequence)
        stamp = ExportStamp(eid, sequence, rfc3339(generated), rfc3339(generated + expires_in))
        summary = ExportSummary(
            eid, sequence, stamp.generated_at, stamp.expires_at, out_root / eid, len(loaded.claims), loaded.report
        )
        with root.staging(eid) as stage:
            for domain in config.domains:
                artifacts = []
                for spec in domain.exports:
                    art, art_summary = _artifact(planner, domain, spec)
                    artifacts.append(art)
                    summary.artifacts.append(art_summary)
                write_excititor_domain(stage, domain.id, domain.display_name, stamp, artifacts, key)
            # Verify what we are about to publish, against the public half of the signing key (B1).
            # "now" is the generation time: expiry is the consumer's concern, not the publisher's.
            store.verify_export_dir(stage, TrustedKeys([key.public]), generated)
            root.commit(stage, eid, keep)
    return summary


def samples_config() -> Path:
    """The packaged sample configuration (demo mirror): three providers, two domains."""
    path = importlib.resources.files("stella_mirror").joinpath("samples/excititor/config.yaml")
    return Path(str(path))


def export_samples(
    out_root: Path,
    key: SigningKey,
    *,
    export_id: str | None = None,
    generated_at: datetime | None = None,
    expires_in: timedelta = timedelta(days=7),
    keep: int = 3,
) -> ExportSummary:
    """Publish the packaged sample VEX data as a signed Excititor export under ``out_root`` (for ``demo``)."""
    return run_export(
        load_config(samples_config()),
        key,
        out_root,
        export_id=export_id,
        generated_at=generated_at,
        expires_in=expires_in,
        keep=keep,
        strict=True,
    )
