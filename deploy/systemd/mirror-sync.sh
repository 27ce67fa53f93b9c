#!/bin/sh
# Kept for installations that call it (runbook §4.1): the sync is `stella-mirror sync` now (docs/sync.md).
exec "${STELLA_MIRROR:-stella-mirror}" sync --config "${MIRROR_SYNC_CONFIG:-/etc/stella-mirror/mirror-sync.yaml}" "$@"
