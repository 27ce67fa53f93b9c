"""Pass 3 of the Concelier export, in the reader processes: merge groups → runs of bundle bytes per domain.

The exporter hands out windows of consecutive merge groups in advisory-key order (:mod:`.grouping`).
A group that is one record keeping its own key is final as staged: its canonical bytes and state line
are copied from the staging file. Any other group is folded here: its records are sorted into merge
order (source priority, document id, digest, key) — so the result does not depend on which reader
staged which record — merged under the group key (:func:`.merge.merge`) and staged anew. Each window
becomes, per domain, one :class:`DomainRun`: the advisories' bytes joined by ``,`` as the bundle
carries them, their state-file lines and the domain's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from stella_mirror.concelier.merge import merge
from stella_mirror.concelier.model import Advisory
from stella_mirror.concelier.sources import order_key
from stella_mirror.concelier.staging import StageConfig, StagedEntries, stage_entry

Group = int | list[int]
"""A merge group as a window lists it: a record final as staged, or the records to fold."""


@dataclass
class DomainStats:
    """A domain's advisory count and, per source, advisories and latest ``recordedAt`` (for the manifest)."""

    count: int = 0
    sources: dict[str, list[Any]] = field(default_factory=dict)

    def add_provenance(self, prov: list[list[Any]]) -> None:
        """Count one advisory from its ``[source, recordedAt]`` pairs (each source once per advisory)."""
        self.count += 1
        seen: set[str] = set()
        for source, recorded in prov:
            self._add(source, 0 if source in seen else 1, recorded)
            seen.add(source)

    def absorb(self, other: DomainStats) -> None:
        """Add the statistics of other advisories."""
        self.count += other.count
        for source, (n, last) in other.sources.items():
            self._add(source, n, last)

    def _add(self, source: str, count: int, recorded: str | None) -> None:
        slot = self.sources.get(source)
        if slot is None:
            slot = self.sources[source] = [0, None]
        slot[0] += count
        if recorded and (slot[1] is None or recorded > slot[1]):
            slot[1] = recorded


@dataclass
class DomainRun:
    """What one window contributes to one domain: consecutive advisories in key order."""

    first_key: str
    last_key: str
    count: int
    data: bytes
    """The advisories' canonical bytes joined by ``,``."""
    lines: bytes
    """Their ``[key, digest]`` lines for the delta state file."""
    stats: DomainStats


def fold_group(
    cfg: StageConfig, entries: StagedEntries, key: str, records: list[int]
) -> tuple[bytes, bytes, int, list[list[Any]]]:
    """``(canonical bytes, state line, domain mask, provenance pairs)`` of the advisory of a group."""
    loaded = []
    for g in records:
        meta, blob = entries.meta_and_blob(g)
        loaded.append((meta[3], cast(Advisory, orjson.loads(blob))))
    loaded.sort(key=lambda r: order_key(*r))
    staged = stage_entry(cfg, merge(key, [rec for _, rec in loaded]), 0)
    return staged.blob, staged.state, staged.mask, staged.prov


def fold_window(
    cfg: StageConfig, entries: StagedEntries, keys: list[str], groups: list[Group]
) -> list[DomainRun | None]:
    """The runs of a window of groups, one per domain (None where a domain selects none of them)."""
    n = len(cfg.filters)
    blobs: list[list[Any]] = [[] for _ in range(n)]
    lines: list[list[Any]] = [[] for _ in range(n)]
    stats = [DomainStats() for _ in range(n)]
    firsts: list[str | None] = [None] * n
    lasts = [""] * n
    for key, group in zip(keys, groups, strict=True):
        blob: Any
        line: Any
        if type(group) is int:  # views into the staging map: copied once, by the joins below
            meta, line, blob = entries.parts(group)
            _digest, mask, prov, _priority = orjson.loads(meta)
        else:
            blob, line, mask, prov = fold_group(cfg, entries, key, cast(list[int], group))
        for d in range(n):
            if mask >> d & 1:
                if firsts[d] is None:
                    firsts[d] = key
                lasts[d] = key
                blobs[d].append(blob)
                lines[d].append(line)
                stats[d].add_provenance(prov)
    runs: list[DomainRun | None] = []
    for d in range(n):
        first = firsts[d]
        if first is None:
            runs.append(None)
        else:
            runs.append(DomainRun(first, lasts[d], len(blobs[d]), b",".join(blobs[d]), b"".join(lines[d]), stats[d]))
    entries.release()
    return runs
