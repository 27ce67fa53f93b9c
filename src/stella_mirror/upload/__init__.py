"""``stella-mirror publish EXPORT_ROOT --to TARGET``: put a verified export where mirrors sync from.

The export is verified against pinned keys first (``bundle.store``); nothing is written to the target before
that succeeds. Then each target applies the same order (:mod:`stella_mirror.upload.plan`): payloads and their
signatures, manifests, per-domain indexes, the top-level index last, and old exports removed after that — so a
reader of the target never finds an index naming a file that is not there yet. Files are compared by SHA-256,
never by size: only content shown identical is skipped.

Targets, one module each: ``s3://bucket/prefix`` (:mod:`.s3`), ``file://DIR`` (:mod:`.directory`),
``rsync://host/module/path`` and ``host:path`` (:mod:`.rsync`). What each writes is exactly what the sync's
source of the same scheme reads (docs/publish.md).
"""
