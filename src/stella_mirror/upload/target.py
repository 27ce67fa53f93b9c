"""The one interface every publish target implements, and the rules they share (rollback, outcome)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import orjson

from stella_mirror.errors import ConfigError, RollbackError
from stella_mirror.sync.report import Reporter
from stella_mirror.sync.sources.interface import Source
from stella_mirror.upload.plan import Plan

PUBLISHED, CURRENT = "published", "current"


@dataclass
class Outcome:
    """What a publish did to its target."""

    target: str
    sync_source: str
    """The URL ``stella-mirror sync --source`` reads this export from."""
    export_id: str
    sequence: int
    state: str = PUBLISHED
    """``published``, or ``current`` when the target already served this export complete (nothing written)."""
    files_uploaded: int = 0
    bytes_uploaded: int = 0
    files_copied: int = 0
    """Files the target copied or linked from what it already held (no bytes sent)."""
    files_unchanged: int = 0
    files_removed: int = 0
    exports_removed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "syncSource": self.sync_source,
            "exportId": self.export_id,
            "sequence": self.sequence,
            "state": self.state,
            "filesUploaded": self.files_uploaded,
            "bytesUploaded": self.bytes_uploaded,
            "filesCopied": self.files_copied,
            "filesUnchanged": self.files_unchanged,
            "filesRemoved": self.files_removed,
            "exportsRemoved": self.exports_removed,
        }


class Target(ABC):
    """Where exports are published: an export root that mirrors sync from."""

    url: str
    """The target URL without credentials: safe to print."""
    sync_source: str
    """What ``sync --source`` takes to read the export this target serves."""

    @abstractmethod
    def reader(self) -> Source:
        """The sync's own source over what this target serves (to read its current index)."""

    @abstractmethod
    def publish(self, plan: Plan, keep: int, reporter: Reporter) -> Outcome:
        """Put ``plan``'s export in place in the safe order, make it the active export, keep ``keep`` exports."""


def check_not_older(source: Source, plan: Plan, where: str) -> None:
    """Refuse to replace a newer export (B2 on the publisher side): any index the target serves with a sequence
    above the plan's, or the same sequence under another export id. The target's indexes are read as they are
    (a half-published earlier run may have left them disagreeing); unreadable ones say nothing."""
    try:
        source.probe(plan.kind, None)
        indexes = source.index_files(plan.kind)
    except ConfigError as exc:  # the sync's source names its own option; here it is the target's
        raise ConfigError("--to", exc.reason) from None
    for rel, data in sorted(indexes.items()):
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(doc, dict):
            continue
        export_id, sequence = doc.get("exportId"), doc.get("sequence")
        if not isinstance(sequence, int) or isinstance(sequence, bool):
            continue
        if sequence > plan.sequence or (sequence == plan.sequence and export_id != plan.export_id):
            raise RollbackError(
                f"{where}/{rel}",
                f"the target serves export {export_id} sequence {sequence}: not older than export "
                f"{plan.export_id} sequence {plan.sequence}",
            )
