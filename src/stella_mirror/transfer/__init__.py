"""Fetching payloads cheaply and safely, for ``pull`` and the sync: deltas by byte range against local copies,
precompressed variants checked before and after decompression. Pure logic lives in ``bundle.chunks``."""
