"""The VEX claim: one provider's statement about one vulnerability in one product (DESIGN §4).

Every reader (OpenVEX, CSAF, CycloneDX) turns documents into :class:`Claim` objects; consensus and
the exports only ever see claims. Statuses and justifications are normalised to the OpenVEX
vocabulary, so one export format can carry claims from all three sources; the source's own word is
kept in ``context`` where it differed.

Product keys
    A purl where the document gives one, else a CPE, else an identifier qualified by the document
    (``csaf:<tracking id>:<product_id>``, a CycloneDX BOM-Link ``urn:cdx:<serial>/<version>#<ref>``,
    or ``cdx:sha256:<document digest>#<ref>`` for a BOM without serial number), so two documents never
    collide on a local name like ``CSAFPID-0001``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

AFFECTED = "affected"
UNDER_INVESTIGATION = "under_investigation"
FIXED = "fixed"
NOT_AFFECTED = "not_affected"

STATUSES: tuple[str, ...] = (AFFECTED, UNDER_INVESTIGATION, FIXED, NOT_AFFECTED)
"""All statuses, least safe first: the order in which ties are resolved."""

SAFETY_RANK: dict[str, int] = {s: i for i, s in enumerate(STATUSES)}
"""Lower rank = less safe; a tie in weight goes to the lowest rank."""

JUSTIFICATIONS: frozenset[str] = frozenset(
    {
        "component_not_present",
        "vulnerable_code_not_present",
        "vulnerable_code_not_in_execute_path",
        "vulnerable_code_cannot_be_controlled_by_adversary",
        "inline_mitigations_already_exist",
    }
)
"""The OpenVEX (and CSAF flag label) justification vocabulary."""

_VULN_ID = re.compile(r"^[A-Z][A-Z0-9]*-[A-Za-z0-9][A-Za-z0-9._:-]*$")


def looks_like_vulnerability_id(value: str) -> bool:
    """True for ids such as ``CVE-2021-44228``, ``GHSA-xxxx-xxxx-xxxx`` or ``SNYK-DEBIAN12-…``.

    Used to decide which document-supplied identifiers are aliases worth folding on (a Bugzilla URL
    is an identifier, but folding on it would only add noise).
    """
    return bool(_VULN_ID.match(value))


def normalise_time(value: Any) -> str | None:
    """An RFC 3339 timestamp in UTC with a ``Z`` (microseconds kept when non-zero), or None.

    Sources write offsets and nanoseconds (``2023-12-04T21:55:19.945014473-06:00``); claims compare
    by time, so every claim carries the same form.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")


def time_key(value: str | None) -> str:
    """A string that sorts claims by time: missing times first, ``…:SSZ`` and ``…:SS.ffffffZ`` comparable."""
    if value is None:
        return ""
    if len(value) == 20:  # YYYY-MM-DDTHH:MM:SSZ
        return value[:19] + ".000000Z"
    return value


@dataclass(slots=True, eq=False)
class Claim:
    """One VEX claim. ``context`` holds source-specific extras (subcomponents, platform, versions…)."""

    vulnerability_id: str
    product_key: str
    provider_id: str
    status: str
    justification: str | None
    detail: str | None
    document_digest: str
    issued_at: str | None
    aliases: tuple[str, ...] = ()
    document_path: str = ""
    source_format: str = ""
    context: dict[str, Any] | None = None
    impact_statement: str | None = None
    """For ``not_affected``: the source's statement of why the product is not affected (OpenVEX
    ``impact_statement``, CSAF ``threats[category=impact].details``, CycloneDX ``analysis.detail``)."""

    def as_record(self) -> dict[str, Any]:
        """The claim as written to the ``claims`` view (one canonical JSON object)."""
        record: dict[str, Any] = {
            "vulnerabilityId": self.vulnerability_id,
            "aliases": sorted(self.aliases),
            "productKey": self.product_key,
            "providerId": self.provider_id,
            "status": self.status,
            "justification": self.justification,
            "impactStatement": self.impact_statement,
            "detail": self.detail,
            "documentDigest": self.document_digest,
            "issuedAt": self.issued_at,
            "source": {"format": self.source_format, "path": self.document_path},
        }
        if self.context:
            record["context"] = self.context
        return record

    @property
    def counts(self) -> bool:
        """A ``not_affected`` claim counts in consensus only when justified: by a justification label or
        by an impact statement (what OpenVEX and CSAF 2.0 accept instead of a label)."""
        return self.status != NOT_AFFECTED or bool(self.justification) or bool(self.impact_statement)


def purl_type(product_key: str) -> str | None:
    """``pypi`` for ``pkg:pypi/requests@2.0``; None when the key is not a purl."""
    if not product_key.startswith("pkg:"):
        return None
    rest = product_key[4:].lstrip("/")
    head = rest.split("/", 1)[0]
    return head.lower() or None


def purl_namespace(product_key: str) -> str | None:
    """``wolfi`` for ``pkg:apk/wolfi/bash@1``; ``""`` for a purl without namespace; None for non-purls."""
    if purl_type(product_key) is None:
        return None
    rest = product_key[4:].lstrip("/").split("?", 1)[0].split("#", 1)[0]
    parts = rest.split("/")
    return "/".join(parts[1:-1])
