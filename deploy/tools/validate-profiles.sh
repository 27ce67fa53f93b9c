#!/usr/bin/env bash
# Validate the mirror deployment profiles without docker or helm (runbook §3.1 step 4):
#   deploy/tools/validate-profiles.sh [DEPLOY_DIR]
# compose file + env example (through `stella-mirror config check`), nginx gateway (`nginx -t` on a temp
# copy), Helm chart + values-mirror.yaml, systemd units and mirror-sync.sh. Exits 1 naming each bad file.
# Needs python3 with stella-mirror and its `validate` extra installed (pip install -e '.[validate]': kubernetes-validate,
# check-jsonschema; set PYTHON to pick the interpreter), nginx, openssl.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
deploy_dir=${1:-$(dirname "$here")}
python=${PYTHON:-python3}
if ! "$python" -c 'import yaml, stella_mirror, kubernetes_validate' 2>/dev/null; then
  echo "validate-profiles: $python cannot import stella_mirror and kubernetes_validate (pip install -e '.[validate]' or set PYTHON)" >&2
  exit 2
fi
exec "$python" "$here/validate_profiles.py" "$deploy_dir"
