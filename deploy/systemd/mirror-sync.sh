#!/usr/bin/env bash
# mirror-sync.sh — one artifact sync cycle (runbook §4, DESIGN S10/S12). Installed as
# /usr/local/bin/mirror-sync.sh and run every 5 minutes by stella-mirror-sync.timer (compose host), or by
# the mirror-sync CronJob of deploy/helm/stellaops (which downloads in an init container: MIRROR_SYNC_SOURCE=).
#
# For each product line (concelier, excititor):
#   1. aws s3 sync <source>/<product>/latest  <staging>/<product>  --delete --size-only
#      (the bucket's latest/ prefix holds one complete signed export)
#      (a tree that then fails step 2 is downloaded once more in full: --size-only misses same-size changes)
#   2. stella-mirror verify <staging>/<product> --key <trusted key>... --min-sequence <last published>
#      signatures, digests, sizes, expiry; an older sequence than the one being served is refused
#   3. only if 2 passed: copy it to <data>/<product>/<exportId> and switch the served export root's
#      `latest` symlink to it atomically (symlink to a temp name + rename, as the exporters publish), then
#      prune to the newest MIRROR_KEEP exports (older ones stay for requests pinned with @<exportId>).
# A product whose download or verification fails keeps serving its previous export; the script exits 1 so
# the unit is marked failed (alert when the last success is older than 15 minutes, runbook §7).
# <staging>/<product>.last-success and .sequence are the job metadata (S12).
#
# Future work: a built-in `stella-mirror sync` (S3 and rsync-share sources) doing the same through the
# exporters' ExportRoot staging/commit code instead of shell.
#
# Environment (credentials come from the unit's EnvironmentFile or a Kubernetes secret, never this file):
#   MIRROR_SYNC_SOURCE    s3://mirror-stellaops            bucket prefix holding <product>/latest;
#                                                          empty: staging was filled by someone else
#   MIRROR_DATA_DIR       /opt/stellaops/mirror-data       served export roots: <dir>/concelier, <dir>/excititor
#   MIRROR_STAGING_DIR    /opt/stellaops/mirror-staging    download + verification area (same filesystem
#                                                          as MIRROR_DATA_DIR keeps the copy cheap)
#   MIRROR_VERIFY_KEYS    /etc/stella-mirror/mirror-key.pub   trusted public keys (PEM/JWKS), space-separated
#   MIRROR_PRODUCTS       "concelier excititor"
#   MIRROR_KEEP           3                                exports kept per product
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or an instance role) for the AWS CLI
set -euo pipefail

source_prefix=${MIRROR_SYNC_SOURCE-s3://mirror-stellaops}
data_dir=${MIRROR_DATA_DIR:-/opt/stellaops/mirror-data}
staging_dir=${MIRROR_STAGING_DIR:-/opt/stellaops/mirror-staging}
read -r -a keys <<<"${MIRROR_VERIFY_KEYS:-/etc/stella-mirror/mirror-key.pub}"
read -r -a products <<<"${MIRROR_PRODUCTS:-concelier excititor}"
keep=${MIRROR_KEEP:-3}
stella_mirror=${STELLA_MIRROR:-stella-mirror}
aws=${AWS_CLI:-aws}

log() { printf '%s mirror-sync: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

key_args=()
for key in "${keys[@]}"; do
  [[ -r $key ]] || { log "trusted key $key is not readable (MIRROR_VERIFY_KEYS)"; exit 2; }
  key_args+=(--key "$key")
done
[[ $keep =~ ^[1-9][0-9]*$ ]] || { log "MIRROR_KEEP must be a positive integer"; exit 2; }

mkdir -p "$staging_dir" "$data_dir"
# One cycle at a time, even when started by hand while the timer runs.
exec 9>"$staging_dir/.mirror-sync.lock"
if ! flock -n 9; then
  log "another sync is running; skipping this cycle"
  exit 0
fi

# publish <product> <stage> <target root> <export id>: copy, then switch latest atomically, then prune.
publish() {
  local product=$1 stage=$2 root=$3 id=$4
  if [[ "$(readlink "$root/latest" 2>/dev/null || true)" == "$id" && -d "$root/$id" ]]; then
    log "$product: $id is already being served"
    return 0
  fi
  local incoming="$root/.incoming-$id"
  rm -rf "$incoming"
  mkdir -p "$incoming"
  cp -a "$stage/." "$incoming/"
  rm -rf "${root:?}/$id"                # not live: latest points elsewhere
  mv -T "$incoming" "$root/$id"
  touch "$root/$id"                     # mtime = publish time: the pruning order below
  ln -sfn "$id" "$root/.latest-tmp"
  mv -Tf "$root/.latest-tmp" "$root/latest"
  log "$product: now serving $id"
  # Prune: newest $keep export directories stay (the live one always).
  local old
  while IFS= read -r old; do
    [[ -n $old && $old != "$id" ]] && rm -rf "${root:?}/$old" && log "$product: pruned $old"
  done < <(find "$root" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %f\n' | sort -rn \
             | tail -n +"$((keep + 1))" | cut -d' ' -f2-)
}

fetch() {  # fetch <product> <stage>
  log "$1: syncing $source_prefix/$1/latest -> $2"
  "$aws" s3 sync "$source_prefix/$1/latest" "$2" --delete --size-only --only-show-errors
}

failed=0
for product in "${products[@]}"; do
  stage="$staging_dir/$product"
  root="$data_dir/$product"
  mkdir -p "$stage" "$root"
  if [[ -n $source_prefix ]] && ! fetch "$product" "$stage"; then
    log "$product: download failed; still serving the previous export"
    failed=1
    continue
  fi
  min_seq=()
  if [[ -s "$staging_dir/$product.sequence" ]]; then
    min_seq=(--min-sequence "$(cat "$staging_dir/$product.sequence")")
  fi
  verdict=$("$stella_mirror" verify "$stage" "${key_args[@]}" "${min_seq[@]}" --json) || verdict=""
  # --size-only skips a changed file whose size did not change (index.json of the next sequence often
  # has the same length), so a failed verification gets one clean full download before giving up.
  if [[ -z $verdict && -n $source_prefix ]]; then
    log "$product: staging tree does not verify; downloading it again in full"
    rm -rf "$stage" && mkdir -p "$stage"
    if fetch "$product" "$stage"; then
      verdict=$("$stella_mirror" verify "$stage" "${key_args[@]}" "${min_seq[@]}" --json) || verdict=""
    fi
  fi
  if [[ -z $verdict ]]; then
    # Downloaded by someone else (the CronJob's init container): make its next download a full one.
    [[ -z $source_prefix ]] && rm -rf "$stage"
    log "$product: staging tree failed verification; still serving the previous export"
    failed=1
    continue
  fi
  id=$(sed -n 's/.*"exportId":"\([^"]*\)".*/\1/p' <<<"$verdict")
  sequence=$(sed -n 's/.*"sequence":\([0-9]*\).*/\1/p' <<<"$verdict")
  if [[ ! $id =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$ || $id == latest ]]; then
    log "$product: verified export has an unusable exportId '$id'"
    failed=1
    continue
  fi
  publish "$product" "$stage" "$root" "$id"
  printf '%s\n' "$sequence" >"$staging_dir/$product.sequence"
  date -u +%Y-%m-%dT%H:%M:%SZ >"$staging_dir/$product.last-success"
done
exit "$failed"
