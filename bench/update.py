"""Benchmark of an update N → N+1 on the shared OSV corpus: ``pull`` (deltas, compression) against
``rsync -a --delete`` from a real rsync daemon, a full download and ``aws s3 sync --size-only`` (issue 20).

    python3 bench/update.py [--corpus ../shared/corpus/osv] [--dir /tmp/stella-update] [--markdown]

1. A source tree copies every document of the corpus's pypa, golang, bitnami and oss-fuzz folders; export N
   (``export concelier``) has 3 domains: ``pypi`` (PyPI), ``go`` (Go) and ``other`` (everything else).
2. N+1 changes 10 documents touching 2 domains: 5 edited (3 PyPI, 2 Go: the ``details`` text), 3 added
   (copies of PyPI/Go documents under new ids), 2 removed (one PyPI, one Go). ``other`` is unchanged.
3. Both exports are served by ``stella-mirror serve`` (bytes and requests are counted from its access log),
   by an rsync daemon (``rsync --stats``) and by moto's S3 server (requests from its log, bytes from the files
   ``aws`` wrote). Each tool first syncs N into its own directory, then N+1 over it.

Printed per method: bytes and requests on the wire for N → N+1 (per domain where the tool allows), wall time,
and whether the result verifies (``stella-mirror verify``; for ``aws s3 sync --size-only`` the tree it leaves).
Also the first pull of N, compressed and uncompressed. The machine may be shared: wall times are indicative.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import httpx

CLI = [sys.executable, "-c", "from stella_mirror.cli.main import main; main()"]
FOLDERS = ("pypa", "golang", "bitnami", "oss-fuzz")
DOMAINS = ("pypi", "go", "other")
CONFIG = """sources:
  - {kind: osv, path: %s}
domains:
  - {id: pypi, displayName: PyPI, filter: "ecosystem:PyPI"}
  - {id: go, displayName: Go, filter: "ecosystem:Go"}
  - {id: other, displayName: Other, filter: "ecosystem:Bitnami,OSS-Fuzz"}
expiresIn: 7d
keep: 5
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(
    cmd: list[str | Path], env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, env=env, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd[:6]))}… failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_corpus(corpus: Path, src: Path) -> None:
    """Copy the four folders into the benchmark's own source tree (the exporter reads regular files only; the
    copy lives in the benchmark directory, never in the project)."""
    for folder in FOLDERS:
        shutil.copytree(corpus / folder, src / folder)


def change_ten(src: Path) -> list[str]:
    """Edit 5, add 3, remove 2 JSON documents of the pypa and golang folders (2 domains)."""
    import orjson
    import yaml

    def docs(folder: str) -> list[Path]:
        return sorted(p for p in (src / folder).rglob("*") if p.suffix in (".json", ".yaml") and p.is_file())

    pypa, golang = docs("pypa"), docs("golang")
    picks = {
        "edit": [pypa[10], pypa[200], pypa[400], golang[100], golang[2000]],
        "add": [pypa[300], golang[500], golang[3000]],
        "remove": [pypa[500], golang[1500]],
    }
    done = []

    def load(p: Path) -> dict[str, Any]:
        data = p.read_bytes()
        return orjson.loads(data) if p.suffix == ".json" else yaml.safe_load(data)

    def dump(p: Path, doc: dict[str, Any]) -> None:
        p.unlink()
        p.write_bytes(orjson.dumps(doc) if p.suffix == ".json" else yaml.safe_dump(doc).encode())

    for p in picks["edit"]:
        doc = load(p)
        doc["details"] = str(doc.get("details", "")) + " (updated by the benchmark)"
        doc["modified"] = "2026-12-01T00:00:00Z"
        dump(p, doc)
        done.append(f"edit {p.name}")
    for i, p in enumerate(picks["add"]):
        doc = load(p)
        doc["id"] = f"{doc['id']}-BENCH{i}"
        doc["aliases"] = []
        new = p.with_name(f"{doc['id']}{p.suffix}")
        new.write_bytes(orjson.dumps(doc) if p.suffix == ".json" else yaml.safe_dump(doc).encode())
        done.append(f"add {new.name}")
    for p in picks["remove"]:
        p.unlink()
        done.append(f"remove {p.name}")
    return done


def export(src: Path, root: Path, keys: Path, export_id: str) -> float:
    cfg = root.parent / f"concelier-{export_id}.yaml"
    cfg.write_text(CONFIG % src)
    t0 = time.perf_counter()
    run(
        [
            *CLI,
            "export",
            "concelier",
            "--config",
            cfg,
            "--key",
            keys / "mirror-key.pem",
            "--out",
            root,
            "--export-id",
            export_id,
        ]
    )
    return time.perf_counter() - t0


class Server:
    def __init__(self, root: Path, work: Path) -> None:
        self.port = free_port()
        self.log = work / "access.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CONCELIER__", "EXCITITOR__", "MIRROR__"))}
        env.update(
            {
                "CONCELIER__MIRROR__EXPORTROOT": str(root),
                "EXCITITOR__MIRROR__ENABLED": "false",
                "MIRROR__ACCESSLOG": str(self.log),
            }
        )
        for i, d in enumerate(DOMAINS):
            env[f"CONCELIER__MIRROR__DOMAINS__{i}__ID"] = d
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(work / "serve.err").open("wb"),
        )
        self.base = f"http://127.0.0.1:{self.port}"
        self.wait_for(None)

    def wait_for(self, export_id: str | None) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.base + "/concelier/exports/index.json", timeout=2)
                if r.status_code == 200 and export_id in (None, r.json()["exportId"]):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"serve never answered with {export_id}")

    def mark(self) -> int:
        time.sleep(1.0)  # the access log is flushed every 0.5 s
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def since(self, mark: int) -> tuple[int, int]:
        time.sleep(1.0)
        lines = [json.loads(x) for x in self.log.read_text().splitlines()[mark:]]
        return sum(int(x.get("bytes") or 0) for x in lines), len(lines)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)


def pull(server: Server, out: Path, domain: str, keys: Path, *extra: str) -> dict[str, Any]:
    mark = server.mark()
    t0, c0 = time.perf_counter(), cpu()
    res = run(
        [
            *CLI,
            "pull",
            server.base + "/concelier/exports",
            "--domain",
            domain,
            "--out",
            out,
            "--key",
            keys / "mirror-key.pub",
            "--json",
            *extra,
        ],
        check=False,
    )
    wall, spent = time.perf_counter() - t0, cpu() - c0
    served, requests = server.since(mark)
    outcome = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else {"error": res.stderr}
    ok = (
        res.returncode == 0
        and run([*CLI, "verify", out, "--key", keys / "mirror-key.pub"], check=False).returncode == 0
    )
    return {
        "bytes": served,
        "requests": requests,
        "wall": wall,
        "cpu": spent,
        "ok": ok,
        "how": outcome.get("payloads"),
        "clientBytes": outcome.get("bytes"),
    }


def cpu() -> float:
    """CPU seconds (user + system) of finished child processes so far: unlike wall time, barely moved by other
    load on a shared machine."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def rsync_domain(url: str, dest: Path, *extra: str) -> dict[str, Any]:
    dest.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), cpu()
    res = run(["rsync", "-a", "--delete", "--stats", *extra, url, str(dest) + "/"])
    wall, spent = time.perf_counter() - t0, cpu() - c0
    sent = int(re.search(r"Total bytes sent: ([\d,]+)", res.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
    received = int(re.search(r"Total bytes received: ([\d,]+)", res.stdout).group(1).replace(",", ""))  # type: ignore[union-attr]
    return {"bytes": sent + received, "received": received, "wall": wall, "cpu": spent}


def rsync_daemon(root: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    conf = work / "rsyncd.conf"
    conf.write_text(
        f"pid file = {work / 'rsyncd.pid'}\nport = {port}\naddress = 127.0.0.1\nuse chroot = no\n"
        f"log file = {work / 'rsyncd.log'}\n[mirror]\npath = {root}\nread only = yes\n"
    )
    proc = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={conf}"])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"rsync://127.0.0.1:{port}/mirror"


def s3_scenario(root: Path, work: Path, keys: Path) -> dict[str, Any]:
    """The runbook's line: upload N, ``aws s3 sync --size-only`` it down; upload N+1 the same way, sync again."""
    port = free_port()
    log = (work / "moto.log").open("wb")
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    try:
        for _ in range(300):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        boto3.client(
            "s3", endpoint_url=url, aws_access_key_id="bench", aws_secret_access_key="bench", region_name="us-east-1"
        ).create_bucket(Bucket="bench")
        dest = work / "aws"
        result: dict[str, Any] = {}
        for export_id in ("n", "n1"):
            run(
                [
                    "aws",
                    "s3",
                    "sync",
                    "--delete",
                    "--size-only",
                    "--only-show-errors",
                    root / export_id,
                    "s3://bench/concelier/latest",
                ],
                env=env,
            )
            before = Path(work / "moto.log").read_text(errors="replace").count("GET /bench/")
            t0 = time.perf_counter()
            res = run(["aws", "s3", "sync", "--delete", "--size-only", "s3://bench/concelier/latest", dest], env=env)
            wall = time.perf_counter() - t0
            downloaded = [
                Path(line.split(" to ", 1)[1]) for line in res.stdout.splitlines() if line.startswith("download:")
            ]
            requests = Path(work / "moto.log").read_text(errors="replace").count("GET /bench/") - before
            ok = run([*CLI, "verify", dest, "--key", keys / "mirror-key.pub"], check=False)
            result[export_id] = {
                "bytes": sum(p.stat().st_size for p in downloaded if p.exists()),
                "files": len(downloaded),
                "requests": requests,
                "wall": wall,
                "ok": ok.returncode == 0,
                "error": ok.stderr.strip()[-200:],
            }
        return result
    finally:
        moto.terminate()
        moto.wait(10)
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "corpus" / "osv")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/stella-update-bench"))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    if not all((args.corpus / f).is_dir() for f in FOLDERS):
        raise SystemExit(f"the OSV corpus folders {FOLDERS} are not under {args.corpus}")
    work = args.dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    keys = work / "keys"
    run([*CLI, "keys", "generate", "--out", keys])
    src, root = work / "src", work / "export"
    copy_corpus(args.corpus, src)
    t_n = export(src, root, keys, "n")
    server = Server(root, work)
    try:
        first: dict[str, dict[str, Any]] = {"compressed": {}, "uncompressed": {}}
        for d in DOMAINS:
            first["compressed"][d] = pull(server, work / "pull" / d, d, keys)
            first["uncompressed"][d] = pull(server, work / "pull-plain" / d, d, keys, "--no-compress")
        daemon, rurl = rsync_daemon(root, work)
        try:
            for d in DOMAINS:
                rsync_domain(f"{rurl}/n/mirror/{d}/", work / "rsync" / d)
                rsync_domain(f"{rurl}/n/mirror/{d}/", work / "rsync-nozst" / d, "--exclude=*.zst")
            changes = change_ten(src)
            t_n1 = export(src, root, keys, "n1")
            server.wait_for("n1")
            sizes = {d: (root / "n1" / "mirror" / d / "bundle.json").stat().st_size for d in DOMAINS}
            changed = {
                d: (root / "n" / "mirror" / d / "bundle.json").read_bytes()
                != (root / "n1" / "mirror" / d / "bundle.json").read_bytes()
                for d in DOMAINS
            }
            ours = {d: pull(server, work / "pull" / d, d, keys) for d in DOMAINS}
            full = {d: pull(server, work / "pull-full" / d, d, keys, "--no-delta", "--no-compress") for d in DOMAINS}
            rs = {d: rsync_domain(f"{rurl}/n1/mirror/{d}/", work / "rsync" / d) for d in DOMAINS}
            rs0 = {
                d: rsync_domain(f"{rurl}/n1/mirror/{d}/", work / "rsync-nozst" / d, "--exclude=*.zst") for d in DOMAINS
            }
        finally:
            daemon.terminate()
            daemon.wait(10)
    finally:
        server.stop()
    aws = s3_scenario(root, work, keys)
    report = {
        "exportSeconds": {"n": t_n, "n1": t_n1},
        "changes": changes,
        "bundleBytes": sizes,
        "changed": changed,
        "first": first,
        "pull": ours,
        "full": full,
        "rsync": rs,
        "rsyncNoZst": rs0,
        "awsSizeOnly": aws,
    }
    if not args.markdown:
        print(json.dumps(report, indent=2, default=str))
        return
    counts = {
        d: json.loads((root / "n1" / "mirror" / d / "manifest.json").read_bytes())["advisoryCount"] for d in DOMAINS
    }
    print(
        f"N→N+1: {len(changes)} documents changed; exports took {t_n:.0f} s and {t_n1:.0f} s; "
        f"advisories per domain in N+1: {counts}\n"
    )
    print(
        "| domain | bundle bytes | changed | pull bytes (reqs) | % of bundle | rsync bytes (no .zst / all) "
        "| pull / rsync (no .zst) | full download | pull wall s (CPU) | rsync wall s (CPU) | verifies (pull/full) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for d in DOMAINS:
        p, r, r0, f = ours[d], rs[d], rs0[d], full[d]
        print(
            f"| {d} | {sizes[d]:,} | {'yes' if changed[d] else 'no'} | {p['bytes']:,} ({p['requests']}) "
            f"| {100 * p['bytes'] / sizes[d]:.2f} % | {r0['bytes']:,} / {r['bytes']:,} "
            f"| {p['bytes'] / max(1, r0['bytes']):.2f}× | {f['bytes']:,} ({f['requests']}) "
            f"| {p['wall']:.2f} ({p['cpu']:.2f}) | {r0['wall']:.2f} ({r0['cpu']:.2f}) | {p['ok']}/{f['ok']} |"
        )
    a = aws["n1"]
    print(
        f"\n`aws s3 sync --size-only` N→N+1: {a['bytes']:,} bytes in {a['files']} files, {a['requests']} GETs, "
        f"{a['wall']:.2f} s; verifies: {a['ok']} {a['error']}"
    )
    comp = sum(x["bytes"] for x in first["compressed"].values())
    plain = sum(x["bytes"] for x in first["uncompressed"].values())
    print(
        f"\nFirst pull of N (3 domains): compressed {comp:,} bytes, uncompressed {plain:,} bytes "
        f"({100 * comp / plain:.1f} %)"
    )


if __name__ == "__main__":
    main()
