"""Which ASGI server: granian against uvicorn on the same minimal app, with nginx as the yardstick.

    python3 bench/asgi_servers.py [--duration 10] [--workers 2] [--markdown]

The app (``bench/asgi_servers.py:app``) is what any server costs at least: one pass over the request headers and
a 2 KB body with two headers. Each server runs it with ``--workers`` processes on loopback — granian
(``--interface asgi``, HTTP/1, uvloop) and uvicorn (uvloop + httptools) — and nginx serves a 2 KB static file
(``worker_processes`` the same, access log off). ``wrk -t2 -c64`` drives each for ``--duration`` seconds after a
2 s warm-up. Prints req/s, p99 and the ratio to nginx; the server's CPU time per request (user + system of all
its processes) too, steadier than req/s on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

BODY = b"x" * 2048
HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"2048")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The minimal ASGI app: lifespan, one header scan, a 2 KB answer."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            done = "lifespan.shutdown.complete" if message["type"] == "lifespan.shutdown" else None
            await send({"type": done or "lifespan.startup.complete"})
            if done:
                return
    authorization = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
    del authorization
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += [int(c) for c in subprocess.run(["pgrep", "-P", str(p)], capture_output=True, text=True).stdout.split()]
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wrk(url: str, duration: int) -> tuple[float, float]:
    subprocess.run(["wrk", "-t2", "-c64", "-d2s", url], capture_output=True, check=True)
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{duration}s", "--latency", url], capture_output=True, text=True, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99 is not None
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return rps, float(p99.group(1)) * scale


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    for tool in ("nginx", "wrk", "granian"):
        if not shutil.which(tool):
            print(f"{tool} is required", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="stella-bench-asgi-"))
    (work / "www").mkdir()
    (work / "tmp").mkdir()
    (work / "www" / "x.json").write_bytes(BODY)
    here = str(Path(__file__).resolve().parent)
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    ports = {name: free_port() for name in ("nginx", "granian", "uvicorn")}
    (work / "nginx.conf").write_text(
        textwrap.dedent(f"""\
        {user}
        worker_processes {args.workers};
        pid {work}/nginx.pid;
        error_log {work}/error.log;
        events {{ worker_connections 4096; }}
        http {{
          access_log off;
          sendfile on;
          tcp_nopush on;
          client_body_temp_path {work}/tmp; proxy_temp_path {work}/tmp; fastcgi_temp_path {work}/tmp;
          uwsgi_temp_path {work}/tmp; scgi_temp_path {work}/tmp;
          server {{ listen 127.0.0.1:{ports["nginx"]}; root {work}/www; }}
        }}
        """)
    )
    env = {**os.environ, "PYTHONPATH": here}
    commands = {
        "nginx": ["nginx", "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
        "granian": [
            "granian",
            "--interface",
            "asgi",
            "--http",
            "1",
            "--loop",
            "uvloop",
            "--workers",
            str(args.workers),
            "--port",
            str(ports["granian"]),
            "--no-log",
            "asgi_servers:app",
        ],
        "uvicorn": [
            sys.executable,
            "-m",
            "uvicorn",
            "--workers",
            str(args.workers),
            "--port",
            str(ports["uvicorn"]),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
            "asgi_servers:app",
        ],
    }
    rows = []
    for name, command in commands.items():
        proc = subprocess.Popen(command, env=env, cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{ports[name]}/" + ("x.json" if name == "nginx" else "")
            wait(url)
            time.sleep(1)
            pids = tree(proc.pid)
            before = cpu_seconds(pids)
            rps, p99 = wrk(url, args.duration)
            cpu_us = (cpu_seconds(pids) - before) / (rps * args.duration) * 1e6
            rows.append((name, rps, p99, cpu_us))
            print(f"  {name:8s} {rps:10.0f} req/s  p99 {p99:6.2f} ms  cpu/req {cpu_us:6.1f} µs", flush=True)
        finally:
            proc.terminate()
            proc.wait(15)
    nginx_rps = rows[0][1]
    if args.markdown:
        print("\n| server | req/s | vs nginx | p99 | server CPU/req |\n|---|---:|---:|---:|---:|")
        for name, rps, p99, cpu_us in rows:
            print(f"| {name} | {rps:,.0f} | {rps / nginx_rps:.2f}× | {p99:.2f} ms | {cpu_us:.0f} µs |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
