"""Benchmark of ``stella-mirror serve`` against nginx (and ``python3 -m http.server``) on one export tree.

    python3 bench/serve.py [--duration 10] [--soak 60] [--workers 2] [--markdown]

It builds a signed Concelier export (an index of ~2 KB, a 20 MB ``bundle.json``), an htpasswd file made by
``htpasswd -B`` (bcrypt, default cost), and starts, each on its own loopback port:

* nginx (Debian package): ``worker_processes 2``, ``sendfile on``, ``tcp_nopush on``, access log off (the
  strongest baseline), a generated ``nginx.conf`` in a temp prefix, running as the current user; a second
  server block protects the index with ``auth_basic`` against the same htpasswd file;
* ``stella-mirror serve --workers 2`` with metrics and the JSON access log (to a file) on; host name
  ``secure.bench`` selects a domain that requires Basic Auth and has quotas (memory backend) — so (c)
  exercises auth + quotas + metrics + access log;
* a second ``stella-mirror serve`` with ``mirror.sendfile: true`` (zero-copy bodies), for (b) only;
* ``python3 -m http.server`` on the export directory, the naive floor.

and drives each with ``wrk`` (``-t2 --latency``): (a) ``index.json`` at 64 connections, (b) the 20 MB bundle at
8 connections, (c) (a) with Basic Auth. Finally a soak: (c) for ``--soak`` seconds while sampling the RSS of
our worker processes. Prints req/s, MB/s, p99 and the ratios against the targets.
"""

from __future__ import annotations

import argparse
import base64
import os
import pwd
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from stella_mirror.bundle.keyfiles import generate_keypair
from stella_mirror.bundle.writer import ConcelierDomain, ExportStamp, read_sequence, write_concelier_export
from stella_mirror.publish import ExportRoot, next_sequence
from stella_mirror.timeutil import rfc3339, utcnow

USER, PASSWORD = "bench", "bench-password"
SECURE_HOST = "secure.bench"
BUNDLE_TARGET = 20 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


# --- the export tree -----------------------------------------------------------------------------


def _advisory(i: int, rng: random.Random) -> dict[str, Any]:
    words = " ".join(rng.choice(["buffer", "overflow", "request", "parser", "remote", "crafted", "denial",
                                 "service", "memory", "input", "validation", "attacker"]) for _ in range(300))
    key = f"CVE-2024-{i:06d}"
    return {
        "advisoryKey": key, "aliases": [key, f"GHSA-{i:04x}-bench-{i % 997:03d}"], "title": f"Advisory {key}",
        "summary": words[:160], "description": words, "published": "2024-01-01T00:00:00Z",
        "modified": "2024-06-01T00:00:00Z", "withdrawn": None, "severity": "high",
        "cvss": [{"version": "3.1", "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "baseScore": 9.8}],
        "cwes": ["CWE-787"], "references": [{"url": f"https://example.org/{key}", "type": "ADVISORY"}],
        "affected": [{"ecosystem": "PyPI", "package": f"pkg{i % 5000}", "purl": f"pkg:pypi/pkg{i % 5000}",
                      "ranges": [{"type": "ECOSYSTEM", "introduced": "0", "fixed": "1.2.3", "lastAffected": None}],
                      "versions": []}],
        "provenance": [{"source": "bench", "documentId": key, "digest": "sha256:" + "0" * 64, "recordedAt": None}],
    }


def build_tree(root: Path, keys: Path) -> Path:
    key = generate_keypair(keys)
    rng = random.Random(7)
    big: list[dict[str, Any]] = []
    size = 0
    while size < BUNDLE_TARGET:
        adv = _advisory(len(big), rng)
        big.append(adv)
        size += len(str(adv))
    small = big[:2]
    er = ExportRoot(root)
    with er.locked():
        seq = next_sequence(er, read_sequence)
        export_id = "bench-" + utcnow().strftime("%Y%m%dT%H%M%SZ")
        with er.staging(export_id) as stage:
            now = utcnow()
            stamp = ExportStamp(export_id, seq, rfc3339(now), rfc3339(now.replace(year=now.year + 1)))
            doms = [ConcelierDomain("primary", "Primary", big)] + [
                ConcelierDomain(d, d.title(), small) for d in ("community", "partner", "secure")]
            write_concelier_export(stage, stamp, doms, key)
            return er.commit(stage, export_id)


# --- servers -------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    pids: list[int] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_nginx(work: Path, root: Path, htpasswd: Path) -> tuple[Proc, int]:
    port, auth_port = free_port(), free_port()
    prefix = work / "nginx"
    for d in ("logs", "tmp"):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    latest = root / "latest" / "mirror"
    conf = prefix / "nginx.conf"
    # As root, nginx would switch its workers to "nobody", who cannot read a private temp directory.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    conf.write_text(textwrap.dedent(f"""\
        {user}
        worker_processes 2;
        daemon off;
        pid {prefix}/nginx.pid;
        error_log {prefix}/logs/error.log warn;
        events {{ worker_connections 4096; }}
        http {{
          types {{ application/json json; application/jose jws; text/plain sig; }}
          default_type application/octet-stream;
          access_log off;
          sendfile on;
          tcp_nopush on;
          keepalive_requests 1000000;
          client_body_temp_path {prefix}/tmp/body;
          proxy_temp_path {prefix}/tmp/proxy;
          fastcgi_temp_path {prefix}/tmp/fastcgi;
          uwsgi_temp_path {prefix}/tmp/uwsgi;
          scgi_temp_path {prefix}/tmp/scgi;
          server {{
            listen 127.0.0.1:{port};
            location = /concelier/exports/index.json {{ alias {latest}/index.json; }}
            location /concelier/exports/mirror/ {{ alias {latest}/; }}
          }}
          server {{
            listen 127.0.0.1:{auth_port};
            auth_basic "secure";
            auth_basic_user_file {htpasswd};
            location = /concelier/exports/index.json {{ alias {latest}/index.json; }}
          }}
        }}
        """))
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(prefix)], stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/concelier/exports/index.json")
    return Proc("nginx", proc, port), auth_port


def start_ours(work: Path, root: Path, htpasswd: Path, workers: int, sendfile: bool, name: str) -> Proc:
    port = free_port()
    cfg = work / f"{name}.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        concelier:
          mirror:
            exportRoot: {root}
            domains:
              - {{id: primary}}
              - {{id: community}}
              - {{id: partner}}
              - id: secure
                hostnames: [{SECURE_HOST}]
                requireAuthentication: true
                htpasswd: {htpasswd}
                maxIndexRequestsPerHour: 1000000000
                maxDownloadRequestsPerHour: 1000000000
        excititor:
          mirror:
            enabled: false
        mirror:
          accessLog: {work / f"{name}-access.log"}
          metrics: true
          sendfile: {"true" if sendfile else "false"}
        """))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONCELIER__", "EXCITITOR__", "MIRROR__"))}
    proc = subprocess.Popen([sys.executable, "-c", "from stella_mirror.cli.main import main; main()", "serve",
                             "--config", str(cfg), "--port", str(port), "--workers", str(workers)],
                            env=env, stdout=subprocess.DEVNULL, stderr=(work / f"{name}.err").open("wb"))
    wait_http(f"http://127.0.0.1:{port}/readyz")
    time.sleep(0.5)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    return Proc(name, proc, port, [proc.pid, *map(int, children)])


def start_http_server(root: Path) -> Proc:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/latest/mirror/index.json")
    return Proc("http.server", proc, port)


# --- wrk -------------------------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    scenario: str
    rps: float
    mbps: float
    p99_ms: float
    errors: int
    command: str


_UNITS = {"B": 1e-6, "KB": 1e-3, "MB": 1.0, "GB": 1e3}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def _headers(headers: list[str]) -> list[str]:
    return [arg for h in headers for arg in ("-H", h)]


def wrk(server: str, scenario: str, url: str, connections: int, duration: int, headers: list[str]) -> Result:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", *_headers(headers), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    tr = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    mbps = float(tr.group(1)) * _UNITS[tr.group(2)] if tr else 0.0
    p99 = re.search(r"99%\s+(\S+)", out)
    errors = 0
    for pat in (r"Non-2xx or 3xx responses: (\d+)",
                r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"):
        m = re.search(pat, out)
        if m:
            errors += sum(int(g) for g in m.groups())
    shown = " ".join(c if " " not in c else repr(c) for c in cmd)
    return Result(server, scenario, rps, mbps, _ms(p99.group(1)) if p99 else float("nan"), errors, shown)


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


# --- main ------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--soak", type=int, default=60, help="seconds of the memory soak (0 to skip)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "htpasswd"):
        if not shutil.which(tool):
            print(f"{tool} is required", file=sys.stderr)
            return 2
    work = args.dir or Path(tempfile.mkdtemp(prefix="stella-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "concelier"
    print(f"building the export tree in {work} …", flush=True)
    export = build_tree(root, work / "keys")
    index_size = (export / "mirror" / "index.json").stat().st_size
    bundle_size = (export / "mirror" / "primary" / "bundle.json").stat().st_size
    print(f"index.json {index_size} bytes, bundle.json {bundle_size / 1e6:.1f} MB", flush=True)
    htpasswd = work / "bench.htpasswd"
    subprocess.run(["htpasswd", "-B", "-b", "-c", str(htpasswd), USER, PASSWORD], check=True, capture_output=True)
    basic = "Authorization: Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

    procs: list[Proc] = []
    results: list[Result] = []
    soak: list[tuple[float, int]] = []
    try:
        nginx, nginx_auth_port = start_nginx(work, root, htpasswd)
        procs.append(nginx)
        ours = start_ours(work, root, htpasswd, args.workers, False, "stella-mirror")
        procs.append(ours)
        ours_zc = start_ours(work, root, htpasswd, args.workers, True, "stella-mirror-sendfile")
        procs.append(ours_zc)
        floor = start_http_server(root)
        procs.append(floor)
        d = args.duration
        index = "/concelier/exports/index.json"
        bundle = "/concelier/exports/mirror/primary/bundle.json"
        # Sanity: every server answers what the scenario expects.
        assert httpx.get(f"http://127.0.0.1:{nginx_auth_port}{index}", auth=(USER, PASSWORD)).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ours.port}{index}", auth=(USER, PASSWORD),
                         headers={"Host": SECURE_HOST}).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ours.port}{index}", headers={"Host": SECURE_HOST}).status_code == 401

        runs = [
            ("nginx", "a", f"http://127.0.0.1:{nginx.port}{index}", 64, []),
            ("stella-mirror", "a", f"http://127.0.0.1:{ours.port}{index}", 64, []),
            ("http.server", "a", f"http://127.0.0.1:{floor.port}/latest/mirror/index.json", 64, []),
            ("nginx", "b", f"http://127.0.0.1:{nginx.port}{bundle}", 8, []),
            ("stella-mirror", "b", f"http://127.0.0.1:{ours.port}{bundle}", 8, []),
            ("stella-mirror sendfile", "b", f"http://127.0.0.1:{ours_zc.port}{bundle}", 8, []),
            ("http.server", "b", f"http://127.0.0.1:{floor.port}/latest/mirror/primary/bundle.json", 8, []),
            ("nginx auth_basic", "c", f"http://127.0.0.1:{nginx_auth_port}{index}", 64, [basic]),
            ("stella-mirror auth+quotas", "c", f"http://127.0.0.1:{ours.port}{index}", 64,
             [basic, f"Host: {SECURE_HOST}"]),
        ]
        for server, scenario, url, conns, headers in runs:
            # A short warm-up (caches, bcrypt success cache, page cache), then the measured run.
            subprocess.run(["wrk", "-t2", f"-c{conns}", "-d2s", *_headers(headers), url],
                           capture_output=True, check=True)
            r = wrk(server, scenario, url, conns, d, headers)
            results.append(r)
            print(f"  ({scenario}) {server:28s} {r.rps:10.0f} req/s {r.mbps:9.1f} MB/s  p99 {r.p99_ms:7.2f} ms"
                  f"  errors {r.errors}", flush=True)

        if args.soak:
            print(f"soak: (c) for {args.soak} s, sampling RSS of {len(ours.pids)} processes …", flush=True)
            stop = threading.Event()

            def sample() -> None:
                start = time.monotonic()
                while not stop.is_set():
                    soak.append((time.monotonic() - start, rss_kib(ours.pids)))
                    stop.wait(5)

            t = threading.Thread(target=sample)
            t.start()
            r = wrk("stella-mirror auth+quotas", "soak", f"http://127.0.0.1:{ours.port}{index}", 64, args.soak,
                    [basic, f"Host: {SECURE_HOST}"])
            stop.set()
            t.join()
            soak.append((float(args.soak), rss_kib(ours.pids)))
            results.append(r)
    finally:
        for p in procs:
            p.stop()

    def get(server: str, scenario: str) -> Result:
        return next(r for r in results if r.server == server and r.scenario == scenario)

    a_ratio = get("stella-mirror", "a").rps / get("nginx", "a").rps
    best_b = max(get("stella-mirror", "b").mbps, get("stella-mirror sendfile", "b").mbps)
    b_ratio = best_b / get("nginx", "b").mbps
    c_ratio_bcrypt = get("stella-mirror auth+quotas", "c").rps / get("nginx auth_basic", "c").rps
    c_ratio_plain = get("stella-mirror auth+quotas", "c").rps / get("nginx", "a").rps
    p99_a, p99_c = get("stella-mirror", "a").p99_ms, get("stella-mirror auth+quotas", "c").p99_ms
    verdict = [
        ("(a) req/s vs nginx", a_ratio, a_ratio >= 0.25, "≥ 0.25×"),
        ("(b) MB/s vs nginx", b_ratio, b_ratio >= 0.8, "≥ 0.8×"),
        ("(c) req/s vs nginx auth_basic (bcrypt)", c_ratio_bcrypt, c_ratio_bcrypt >= 10, "≥ 10×"),
        ("(c) req/s vs plain nginx (a)", c_ratio_plain, c_ratio_plain >= 0.2, "≥ 0.2×"),
        ("(a) p99 ms", p99_a, p99_a < 25, "< 25 ms"),
        ("(c) p99 ms", p99_c, p99_c < 25, "< 25 ms"),
    ]
    if soak:
        first, last = soak[0][1], soak[-1][1]
        peak = max(k for _, k in soak)
        verdict.append(("soak RSS growth (MiB)", (last - first) / 1024, (last - first) < 20 * 1024, "< 20 MiB"))
    print("\nratios and targets")
    for name, value, ok, target in verdict:
        print(f"  {name:42s} {value:9.2f}  target {target:8s} {'met' if ok else 'MISSED'}")
    if soak:
        print(f"  RSS over the soak (KiB, all processes): {[k for _, k in soak]}  peak {peak}")
    if args.markdown:
        print("\n| scenario | server | req/s | MB/s | p99 | errors |\n|---|---|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r.scenario} | {r.server} | {r.rps:,.0f} | {r.mbps:,.1f} | {r.p99_ms:.2f} ms | {r.errors} |")
        print("\n| ratio | value | target | |\n|---|---:|---|---|")
        for name, value, ok, target in verdict:
            print(f"| {name} | {value:.2f} | {target} | {'met' if ok else '**missed**'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
