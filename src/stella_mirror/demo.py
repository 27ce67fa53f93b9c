"""``stella-mirror demo``: a complete, signed mirror of the built-in samples, served on 127.0.0.1.

Steps: generate a signing key; export the packaged sample advisories (Concelier: OSV + CSAF) and VEX
documents (Excititor) into a fresh directory; write an htpasswd file (bcrypt ``$2y$``, as ``htpasswd -B``
makes) with a random password; write the server configuration; print the runbook §6 smoke commands
adapted to the demo (``curl`` + ``jq``; ``openssl`` instead of ``cosign``; ``stella-mirror verify``); serve.

Domains: ``primary`` requires authentication, ``community`` is open (credentials sent to it are still
checked, as on a real mirror). Every printed command runs as printed (a test runs them with bash).
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import yaml

from stella_mirror.bundle.keyfiles import PUBLIC_NAME, generate_keypair
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.config import MirrorConfig, load_config
from stella_mirror.errors import ConfigError

USER = "demo"
SMOKE_BEGIN = "# ---- smoke tests (runbook §6, adapted to the demo) ----"
SMOKE_END = "# ---- end of smoke tests ----"


@dataclass
class DemoMirror:
    """What :func:`build_demo` produced."""

    directory: Path
    config_path: Path
    password: str
    notes: list[str]


def _htpasswd_line(user: str, password: str) -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"{user}:$2y${hashed[4:]}\n"  # htpasswd -B writes the $2y$ prefix; the hash is the same


def _export_concelier(root: Path, key: SigningKey, notes: list[str]) -> None:
    from stella_mirror.concelier.config import display_name, sample_sources
    from stella_mirror.concelier.export import DomainSpec, ExportRequest, run_export

    sources = sample_sources()
    domains = [DomainSpec(d, display_name(d)) for d in ("primary", "community")]
    summary = run_export(ExportRequest(sources=sources, domains=domains, key=key, out=root, strict=False))
    notes.append(
        f"Concelier: {summary.advisories} advisories from {summary.documents_read} sample documents, "
        f"export {summary.export_id}"
    )


def _export_excititor(root: Path, key: SigningKey, notes: list[str]) -> None:
    from stella_mirror.excititor.export import export_samples

    summary = export_samples(root, key)
    notes.append(f"Excititor: {len(summary.artifacts)} signed VEX exports, export {summary.export_id}")


def build_demo(directory: Path, port: int) -> DemoMirror:
    """Create keys, exports, credentials and configuration under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    key = generate_keypair(directory / "keys", force=True)
    _export_concelier(directory / "concelier", key, notes)
    _export_excititor(directory / "excititor", key, notes)
    password = secrets.token_urlsafe(12)
    htpasswd = directory / "mirror.htpasswd"
    htpasswd.write_text(_htpasswd_line(USER, password), encoding="ascii")
    os.chmod(htpasswd, 0o600)

    def domains(primary_auth: bool) -> list[dict[str, object]]:
        return [
            {
                "id": "primary",
                "displayName": "Primary",
                "requireAuthentication": primary_auth,
                "htpasswd": str(htpasswd),
                "maxDownloadRequestsPerHour": 1200,
            },
            {
                "id": "community",
                "displayName": "Community",
                "requireAuthentication": False,
                "htpasswd": str(htpasswd),
                "maxDownloadRequestsPerHour": 600,
            },
        ]

    config = {
        "concelier": {
            "mirror": {
                "enabled": True,
                "exportRoot": str(directory / "concelier"),
                "requireAuthentication": True,
                "htpasswd": str(htpasswd),
                "maxIndexRequestsPerHour": 3600,
                "domains": domains(True),
            }
        },
        "excititor": {
            "artifacts": {"filesystem": {"root": str(directory / "excititor")}},
            "mirror": {
                "enabled": True,
                "htpasswd": str(htpasswd),
                "maxIndexRequestsPerHour": 3600,
                "domains": domains(True),
            },
        },
        "mirror": {
            "host": "127.0.0.1",
            "port": port,
            "accessLog": str(directory / "access.log"),
            "pidFile": str(directory / "server.pid"),
        },
    }
    config_path = directory / "mirror.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return DemoMirror(directory, config_path, password, notes)


def smoke_commands(demo: DemoMirror, port: int) -> str:
    """The runbook §6 smoke tests, adapted: they run as printed (bash, curl, jq, openssl, sha256sum)."""
    d = demo.directory
    q = shlex.quote
    creds = q(f"{USER}:{demo.password}")
    pub = q(str(d / "keys" / PUBLIC_NAME))
    return f"""{SMOKE_BEGIN}
export MIRROR=http://127.0.0.1:{port}
export PRIMARY_CREDS={creds}
export COMMUNITY_CREDS={creds}
mkdir -p {q(str(d / "smoke"))} && cd {q(str(d / "smoke"))}

# Index with Basic Auth
curl -fsS -u "$PRIMARY_CREDS" "$MIRROR/concelier/exports/index.json" | jq 'keys'

# Mirror manifest signature (headers only)
curl -fsS -u "$PRIMARY_CREDS" -I "$MIRROR/concelier/exports/mirror/primary/manifest.json"

# Excititor consensus bundle metadata
curl -fsS -u "$COMMUNITY_CREDS" "$MIRROR/excititor/mirror/community/index" | jq '.exports[].exportKey'

# Signed bundle + detached JWS and .sig (spot check digests)
curl -fsS -u "$PRIMARY_CREDS" "$MIRROR/concelier/exports/mirror/primary/bundle.json" -o bundle.json
curl -fsS -u "$PRIMARY_CREDS" "$MIRROR/concelier/exports/mirror/primary/bundle.json.jws" -o bundle.json.jws
curl -fsS -u "$PRIMARY_CREDS" "$MIRROR/concelier/exports/mirror/primary/bundle.json.sig" -o bundle.json.sig
# (cosign verify-blob --key {pub} --signature bundle.json.sig bundle.json  — with cosign installed)
base64 -d bundle.json.sig > bundle.json.sig.der
openssl dgst -sha256 -verify {pub} -signature bundle.json.sig.der bundle.json
signed=$(curl -fsS -u "$PRIMARY_CREDS" "$MIRROR/concelier/exports/index.json" \\
  | jq -r '.domains[] | select(.domainId == "primary") | .bundle.digest')
test "sha256:$(sha256sum bundle.json | cut -d' ' -f1)" = "$signed" && echo "bundle digest matches the signed index"

# Without credentials the primary domain refuses (expect 401)
curl -s -o /dev/null -w '%{{http_code}}\\n' "$MIRROR/concelier/exports/mirror/primary/bundle.json"

# Everything (JWS, .sig, digests, expiry) verified offline against the public key
stella-mirror verify {q(str(d / "concelier"))} --key {pub}
stella-mirror verify {q(str(d / "excititor"))} --key {pub}
{SMOKE_END}"""


def check_port(port: int) -> None:
    """:class:`ConfigError` (exit 3) suggesting ``--port`` when ``127.0.0.1:port`` cannot be listened on — checked
    before anything is built or printed, so a busy port prints no password and no commands aimed at another server."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
    try:
        probe.bind(("127.0.0.1", port))
    except OSError as exc:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as free:
            free.bind(("127.0.0.1", 0))
            other = free.getsockname()[1]
        raise ConfigError(
            "--port", f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): choose another port, e.g. --port {other}"
        ) from None
    finally:
        probe.close()


def run_demo(port: int, directory: Path | None, workers: int = 1) -> int:
    """Build the demo mirror, print how to use it, and serve until interrupted. The port is checked first; a temp
    directory made here (keys included) is removed again when the demo fails."""
    check_port(port)
    target = directory or Path(tempfile.mkdtemp(prefix="stella-mirror-demo-"))
    ok = False
    try:
        code = _build_and_serve(target, port, workers)
        ok = code == 0
        return code
    finally:
        if directory is None and not ok:
            shutil.rmtree(target, ignore_errors=True)


def _build_and_serve(target: Path, port: int, workers: int) -> int:
    from stella_mirror.server.runner import ServeOptions, run

    demo = build_demo(target, port)

    def loader() -> MirrorConfig:
        return load_config(demo.config_path, environ={})  # the demo is hermetic: no surprise env overrides

    print(f"stella-mirror demo in {target}")
    for note in demo.notes:
        print(f"  {note}")
    print(f"  Basic Auth: user {USER!r}, password {demo.password!r} (htpasswd: {target / 'mirror.htpasswd'})")
    print("  Domains: primary (authentication required), community (open)")
    print(f"  Configuration: {demo.config_path}  ·  access log: {target / 'access.log'}")
    print(f"  Metrics: http://127.0.0.1:{port}/metrics  ·  readiness: http://127.0.0.1:{port}/readyz")
    print()
    print(smoke_commands(demo, port))
    print()
    print(f"Serving on http://127.0.0.1:{port} — press Ctrl-C to stop.", flush=True)
    sys.stdout.flush()
    return run(ServeOptions(loader, host="127.0.0.1", port=port, workers=workers, pid_file=target / "server.pid"))
