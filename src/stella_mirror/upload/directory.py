"""``file://DIR``: an export root on this host (a shared volume, an NFS export an rsync daemon or nginx serves).

The target is an export root exactly like the one ``export`` writes: the rules are :class:`~stella_mirror.publish.
ExportRoot`'s (its lock, a staging directory, ``latest`` switched by one rename, pruning to ``keep``). The staged
copy takes each file, in plan order, from a kept export of the target that lists it with the same SHA-256 and
size, hashed to be sure (a hard link), or else from the export being published; it is verified against the
same keys before ``latest`` moves.
``sync --source file://DIR`` reads what ``latest`` names.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from stella_mirror.bundle import store
from stella_mirror.bundle.layout import listed_files
from stella_mirror.bundle.signing import TrustedKeys
from stella_mirror.errors import MalformedBundleError
from stella_mirror.publish import ExportRoot
from stella_mirror.sync.report import Reporter
from stella_mirror.sync.sources.file import FileSource
from stella_mirror.sync.sources.interface import Source, link_or_copy
from stella_mirror.timeutil import utcnow
from stella_mirror.upload.plan import SIGNATURES, Item, Plan, file_sha256, read_indexes
from stella_mirror.upload.target import CURRENT, Outcome, Target, check_not_older


class DirectoryTarget(Target):
    def __init__(self, path: Path, url: str, keys: TrustedKeys) -> None:
        self.url = url
        self.sync_source = url
        self.root = ExportRoot(path)
        self.keys = keys

    def reader(self) -> Source:
        return FileSource(self.root.path, self.url)

    def _reusable(self, plan: Plan) -> dict[tuple[str, int], Path]:
        """Files of the target's kept exports that hold a planned file's bytes: (SHA-256, size) → path. The
        candidates are what the kept exports' indexes list with a wanted digest and size; each is hashed before
        it is trusted (a damaged kept file is simply not reused)."""
        wanted = {(i.sha256, i.size) for i in plan.items}
        sizes = {i.size for i in plan.items}
        found: dict[tuple[str, int], Path] = {}
        active = self.root.active_id()
        ids = sorted(self.root.export_ids(), key=lambda e: e != active)  # the active export's files first
        for export_id in ids:
            export_dir = self.root.path / export_id
            try:
                indexes, docs = read_indexes(export_dir, plan.kind)
                listed = list(listed_files(docs))
            except (OSError, MalformedBundleError):
                continue  # a damaged kept export offers nothing
            candidates: list[tuple[Path, str | None]] = [
                (export_dir / i.rel, i.digest.removeprefix("sha256:")) for i in listed
            ]
            # indexes and detached signatures: nothing lists their digest, so any of a wanted size is hashed
            signed = [i.rel for i in listed if i.signed] + indexes
            candidates += [(export_dir / (rel + s), None) for rel in signed for s in SIGNATURES]
            candidates += [(export_dir / rel, None) for rel in indexes]
            for path, digest in candidates:
                if not path.is_file() or path.is_symlink():
                    continue
                size = path.stat().st_size
                if (digest is not None and (digest, size) not in wanted) or size not in sizes:
                    continue
                key = (file_sha256(path), size)
                if key in wanted:
                    found.setdefault(key, path)
        return found

    def publish(self, plan: Plan, keep: int, reporter: Reporter) -> Outcome:
        out = Outcome(self.url, self.sync_source, plan.export_id, plan.sequence)
        with self.root.locked():
            self.root.clean_leftovers()
            check_not_older(self.reader(), plan, self.url)
            active = self.root.active_id() == plan.export_id
            existing = self.root.path / plan.export_id
            if existing.exists() and not active:
                # Moved into place by a run that stopped before switching latest: its name is needed, its files
                # are reuse material; the rename makes it a leftover the next run removes.
                aside = self.root.path / f".staging-{plan.export_id}-stale-{secrets.token_hex(4)}"
                existing.rename(aside)
                existing = aside
            reuse = self._reusable(plan)
            with self.root.staging(plan.export_id, exist_ok=active) as stage:
                reporter.start_transfer(self.url, plan.total_bytes)
                try:
                    for wave in plan.waves():
                        for item in wave:
                            self._place(item, plan, stage, reuse, out, reporter)
                finally:
                    reporter.end_transfer(self.url)
                store.verify_export_dir(stage, self.keys, utcnow())
                if active:
                    replaced = self.root.repair(stage, plan.export_id)
                    out.files_unchanged = len(plan.items) - replaced
                    if replaced == 0:
                        out.state = CURRENT
                else:
                    before = set(self.root.export_ids())
                    self.root.commit(stage, plan.export_id, keep)
                    out.exports_removed = sorted(before - set(self.root.export_ids()))
            if existing.exists() and existing.name.startswith(".staging-"):
                shutil.rmtree(existing, ignore_errors=True)
        return out

    def _place(
        self,
        item: Item,
        plan: Plan,
        stage: Path,
        reuse: dict[tuple[str, int], Path],
        out: Outcome,
        reporter: Reporter,
    ) -> None:
        dest = stage / item.rel
        have = reuse.get((item.sha256, item.size))
        if have is not None:
            link_or_copy(have, dest)
            out.files_copied += 1
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plan.export_dir / item.rel, dest)
            os.chmod(dest, 0o644)
            out.files_uploaded += 1
            out.bytes_uploaded += item.size
        reporter.advance(self.url, item.size)
