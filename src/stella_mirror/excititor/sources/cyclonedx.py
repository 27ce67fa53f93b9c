"""CycloneDX VEX reader (JSON, spec 1.4–1.6): ``vulnerabilities[].analysis`` becomes claims.

State mapping: ``not_affected``/``false_positive`` → not_affected, ``exploitable`` → affected,
``resolved``/``resolved_with_pedigree`` → fixed, ``in_triage`` → under_investigation. A vulnerability
without ``analysis.state`` is a scan finding, not a VEX statement, and yields no claim.

A ``not_affected`` analysis is justified by its ``justification`` or, as with CSAF impact statements,
by its ``detail`` (kept as ``impactStatement``). CycloneDX justifications are mapped to the OpenVEX
vocabulary (the original kept in ``context.cyclonedxJustification``): ``code_not_present`` →
vulnerable_code_not_present, ``code_not_reachable`` → vulnerable_code_not_in_execute_path, ``requires_dependency`` →
component_not_present, ``requires_configuration``/``requires_environment`` →
vulnerable_code_cannot_be_controlled_by_adversary, ``protected_*`` → inline_mitigations_already_exist.

``affects[].ref`` resolution, in order:

1. a BOM-Link ``urn:cdx:<serial>/<version>#<bom-ref>`` against a BOM supplied with the documents
   (:class:`BomIndex`) → that component's purl (else CPE), else the BOM-Link itself;
2. a local ``bom-ref`` of a component in the VEX document itself → its purl (else CPE);
3. a reference that is itself a purl (BOM-Link fragments often are: CycloneDX tools use purls as
   bom-refs) → that purl;
4. otherwise the ref qualified by the document: the BOM-Link as given, or
   ``urn:cdx:<serial>/<version>#<ref>`` when the document has a serial number, or
   ``cdx:<document digest>#<ref>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote

from stella_mirror.excititor.claims import (
    AFFECTED,
    FIXED,
    NOT_AFFECTED,
    UNDER_INVESTIGATION,
    Claim,
    normalise_time,
)
from stella_mirror.excititor.sources.base import (
    ReadContext,
    ReadResult,
    VexContext,
    expect_list,
    expect_object,
    expect_str,
    join_text,
    pointer,
)

FORMAT = "cyclonedx"

STATE_MAP: dict[str, str] = {
    "not_affected": NOT_AFFECTED,
    "false_positive": NOT_AFFECTED,
    "exploitable": AFFECTED,
    "resolved": FIXED,
    "resolved_with_pedigree": FIXED,
    "in_triage": UNDER_INVESTIGATION,
}

JUSTIFICATION_MAP: dict[str, str] = {
    "code_not_present": "vulnerable_code_not_present",
    "code_not_reachable": "vulnerable_code_not_in_execute_path",
    "requires_dependency": "component_not_present",
    "requires_configuration": "vulnerable_code_cannot_be_controlled_by_adversary",
    "requires_environment": "vulnerable_code_cannot_be_controlled_by_adversary",
    "protected_by_compiler": "inline_mitigations_already_exist",
    "protected_at_runtime": "inline_mitigations_already_exist",
    "protected_at_perimeter": "inline_mitigations_already_exist",
    "protected_by_mitigating_control": "inline_mitigations_already_exist",
}

BOM_LINK_PREFIX = "urn:cdx:"


def is_cyclonedx(doc: Any) -> bool:
    """True when ``doc`` declares ``bomFormat: CycloneDX``."""
    return isinstance(doc, dict) and doc.get("bomFormat") == "CycloneDX"


def _components(ctx: ReadContext, doc: dict[str, Any]) -> Iterator[tuple[dict[str, Any], str]]:
    """Every component of a BOM (metadata.component and nested components), with its pointer."""
    stack: list[tuple[Any, str]] = []
    meta = doc.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("component"), dict):
        yield meta["component"], "/metadata/component"
        stack.append((meta["component"].get("components"), "/metadata/component/components"))
    stack.append((doc.get("components"), "/components"))
    while stack:
        value, where = stack.pop()
        for i, raw in enumerate(expect_list(ctx, value, where)):
            w = f"{where}/{i}"
            comp = expect_object(ctx, raw, w)
            yield comp, w
            if comp.get("components") is not None:
                stack.append((comp["components"], w + "/components"))


def component_keys(ctx: ReadContext, doc: dict[str, Any]) -> dict[str, str | None]:
    """``bom-ref`` → purl (else CPE, else None) for every component of a BOM."""
    out: dict[str, str | None] = {}
    for comp, where in _components(ctx, doc):
        ref = expect_str(ctx, comp.get("bom-ref"), where + "/bom-ref")
        if not ref:
            continue
        purl = expect_str(ctx, comp.get("purl"), where + "/purl")
        cpe = expect_str(ctx, comp.get("cpe"), where + "/cpe")
        out[ref] = (purl or cpe or "").strip() or None
    return out


def parse_bom_link(ref: str) -> tuple[str, str | None, str] | None:
    """``urn:cdx:<serial>/<version>#<bom-ref>`` → (``urn:uuid:<serial>``, version, bom-ref), or None."""
    if not ref.startswith(BOM_LINK_PREFIX) or "#" not in ref:
        return None
    head, fragment = ref[len(BOM_LINK_PREFIX) :].split("#", 1)
    serial, _, version = head.partition("/")
    if not serial or not fragment:
        return None
    return f"urn:uuid:{serial}", (version or None), unquote(fragment)


class BomIndex:
    """BOMs supplied with the VEX documents, by serial number and version, for BOM-Link resolution."""

    def __init__(self) -> None:
        self._boms: dict[tuple[str, str | None], dict[str, str | None]] = {}

    def add(self, doc: dict[str, Any], ctx: ReadContext) -> bool:
        """Register a BOM that has a serial number; True when it was registered."""
        serial = doc.get("serialNumber")
        if not isinstance(serial, str) or not serial.startswith("urn:uuid:"):
            return False
        version = doc.get("version")
        keys = component_keys(ctx, doc)
        self._boms[(serial.lower(), str(version) if isinstance(version, int) else None)] = keys
        self._boms.setdefault((serial.lower(), None), keys)
        return True

    def resolve(self, serial: str, version: str | None, bom_ref: str) -> tuple[bool, str | None]:
        """(BOM found?, component key or None)."""
        keys = self._boms.get((serial.lower(), version)) or self._boms.get((serial.lower(), None))
        if keys is None:
            return False, None
        return True, keys.get(bom_ref)

    def __len__(self) -> int:
        return len({id(v) for v in self._boms.values()})


def _resolve(
    ref: str, local: dict[str, str | None], boms: BomIndex, doc_qualifier: str
) -> tuple[str, dict[str, Any] | None]:
    link = parse_bom_link(ref)
    if link is not None:
        serial, version, bom_ref = link
        found, key = boms.resolve(serial, version, bom_ref)
        if key:
            return key, {"bomLink": ref}
        if not found and bom_ref.startswith("pkg:"):
            return bom_ref, {"bomLink": ref, "bomLinkResolved": False}
        return ref, None
    key = local.get(ref)
    if key:
        return key, None
    if ref.startswith("pkg:"):
        return ref, None
    return f"{doc_qualifier}#{quote(ref, safe='-._~:@/+')}", None


class CycloneDxReader:
    """The CycloneDX VEX reader; BOM-Links resolve against ``ctx.boms`` when ``ctx`` is a :class:`VexContext`."""

    format = FORMAT

    def detect(self, doc: Any) -> bool:
        """True when ``doc`` declares ``bomFormat: CycloneDX``."""
        return is_cyclonedx(doc)

    def read(self, doc: Any, ctx: ReadContext) -> ReadResult[Claim]:
        """Turn one parsed CycloneDX document into claims."""
        return read(doc, ctx, ctx.boms if isinstance(ctx, VexContext) else None)


def read(doc: Any, ctx: ReadContext, boms: BomIndex | None = None) -> ReadResult[Claim]:
    """Turn one parsed CycloneDX document into claims (a BOM without vulnerabilities yields none)."""
    root = expect_object(ctx, doc, "", "a JSON object (a CycloneDX document)")
    if not is_cyclonedx(root):
        raise ctx.error("/bomFormat", "must be 'CycloneDX'")
    boms = boms or BomIndex()
    result: ReadResult[Claim] = ReadResult(FORMAT)
    local = component_keys(ctx, root)
    serial = root.get("serialNumber")
    if isinstance(serial, str) and serial.startswith("urn:uuid:"):
        version = root.get("version") if isinstance(root.get("version"), int) else 1
        doc_qualifier = f"urn:cdx:{serial[len('urn:uuid:') :]}/{version}"
    else:
        doc_qualifier = f"cdx:{ctx.digest}"
    meta = root.get("metadata")
    doc_time = normalise_time(meta.get("timestamp")) if isinstance(meta, dict) else None
    for i, raw in enumerate(expect_list(ctx, root.get("vulnerabilities"), "/vulnerabilities")):
        where = pointer("vulnerabilities", i)
        vuln = expect_object(ctx, raw, where)
        vid = expect_str(ctx, vuln.get("id"), where + "/id", required=True)
        assert vid is not None
        vid = vid.strip()
        aliases: list[str] = []
        for k, ref_raw in enumerate(expect_list(ctx, vuln.get("references"), where + "/references")):
            reference = expect_object(ctx, ref_raw, f"{where}/references/{k}")
            alias = expect_str(ctx, reference.get("id"), f"{where}/references/{k}/id", required=True)
            if alias and alias.strip() != vid and alias.strip() not in aliases:
                aliases.append(alias.strip())
        analysis_raw = vuln.get("analysis")
        if analysis_raw is None:
            result.warnings.append(f"{ctx.path}#{where}: no analysis (a finding, not a VEX statement); no claim")
            continue
        analysis = expect_object(ctx, analysis_raw, where + "/analysis")
        state = analysis.get("state")
        if state is None:
            result.warnings.append(f"{ctx.path}#{where}/analysis: no state; no claim")
            continue
        status = STATE_MAP.get(state) if isinstance(state, str) else None
        if status is None:
            raise ctx.error(where + "/analysis/state", f"{state!r} is not a CycloneDX analysis state")
        raw_just = expect_str(ctx, analysis.get("justification"), where + "/analysis/justification")
        justification = JUSTIFICATION_MAP.get(raw_just) if raw_just else None
        if raw_just and justification is None:
            raise ctx.error(where + "/analysis/justification", f"{raw_just!r} is not a CycloneDX justification")
        responses = [
            expect_str(ctx, r, f"{where}/analysis/response/{k}", required=True) or ""
            for k, r in enumerate(expect_list(ctx, analysis.get("response"), where + "/analysis/response"))
        ]
        analysis_detail = (expect_str(ctx, analysis.get("detail"), where + "/analysis/detail") or "").strip()
        detail = join_text(
            [
                analysis_detail,
                f"response: {', '.join(responses)}" if responses else "",
            ]
        )
        issued = (
            normalise_time(analysis.get("lastUpdated"))
            or normalise_time(analysis.get("firstIssued"))
            or doc_time
            or normalise_time(vuln.get("updated"))
            or normalise_time(vuln.get("published"))
        )
        affects = expect_list(ctx, vuln.get("affects"), where + "/affects")
        if not affects:
            result.warnings.append(f"{ctx.path}#{where}: affects nothing; no claim")
        for k, raw_aff in enumerate(affects):
            aw = f"{where}/affects/{k}"
            aff = expect_object(ctx, raw_aff, aw)
            ref = expect_str(ctx, aff.get("ref"), aw + "/ref", required=True)
            assert ref is not None
            key, context = _resolve(ref.strip(), local, boms, doc_qualifier)
            versions = expect_list(ctx, aff.get("versions"), aw + "/versions")
            if versions or (raw_just and raw_just != justification):
                context = dict(context or {})
                if versions:
                    context["versions"] = versions
                if raw_just:
                    context["cyclonedxJustification"] = raw_just
            result.items.append(
                Claim(
                    vulnerability_id=vid,
                    product_key=key,
                    provider_id=ctx.source,
                    status=status,
                    justification=justification if status == NOT_AFFECTED else None,
                    detail=detail,
                    document_digest=ctx.digest,
                    issued_at=issued,
                    aliases=tuple(aliases),
                    document_path=ctx.path,
                    source_format=FORMAT,
                    context=context,
                    impact_statement=(analysis_detail or None) if status == NOT_AFFECTED else None,
                )
            )
    return result
