"""Consensus per (vulnerability, product), as DESIGN §4 states it.

Rules (``RULES`` names this version of them; it is part of the policy revision):

1. Each provider counts once per pair: its latest claim by ``issuedAt`` (a claim without a time is
   the oldest); at equal times the less safe status wins, so the choice never depends on file order.
   Superseded claims stay in the record with ``counted: false, reason: superseded``.
2. A ``not_affected`` claim counts only when justified, by a justification label or an impact
   statement (OpenVEX ``impact_statement``, CSAF ``threats[category=impact]``, CycloneDX
   ``analysis.detail``); otherwise ``reason: unjustified``.
3. The consensus status is the one with the greatest total provider weight; ties go to the less safe
   status (affected > under_investigation > fixed > not_affected). With nothing counted the status is
   ``under_investigation`` (``resolution: no-counted-claims``): no provider gave usable evidence.
4. Every claim that counted with another status is listed in ``conflicts``.
5. Aliases fold: ids that any document declares as aliases of each other form one vulnerability,
   keyed by its CVE id when there is one (else the smallest id), the others listed in ``aliases``.

Pairs are (vulnerability, *product*): an OpenVEX statement about product P with subcomponents S is a
claim about P, and the subcomponents are listed in the record (``subcomponents``, the union over the
pair's claims) as where the vulnerability originates, never as products of their own.

Weights are summed as integers (millionths) so that exact ties are exact, not float accidents.
The policy revision is ``sha256`` over the canonical list of providers (id, kind, weight) and the rules
version: consumers see it change when, and only when, the rules or the trust settings change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from stella_mirror.bundle import canonical
from stella_mirror.bundle.digest import sha256_bytes
from stella_mirror.excititor.claims import (
    NOT_AFFECTED,
    SAFETY_RANK,
    STATUSES,
    UNDER_INVESTIGATION,
    Claim,
    time_key,
)
from stella_mirror.excititor.config import Filters, Provider

RULES = "stella-mirror/excititor-consensus/v2"
_UNITS = 1_000_000

PairKey = tuple[str, str]


def weight_units(weight: float) -> int:
    """A weight as an integer number of millionths."""
    return round(weight * _UNITS)


def policy_revision(providers: Iterable[Provider]) -> str:
    """``sha256:<hex>`` of the canonical provider trust settings and the rules version."""
    doc = {
        "rules": RULES,
        "tieOrder": list(STATUSES),
        "providers": sorted(
            ({"id": p.id, "kind": p.kind, "weight": weight_units(p.weight) / _UNITS} for p in providers),
            key=lambda p: str(p["id"]),
        ),
    }
    return sha256_bytes(canonical.dumps(doc))


class AliasFolder:
    """Union-find over vulnerability ids; :meth:`key` gives a group's key (CVE preferred)."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._keys: dict[str, str] | None = None
        self._members: dict[str, list[str]] = {}

    def _find(self, x: str) -> str:
        parent = self._parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(x, x) != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, ids: Iterable[str]) -> None:
        """Declare all ``ids`` names of the same vulnerability."""
        it = iter(ids)
        first = next(it, None)
        if first is None:
            return
        self._keys = None
        a = self._find(first)
        self._parent.setdefault(a, a)
        for other in it:
            b = self._find(other)
            if a != b:
                self._parent[b] = a

    def _build(self) -> dict[str, str]:
        groups: dict[str, list[str]] = {}
        for x in list(self._parent):
            groups.setdefault(self._find(x), []).append(x)
        keys: dict[str, str] = {}
        self._members = {}
        for members in groups.values():
            members.sort()
            cves = [m for m in members if m.upper().startswith("CVE-")]
            key = cves[0] if cves else members[0]
            self._members[key] = members
            for m in members:
                keys[m] = key
        self._keys = keys
        return keys

    def key(self, vid: str) -> str:
        """The folded key of ``vid`` (itself when it has no aliases)."""
        keys = self._keys if self._keys is not None else self._build()
        return keys.get(vid, vid)

    def aliases(self, key: str) -> list[str]:
        """The other ids folded into ``key``, sorted."""
        if self._keys is None:
            self._build()
        return [m for m in self._members.get(key, ()) if m != key]


def _preference(c: Claim) -> tuple[str, int, str, str, str]:
    """Larger = preferred as a provider's effective claim (latest; then less safe; then stable)."""
    return (time_key(c.issued_at), -SAFETY_RANK[c.status], c.justification or "", c.document_digest, c.detail or "")


class Consensus:
    """Claims grouped by (folded vulnerability key, product key), ready to be decided pair by pair."""

    def __init__(self, claims: Iterable[Claim], providers: Iterable[Provider]) -> None:
        self.providers: dict[str, Provider] = {p.id: p for p in providers}
        self.policy_revision = policy_revision(self.providers.values())
        self._weights = {pid: weight_units(p.weight) for pid, p in self.providers.items()}
        self.folder = AliasFolder()
        pending: list[Claim] = []
        for c in claims:
            if c.provider_id not in self.providers:
                continue
            if c.aliases:
                self.folder.union((c.vulnerability_id, *c.aliases))
            pending.append(c)
        groups: dict[PairKey, list[Claim]] = {}
        fold = self.folder.key
        for c in pending:
            pair = (fold(c.vulnerability_id), c.product_key)
            bucket = groups.get(pair)
            if bucket is None:
                groups[pair] = [c]
            else:
                bucket.append(c)
        self.groups = groups

    def __len__(self) -> int:
        return len(self.groups)

    def keys(self, filters: Filters | None = None) -> list[PairKey]:
        """Pair keys passing ``filters`` (vulnerability and product filters), sorted."""
        keys: Iterable[PairKey] = self.groups
        if filters is not None and (filters.vulnerabilities or filters.product_types or filters.product_namespaces):
            keys = [
                k
                for k in keys
                if filters.product_matches(k[1]) and filters.vulnerability_matches([k[0], *self.folder.aliases(k[0])])
            ]
        return sorted(keys)

    def source_providers(self, keys: Iterable[PairKey]) -> list[str]:
        """Providers with at least one claim among ``keys``."""
        found: set[str] = set()
        for k in keys:
            found.update(c.provider_id for c in self.groups[k])
            if len(found) == len(self.providers):
                break
        return sorted(found)

    def input_digest(self, keys: Iterable[PairKey]) -> tuple[str, str | None]:
        """(``sha256:<hex>`` over the policy revision and the digests of the documents whose claims fall
        under ``keys``; the latest ``issuedAt`` among those claims). Both depend only on the input, so
        an artifact built from them is the same bytes for the same input."""
        digests: set[str] = set()
        latest: str | None = None
        for k in keys:
            for c in self.groups[k]:
                digests.add(c.document_digest)
                if c.issued_at and (latest is None or time_key(c.issued_at) > time_key(latest)):
                    latest = c.issued_at
        doc = {"policyRevision": self.policy_revision, "documents": sorted(digests)}
        return sha256_bytes(canonical.dumps(doc)), latest

    def records(self, keys: Iterable[PairKey]) -> Iterator[dict[str, Any]]:
        """Consensus records for ``keys``, in the given order."""
        for k in keys:
            yield self.record(k)

    def record(self, pair: PairKey) -> dict[str, Any]:
        """Decide one pair."""
        vkey, product = pair
        claims = self.groups[pair]
        effective: dict[str, Claim] = {}
        for c in claims:
            cur = effective.get(c.provider_id)
            if cur is None or _preference(c) > _preference(cur):
                effective[c.provider_id] = c
        totals: dict[str, int] = {}
        counted: list[Claim] = []
        for c in effective.values():
            if c.counts:
                totals[c.status] = totals.get(c.status, 0) + self._weights[c.provider_id]
                counted.append(c)
        if not counted:
            status, resolution = UNDER_INVESTIGATION, "no-counted-claims"
        else:
            status = min(totals, key=lambda s: (-totals[s], SAFETY_RANK[s]))
            top = totals[status]
            if len(counted) == 1:
                resolution = "single"
            elif len(totals) == 1:
                resolution = "unanimous"
            elif sum(1 for v in totals.values() if v == top) > 1:
                resolution = "tie"
            else:
                resolution = "weighted"
        backers = sorted(
            (c for c in counted if c.status == status),
            key=lambda c: (-self._weights[c.provider_id], c.provider_id),
        )
        justification = next((c.justification for c in backers if c.justification), None)
        if status != NOT_AFFECTED:
            justification = None
        impact = next((c.impact_statement for c in backers if c.impact_statement), None)
        if status != NOT_AFFECTED:
            impact = None
        detail = next((c.detail for c in backers if c.detail), None)
        subcomponents = sorted({s for c in claims if c.context for s in c.context.get("subcomponents", ())})
        entries: list[dict[str, Any]] = []
        listed: set[tuple[str, str, str]] = set()
        for c in sorted(claims, key=lambda c: (c.provider_id, _preference(c)), reverse=False):
            is_effective = effective[c.provider_id] is c
            ident = (c.provider_id, c.document_digest, c.status)
            if not is_effective and ident in listed:
                continue  # the same statement repeated in one document: listed once
            listed.add(ident)
            entries.append(self._claim_entry(c, is_effective))
        conflicts = [
            {
                "providerId": c.provider_id,
                "status": c.status,
                "justification": c.justification,
                "weight": self._weights[c.provider_id] / _UNITS,
            }
            for c in sorted(counted, key=lambda c: c.provider_id)
            if c.status != status
        ]
        times = [c.issued_at for c in effective.values() if c.issued_at]
        return {
            "vulnerabilityId": vkey,
            "aliases": self.folder.aliases(vkey),
            "productKey": product,
            "status": status,
            "subcomponents": subcomponents,
            "justification": justification,
            "impactStatement": impact,
            "detail": detail,
            "resolution": resolution,
            "weights": {s: totals[s] / _UNITS for s in STATUSES if s in totals},
            "lastUpdated": max(times, key=time_key) if times else None,
            "claims": entries,
            "conflicts": conflicts,
        }

    def _claim_entry(self, c: Claim, is_effective: bool) -> dict[str, Any]:
        provider = self.providers[c.provider_id]
        reason = None
        if not is_effective:
            reason = "superseded"
        elif not c.counts:
            reason = "unjustified"
        entry: dict[str, Any] = {
            "providerId": c.provider_id,
            "providerKind": provider.kind,
            "weight": self._weights[c.provider_id] / _UNITS,
            "vulnerabilityId": c.vulnerability_id,
            "status": c.status,
            "justification": c.justification,
            "impactStatement": c.impact_statement,
            "detail": c.detail,
            "documentDigest": c.document_digest,
            "issuedAt": c.issued_at,
            "counted": is_effective and c.counts,
            "reason": reason,
        }
        if c.context:
            entry["context"] = c.context
        return entry
