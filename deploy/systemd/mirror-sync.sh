#!/usr/bin/env bash
# mirror-sync.sh — one artifact sync cycle for a Compose/systemd mirror host (runbook §4.1, DESIGN S10).
# Installed as /usr/local/bin/mirror-sync.sh and run every 5 minutes by stella-mirror-sync.timer.
#
# For each product line (concelier, excititor):
#   1. aws s3 sync s3://<bucket>/<product>/latest  <staging>/<product>  --delete --size-only
#   2. stella-mirror verify <staging>/<product> --key <trusted key>...   (signatures, digests, expiry, sequence)
#   3. only if 2 passed: copy the verified staging tree over the served tree (<data>/<product>, mounted
#      read-only into the containers) with rsync --delay-updates --delete-after, so new files appear
#      together at the end of the transfer and nothing unverified is ever served.
# A product whose download or verification fails keeps serving its previous export; the script exits
# non-zero so the unit is marked failed (alert when the last success is older than 15 min, runbook §7).
#
# Future work: a built-in `stella-mirror sync` that fetches into an ExportRoot staging directory and
# publishes with its atomic `latest` switch (the exporters' publish path). Step 3 here is the closest a
# shell script gets: readers may briefly see a mix of old and new files of the same export root, but
# every file they see has been verified.
#
# Configuration (environment; credentials come from the unit's EnvironmentFile, never from this file):
#   MIRROR_SYNC_SOURCE    s3://mirror-stellaops                  bucket prefix holding <product>/latest
#   MIRROR_DATA_DIR       /opt/stellaops/mirror-data             served trees: <dir>/concelier, <dir>/excititor
#   MIRROR_STAGING_DIR    /opt/stellaops/mirror-staging          download + verification area
#   MIRROR_VERIFY_KEYS    /etc/stella-mirror/mirror-key.pub      trusted public keys (PEM/JWKS), space-separated
#   MIRROR_PRODUCTS       "concelier excititor"
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an instance role) for the AWS CLI
set -euo pipefail

source_prefix=${MIRROR_SYNC_SOURCE:-s3://mirror-stellaops}
data_dir=${MIRROR_DATA_DIR:-/opt/stellaops/mirror-data}
staging_dir=${MIRROR_STAGING_DIR:-/opt/stellaops/mirror-staging}
read -r -a keys <<<"${MIRROR_VERIFY_KEYS:-/etc/stella-mirror/mirror-key.pub}"
read -r -a products <<<"${MIRROR_PRODUCTS:-concelier excititor}"
stella_mirror=${STELLA_MIRROR:-stella-mirror}
aws=${AWS_CLI:-aws}

log() { printf '%s mirror-sync: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

key_args=()
for key in "${keys[@]}"; do
  [[ -r $key ]] || { log "trusted key $key is not readable (MIRROR_VERIFY_KEYS)"; exit 2; }
  key_args+=(--key "$key")
done

mkdir -p "$staging_dir" "$data_dir"
# One cycle at a time, even when started by hand while the timer runs.
exec 9>"$staging_dir/.mirror-sync.lock"
if ! flock -n 9; then
  log "another sync is running; skipping this cycle"
  exit 0
fi

failed=0
for product in "${products[@]}"; do
  stage="$staging_dir/$product"
  target="$data_dir/$product"
  mkdir -p "$stage" "$target"
  log "$product: syncing $source_prefix/$product/latest -> $stage"
  if ! "$aws" s3 sync "$source_prefix/$product/latest" "$stage" --delete --size-only --only-show-errors; then
    log "$product: download failed; still serving the previous export"
    failed=1
    continue
  fi
  if ! "$stella_mirror" verify "$stage" "${key_args[@]}"; then
    log "$product: staging tree failed verification; still serving the previous export"
    failed=1
    continue
  fi
  rsync -a --delete-after --delay-updates "$stage/" "$target/"
  log "$product: published verified export to $target"
done
exit "$failed"
