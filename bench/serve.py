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
* ``python3 -m http.server`` on the export directory, the naive floor.

and drives each with ``wrk`` (``-t2 --latency``): (a) ``index.json`` at 64 connections, (b) the 20 MB bundle at
8 connections, (c) (a) with Basic Auth. Finally a soak: (c) for ``--soak`` seconds while sampling the RSS of
our worker processes. Prints req/s, MB/s, p99, the servers' CPU time per request (user + system of all their
processes, steadier than req/s when other work shares the machine) and the ratios against the targets.

Quicker modes for iterating: ``--only a,c`` (scenarios to run; plain nginx (a) always runs with (c)),
``--no-floor`` (skip http.server), ``--dir D`` (reuse the tree built in ``D`` by an earlier run), and
``--in-process N`` (no sockets at all: call the ASGI app N times for (a) and (c) and print the CPU µs our own
code spends per request).
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
    words = " ".join(
        rng.choice(
            [
                "buffer",
                "overflow",
                "request",
                "parser",
                "remote",
                "crafted",
                "denial",
                "service",
                "memory",
                "input",
                "validation",
                "attacker",
            ]
        )
        for _ in range(300)
    )
    key = f"CVE-2024-{i:06d}"
    return {
        "advisoryKey": key,
        "aliases": [key, f"GHSA-{i:04x}-bench-{i % 997:03d}"],
        "title": f"Advisory {key}",
        "summary": words[:160],
        "description": words,
        "published": "2024-01-01T00:00:00Z",
        "modified": "2024-06-01T00:00:00Z",
        "withdrawn": None,
        "severity": "high",
        "cvss": [{"version": "3.1", "vector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "baseScore": 9.8}],
        "cwes": ["CWE-787"],
        "references": [{"url": f"https://example.org/{key}", "type": "ADVISORY"}],
        "affected": [
            {
                "ecosystem": "PyPI",
                "package": f"pkg{i % 5000}",
                "purl": f"pkg:pypi/pkg{i % 5000}",
                "ranges": [{"type": "ECOSYSTEM", "introduced": "0", "fixed": "1.2.3", "lastAffected": None}],
                "versions": [],
            }
        ],
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
                ConcelierDomain(d, d.title(), small) for d in ("community", "partner", "secure")
            ]
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
    conf.write_text(
        textwrap.dedent(f"""\
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
        """)
    )
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(prefix)], stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/concelier/exports/index.json")
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    return Proc("nginx", proc, port, [proc.pid, *map(int, children)]), auth_port


def write_config(work: Path, root: Path, htpasswd: Path, name: str) -> Path:
    cfg = work / f"{name}.yaml"
    cfg.write_text(
        textwrap.dedent(f"""\
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
        """)
    )
    return cfg


def start_ours(work: Path, root: Path, htpasswd: Path, workers: int, name: str) -> Proc:
    port = free_port()
    cfg = write_config(work, root, htpasswd, name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONCELIER__", "EXCITITOR__", "MIRROR__"))}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from stella_mirror.cli.main import main; main()",
            "serve",
            "--config",
            str(cfg),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / f"{name}.err").open("wb"),
    )
    wait_http(f"http://127.0.0.1:{port}/readyz")
    time.sleep(0.5)
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    return Proc(name, proc, port, [proc.pid, *map(int, children)])


def start_http_server(root: Path) -> Proc:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/latest/mirror/index.json")
    return Proc("http.server", proc, port, [proc.pid])


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
    cpu_us: float = float("nan")
    """Server CPU time (user + system, all its processes) per request, in µs: steadier than req/s when other
    work shares the machine (it does not count wrk, nor time spent waiting for the CPU)."""


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
    for pat in (
        r"Non-2xx or 3xx responses: (\d+)",
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
    ):
        m = re.search(pat, out)
        if m:
            errors += sum(int(g) for g in m.groups())
    shown = " ".join(c if " " not in c else repr(c) for c in cmd)
    return Result(server, scenario, rps, mbps, _ms(p99.group(1)) if p99 else float("nan"), errors, shown)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by ``pids`` (their own, not their children's)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15 of stat)
    return total


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


# --- in-process -----------------------------------------------------------------------------------


def in_process(work: Path, root: Path, htpasswd: Path, n: int) -> int:
    """Drive the ASGI app directly: the cost of our own code per request, free of socket and wrk noise."""
    import asyncio

    from stella_mirror.config import load_config
    from stella_mirror.server.app import create_app

    cfg = write_config(work, root, htpasswd, "in-process")
    app = create_app(load_config(cfg))
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode())

    def scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/concelier/exports/index.json",
            "raw_path": b"/concelier/exports/index.json",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8080),
        }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    base = [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"wrk"), (b"accept", b"*/*")]
    scenarios = {"a": base, "c": [(b"host", SECURE_HOST.encode()), (b"authorization", b"Basic " + token), *base[1:]]}

    async def run() -> None:
        for name, headers in scenarios.items():
            for _ in range(200):  # warm-up: caches, the bcrypt success cache
                await app(scope(headers), receive, send)
            statuses.clear()
            started = time.process_time()
            for _ in range(n):
                await app(scope(headers), receive, send)
            per = (time.process_time() - started) / n * 1e6
            bad = sum(1 for s in statuses if s != 200)
            print(f"  ({name}) in-process {per:6.1f} µs CPU per request ({n} requests, {bad} not 200)", flush=True)
        if app.sink is not None:
            app.sink.close()

    asyncio.run(run())
    return 0


# --- main ------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--soak", type=int, default=60, help="seconds of the memory soak (0 to skip)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--markdown", action="store_true", help="also print a Markdown table")
    ap.add_argument(
        "--only",
        default="a,b,c",
        help="comma-separated scenarios to run (default a,b,c); ratios that need a scenario left out are not printed",
    )
    ap.add_argument("--no-floor", action="store_true", help="skip python3 -m http.server (saves a minute)")
    ap.add_argument(
        "--in-process",
        type=int,
        default=0,
        metavar="N",
        help="instead of the HTTP runs, call the ASGI app N times per scenario in this process (no "
        "sockets, no HTTP server) and print its own CPU µs per request for (a) and (c)",
    )
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "htpasswd"):
        if not shutil.which(tool):
            print(f"{tool} is required", file=sys.stderr)
            return 2
    work = args.dir or Path(tempfile.mkdtemp(prefix="stella-bench-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    root = work / "concelier"
    if (root / "latest").is_dir():  # --dir of an earlier run: reuse its tree
        export = (root / "latest").resolve()
    else:
        print(f"building the export tree in {work} …", flush=True)
        export = build_tree(root, work / "keys")
    index_size = (export / "mirror" / "index.json").stat().st_size
    bundle_size = (export / "mirror" / "primary" / "bundle.json").stat().st_size
    print(f"index.json {index_size} bytes, bundle.json {bundle_size / 1e6:.1f} MB", flush=True)
    htpasswd = work / "bench.htpasswd"
    subprocess.run(["htpasswd", "-B", "-b", "-c", str(htpasswd), USER, PASSWORD], check=True, capture_output=True)
    basic = "Authorization: Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    if args.in_process:
        return in_process(work, root, htpasswd, args.in_process)

    procs: list[Proc] = []
    results: list[Result] = []
    soak: list[tuple[float, int]] = []
    try:
        nginx, nginx_auth_port = start_nginx(work, root, htpasswd)
        procs.append(nginx)
        ours = start_ours(work, root, htpasswd, args.workers, "stella-mirror")
        procs.append(ours)
        only = set(args.only.split(","))
        floor = None if args.no_floor else start_http_server(root)
        if floor is not None:
            procs.append(floor)
        d = args.duration
        index = "/concelier/exports/index.json"
        bundle = "/concelier/exports/mirror/primary/bundle.json"
        # Sanity: every server answers what the scenario expects.
        assert httpx.get(f"http://127.0.0.1:{nginx_auth_port}{index}", auth=(USER, PASSWORD)).status_code == 200
        assert (
            httpx.get(
                f"http://127.0.0.1:{ours.port}{index}", auth=(USER, PASSWORD), headers={"Host": SECURE_HOST}
            ).status_code
            == 200
        )
        assert httpx.get(f"http://127.0.0.1:{ours.port}{index}", headers={"Host": SECURE_HOST}).status_code == 401

        floor_port = floor.port if floor is not None else 0
        runs = [
            ("nginx", "a", f"http://127.0.0.1:{nginx.port}{index}", 64, []),
            ("stella-mirror", "a", f"http://127.0.0.1:{ours.port}{index}", 64, []),
            ("http.server", "a", f"http://127.0.0.1:{floor_port}/latest/mirror/index.json", 64, []),
            ("nginx", "b", f"http://127.0.0.1:{nginx.port}{bundle}", 8, []),
            ("stella-mirror", "b", f"http://127.0.0.1:{ours.port}{bundle}", 8, []),
            ("http.server", "b", f"http://127.0.0.1:{floor_port}/latest/mirror/primary/bundle.json", 8, []),
            ("nginx auth_basic", "c", f"http://127.0.0.1:{nginx_auth_port}{index}", 64, [basic]),
            (
                "stella-mirror auth+quotas",
                "c",
                f"http://127.0.0.1:{ours.port}{index}",
                64,
                [basic, f"Host: {SECURE_HOST}"],
            ),
        ]
        # (c) is compared with plain nginx in (a), so nginx (a) runs whenever (c) does.
        wanted = only | ({"a-nginx"} if "c" in only else set())
        for server, scenario, url, conns, headers in runs:
            if scenario not in wanted and not (server == "nginx" and scenario == "a" and "a-nginx" in wanted):
                continue
            if server == "http.server" and floor is None:
                continue
            # A short warm-up (caches, bcrypt success cache, page cache), then the measured run.
            subprocess.run(
                ["wrk", "-t2", f"-c{conns}", "-d2s", *_headers(headers), url], capture_output=True, check=True
            )
            pids = next((p.pids for p in procs if url.startswith(f"http://127.0.0.1:{p.port}/")), [])
            if server.startswith("nginx"):
                pids = nginx.pids
            cpu_before = cpu_seconds(pids)
            r = wrk(server, scenario, url, conns, d, headers)
            if pids and r.rps:
                r.cpu_us = (cpu_seconds(pids) - cpu_before) / (r.rps * d) * 1e6
            results.append(r)
            print(
                f"  ({scenario}) {server:28s} {r.rps:10.0f} req/s {r.mbps:9.1f} MB/s  p99 {r.p99_ms:7.2f} ms"
                f"  errors {r.errors}  cpu/req {r.cpu_us:7.1f} µs",
                flush=True,
            )

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
            r = wrk(
                "stella-mirror auth+quotas",
                "soak",
                f"http://127.0.0.1:{ours.port}{index}",
                64,
                args.soak,
                [basic, f"Host: {SECURE_HOST}"],
            )
            stop.set()
            t.join()
            soak.append((float(args.soak), rss_kib(ours.pids)))
            results.append(r)
    finally:
        for p in procs:
            p.stop()

    def get(server: str, scenario: str) -> Result:
        return next(r for r in results if r.server == server and r.scenario == scenario)

    verdict: list[tuple[str, float, bool, str]] = []
    if "a" in only:
        a_ratio = get("stella-mirror", "a").rps / get("nginx", "a").rps
        verdict.append(("(a) req/s vs nginx", a_ratio, a_ratio >= 0.4, "≥ 0.4×"))
    if "b" in only:
        b_ratio = get("stella-mirror", "b").mbps / get("nginx", "b").mbps
        verdict.append(("(b) MB/s vs nginx", b_ratio, b_ratio >= 0.9, "≥ 0.9×"))
    if "c" in only:
        c_ratio_bcrypt = get("stella-mirror auth+quotas", "c").rps / get("nginx auth_basic", "c").rps
        c_ratio_plain = get("stella-mirror auth+quotas", "c").rps / get("nginx", "a").rps
        verdict += [
            ("(c) req/s vs nginx auth_basic (bcrypt)", c_ratio_bcrypt, c_ratio_bcrypt >= 10, "≥ 10×"),
            ("(c) req/s vs plain nginx (a)", c_ratio_plain, c_ratio_plain >= 0.3, "≥ 0.3×"),
        ]
    if "a" in only:
        p99_a = get("stella-mirror", "a").p99_ms
        verdict.append(("(a) p99 ms", p99_a, p99_a < 10, "< 10 ms"))
    if "c" in only:
        p99_c = get("stella-mirror auth+quotas", "c").p99_ms
        verdict.append(("(c) p99 ms", p99_c, p99_c < 10, "< 10 ms"))
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
        print(
            "\n| scenario | server | req/s | MB/s | p99 | errors | server CPU/req |\n|---|---|---:|---:|---:|---:|---:|"
        )
        for r in results:
            cpu = "" if r.cpu_us != r.cpu_us else f"{r.cpu_us:,.0f} µs"
            print(
                f"| {r.scenario} | {r.server} | {r.rps:,.0f} | {r.mbps:,.1f} | {r.p99_ms:.2f} ms | {r.errors} | {cpu} |"
            )
        print("\n| ratio | value | target | |\n|---|---:|---|---|")
        for name, value, ok, target in verdict:
            print(f"| {name} | {value:.2f} | {target} | {'met' if ok else '**missed**'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
