"""Benchmark of ``stella-mirror sync`` against ``aws s3 sync --delete --size-only`` and ``rclone sync --size-only``.

    python3 bench/sync.py [--lag-publishes 20] [--poll 10] [--skip-lag] [--repeat 5] [--markdown]

One S3 API endpoint on loopback (moto's server mode, which logs one line per request: the requests are counted
there) holds the same two trees for every tool, under ``s3://bench/concelier/latest`` and
``s3://bench/excititor/latest``:

* a Concelier export with 4 domains whose bundles weigh about 5, 15, 30 and 50 MB (each with manifest, JWS
  and ``.sig``; the signed index);
* an Excititor export with 3 domains × 4 exports (artifacts of 1–4 MB with JWS and ``.sig``, signed indexes).

Scenarios, each tool syncing both prefixes into its own directories: (a) first sync into empty directories,
(b) a no-op (nothing changed), (c) a new export where 2 domains of each product changed — the other domains'
payloads keep their bytes (an Excititor export does by nature; the Concelier bundles of unchanged domains are
carried over by this benchmark's publisher, while every signature and index is new). Printed per tool and
scenario: wall time (the median of ``--repeat`` runs, each from the same starting point), requests at the endpoint,
max RSS of the tool's processes, the ratios to ``aws s3 sync``,
and whether the result is *correct* — the served tree equals the source export byte for byte (ours: what
``latest`` names; the others: the directory they wrote).

Then what re-verification costs: (c) once more for ``stella-mirror sync`` from the same state, but with the
digests it recorded when it verified files dropped, so every reused file is hashed before it is linked.

Then the publish-to-served lag of ``stella-mirror sync --watch --poll 10``: ``--lag-publishes`` times a new
Concelier export (one domain changed) is uploaded to the bucket (payloads first, the index last) and the time
until the destination's ``latest`` names it is measured; p50 and p95 are printed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import yaml

from stella_mirror.bundle import canonical
from stella_mirror.bundle.files import sign_file, write_atomic
from stella_mirror.bundle.keyfiles import generate_keypair
from stella_mirror.bundle.signing import SigningKey
from stella_mirror.bundle.writer import ExcititorArtifact, ExportStamp, write_excititor_domain
from stella_mirror.timeutil import rfc3339, utcnow

BUCKET = "bench"
MB = 1 << 20
CONCELIER_SIZES = {"alpha": 5, "bravo": 15, "charlie": 30, "delta": 50}
EXCITITOR_DOMAINS = ("east", "north", "west")
EXCITITOR_SIZES = (1, 2, 3, 4)
CLI = [sys.executable, "-c", "from stella_mirror.cli.main import main; main()"]
_REQUEST = re.compile(rb'"(?:GET|HEAD|PUT|POST|DELETE) ')


# --- trees ------------------------------------------------------------------------------------------------


def _payload(seed: str, size_mb: float) -> bytes:
    """JSON bytes of about ``size_mb`` MB (±3 %: a new export's bundle rarely keeps its size), different for
    every seed."""
    rng = random.Random(seed)
    target = int(size_mb * MB * rng.uniform(0.97, 1.03))
    records, total = [], 0
    while total < target:
        text = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(200)) * 20
        rec = {"advisoryKey": f"{seed}-{len(records):07d}", "description": text}
        records.append(rec)
        total += len(text) + 60
    return canonical.dumps({"advisories": records, "seed": seed})


_WRITTEN: dict[tuple[str, str], tuple[Path, Any]] = {}
"""(domain, seed) → the directory of the bundle written for it and its signed reference."""


def build_concelier(out: Path, key: SigningKey, export_id: str, sequence: int, seeds: dict[str, str]) -> Path:
    """A signed Concelier export; a domain whose seed was built before carries that bundle (and its signatures)
    over, as a publisher that keeps unchanged domains' bundles would."""
    now = utcnow()
    stamp = ExportStamp(export_id, sequence, rfc3339(now), rfc3339(now.replace(year=now.year + 1)))
    export = out / export_id
    domains = []
    for domain, seed in seeds.items():
        ddir = export / "mirror" / domain
        ddir.mkdir(parents=True)
        if (domain, seed) in _WRITTEN:
            old, bundle_ref = _WRITTEN[(domain, seed)]
            for name in ("bundle.json", "bundle.json.jws", "bundle.json.sig"):
                shutil.copyfile(old / name, ddir / name)
        else:
            data = _payload(seed, CONCELIER_SIZES[domain])
            ref = write_atomic(ddir / "bundle.json", data)
            signature = sign_file(key, ddir / "bundle.json", f"mirror/{domain}/")
            bundle_ref = {"path": f"mirror/{domain}/bundle.json", "sizeBytes": ref["sizeBytes"],
                          "digest": ref["digest"], "signature": signature}
            _WRITTEN[(domain, seed)] = (ddir, bundle_ref)
        manifest = {"schemaVersion": 1, "exportId": export_id, "sequence": sequence, "generatedAt":
                    stamp.generated_at, "domainId": domain, "displayName": domain, "advisoryCount": 1,
                    "bundle": bundle_ref, "sources": [],
                    "delta": {"baseExportId": None, "added": [], "changed": [], "removed": []}}
        mref = write_atomic(ddir / "manifest.json", canonical.dumps(manifest))
        domains.append({"domainId": domain, "displayName": domain, "advisoryCount": 1, "sources": [],
                        "manifest": {"path": f"mirror/{domain}/manifest.json", "sizeBytes": mref["sizeBytes"],
                                     "digest": mref["digest"]}, "bundle": bundle_ref})
    index = {"schemaVersion": 1, "exportId": export_id, "sequence": sequence, "generatedAt": stamp.generated_at,
             "expiresAt": stamp.expires_at, "domains": domains}
    write_atomic(export / "mirror" / "index.json", canonical.dumps(index))
    sign_file(key, export / "mirror" / "index.json", "mirror/")
    return export


def build_excititor(out: Path, key: SigningKey, export_id: str, sequence: int,
                    seeds: dict[str, list[str]]) -> Path:
    now = utcnow()
    stamp = ExportStamp(export_id, sequence, rfc3339(now), rfc3339(now.replace(year=now.year + 1)))
    export = out / export_id
    for domain, domain_seeds in seeds.items():
        arts = []
        for i, seed in enumerate(domain_seeds):
            data = _payload(seed, EXCITITOR_SIZES[i])

            def write(fh: Any, data: bytes = data) -> int:
                fh.write(data)
                return 1

            arts.append(ExcititorArtifact(f"export{i}", "json", "consensus", "consensus.json", write, ["bench"]))
        write_excititor_domain(export, domain, domain, stamp, arts, key)
    return export


# --- the endpoint and the tools --------------------------------------------------------------------------


class Endpoint:
    """moto's S3 server on a free port; its log counts requests."""

    def __init__(self, work: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / "moto.log"
        self.fh = self.log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=self.fh, stderr=self.fh)
        for _ in range(300):
            try:
                httpx.get(self.url, timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        self.env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                    "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": self.url,
                    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
                    "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
                    "RCLONE_CONFIG_BENCH_ENDPOINT": self.url, "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": "bench",
                    "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": "bench-secret", "RCLONE_CONFIG_BENCH_REGION":
                    "us-east-1", "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true"}
        self.s3: Any = boto3.client("s3", endpoint_url=self.url, aws_access_key_id="bench",
                                    aws_secret_access_key="bench-secret", region_name="us-east-1")
        self.s3.create_bucket(Bucket=BUCKET)

    def requests(self) -> int:
        self.fh.flush()
        return len(_REQUEST.findall(self.log.read_bytes()))

    def replace_prefix(self, prefix: str, export: Path, index_last: bool = True) -> None:
        """Upload ``export`` under ``prefix`` (changed objects only, index files last), delete what is gone."""
        remote = {o["Key"]: o["ETag"].strip('"') for page in self.s3.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix + "/") for o in page.get("Contents", [])}
        local = {f"{prefix}/{p.relative_to(export).as_posix()}": p for p in export.rglob("*") if p.is_file()}
        names = sorted(local, key=lambda k: (index_last and "/index.json" in k, k))
        for k in names:
            if remote.get(k) != hashlib.md5(local[k].read_bytes(), usedforsecurity=False).hexdigest():
                self.s3.upload_file(str(local[k]), BUCKET, k)
        for k in set(remote) - set(local):
            self.s3.delete_object(Bucket=BUCKET, Key=k)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.fh.close()


@dataclass
class Result:
    seconds: float
    requests: int
    rss_mb: float
    correct: bool


def _peak_rss_mb(pid: int) -> float:
    """VmHWM of a running process (its peak RSS since exec), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_measured(cmds: list[list[str]], env: dict[str, str]) -> tuple[float, float]:
    """Run commands one after the other; (wall seconds, max RSS MB of any of them). Fail loudly.

    The peak RSS is read from /proc while each runs: a child's ``ru_maxrss`` would start at this (large)
    process's RSS, which Linux carries across fork and exec.
    """
    started, rss = time.monotonic(), 0.0
    for cmd in cmds:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while proc.poll() is None:
            rss = max(rss, _peak_rss_mb(proc.pid))
            time.sleep(0.01)
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
    return time.monotonic() - started, rss


def tree(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")}


class Tool:
    name = ""

    def __init__(self, work: Path, ep: Endpoint) -> None:
        self.work, self.ep = work / self.name, ep
        self.work.mkdir(parents=True)

    def commands(self) -> list[list[str]]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """The environment of the tool's processes: ours and the AWS CLI get the AWS_* settings; nothing of the
        calling shell's CA settings (rclone refuses AWS_CA_BUNDLE with its own transport)."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        return {**base, **{k: v for k, v in self.ep.env.items() if k.startswith("AWS_")}}

    def served(self, product: str) -> Path:
        return self.work / product

    def snapshot(self, name: str) -> None:
        """Keep a copy of everything the tool has written (destinations, and for us the state)."""
        shutil.copytree(self.work, self.work.with_name(f"{self.work.name}.{name}"), symlinks=True)

    def restore(self, name: str) -> None:
        shutil.rmtree(self.work)
        shutil.copytree(self.work.with_name(f"{self.work.name}.{name}"), self.work, symlinks=True)

    def run(self, sources: dict[str, Path]) -> Result:
        before = self.ep.requests()
        seconds, rss = run_measured(self.commands(), self.env())
        time.sleep(0.3)  # the endpoint's log is written by another process
        correct = all(tree(self.served(p)) == tree(src) for p, src in sources.items())
        return Result(seconds, self.ep.requests() - before, rss, correct)


class Ours(Tool):
    name = "stella-mirror sync"

    def __init__(self, work: Path, ep: Endpoint, pub: Path) -> None:
        super().__init__(work, ep)
        self.config = self.work / "sync.yaml"
        self.config.write_text(yaml.safe_dump({"sync": {"stateDir": str(self.work / "state"), "jobs": [
            {"name": p, "kind": p, "source": f"s3://{BUCKET}/{p}/latest", "dest": str(self.work / p),
             "trustKeys": [str(pub)]} for p in ("concelier", "excititor")]}}))

    def commands(self) -> list[list[str]]:
        return [[*CLI, "sync", "--config", str(self.config), "--log", "json"]]

    def served(self, product: str) -> Path:
        return (self.work / product / "latest").resolve()

    def forget_digests(self) -> None:
        """Drop the digests the sync recorded when it verified files: its next run hashes every file it reuses
        (as the first run after an upgrade does, or ``--repair`` on the served export)."""
        import sqlite3
        from contextlib import closing

        with closing(sqlite3.connect(self.work / "state" / "sync-state.sqlite3")) as db, db:
            db.execute("DELETE FROM verified")


class Aws(Tool):
    name = "aws s3 sync"

    def commands(self) -> list[list[str]]:
        aws = shutil.which("aws") or "aws"
        return [[aws, "s3", "sync", f"s3://{BUCKET}/{p}/latest", str(self.work / p), "--delete", "--size-only",
                 "--only-show-errors"] for p in ("concelier", "excititor")]


class Rclone(Tool):
    name = "rclone sync"

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
        return {**base, **{k: v for k, v in self.ep.env.items() if k.startswith("RCLONE_")}}

    def commands(self) -> list[list[str]]:
        return [["rclone", "sync", f"bench:{BUCKET}/{p}/latest", str(self.work / p), "--size-only"]
                for p in ("concelier", "excititor")]


# --- main -----------------------------------------------------------------------------------------------


def lag(work: Path, ep: Endpoint, key: SigningKey, pub: Path, pubdir: Path, publishes: int, poll: float,
        seeds: dict[str, str], sequence: int) -> list[float]:
    dest, log = work / "lag-dest", work / "lag.log"
    cmd = [*CLI, "sync", "--source", f"s3://{BUCKET}/concelier/latest", "--dest", str(dest), "--kind", "concelier",
           "--trust-key", str(pub), "--state-dir", str(work / "lag-state"), "--watch", "--poll", str(poll),
           "--log", "json"]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, env={**os.environ, **{k: v for k, v in ep.env.items() if k.startswith("AWS_")}},
                                stdout=fh, stderr=fh)
    lags = []
    try:
        deadline = time.monotonic() + 300
        while not (dest / "latest").is_symlink():
            if time.monotonic() > deadline:
                raise RuntimeError(log.read_text()[-2000:])
            time.sleep(0.1)
        for n in range(publishes):
            sequence += 1
            export_id = f"lag{n}"
            seeds = {**seeds, "alpha": f"alpha-lag-{n}"}
            last = build_concelier(pubdir, key, export_id, sequence, seeds)
            time.sleep(random.uniform(0, poll))  # publishes do not line up with polls
            ep.replace_prefix("concelier/latest", last)
            published = time.monotonic()
            while not ((dest / "latest").is_symlink() and os.readlink(dest / "latest") == export_id):
                if time.monotonic() - published > 120:
                    raise RuntimeError(log.read_text()[-2000:])
                time.sleep(0.05)
            lags.append(time.monotonic() - published)
            print(f"  publish {n + 1}/{publishes}: served after {lags[-1]:.1f} s", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
    return lags


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lag-publishes", type=int, default=20)
    parser.add_argument("--poll", type=float, default=10.0)
    parser.add_argument("--skip-lag", action="store_true")
    parser.add_argument("--no-rclone", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--repeat", type=int, default=5, help="runs per tool and scenario (the median is kept)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    ep = Endpoint(work)
    try:
        key = generate_keypair(work / "keys")
        pub = work / "keys" / "mirror-key.pub"
        pubdir = work / "pub"
        print("building trees…", flush=True)
        cseeds = {d: f"{d}-1" for d in CONCELIER_SIZES}
        xseeds = {d: [f"{d}-{i}-1" for i in range(4)] for d in EXCITITOR_DOMAINS}
        c1 = build_concelier(pubdir / "c", key, "c1", 1, cseeds)
        x1 = build_excititor(pubdir / "x", key, "x1", 1, xseeds)
        cseeds2 = {**cseeds, "alpha": "alpha-2", "charlie": "charlie-2"}
        xseeds2 = {**xseeds, "east": ["east-0-2", *xseeds["east"][1:]], "west": [*xseeds["west"][:3], "west-3-2"]}
        c2 = build_concelier(pubdir / "c", key, "c2", 2, cseeds2)
        x2 = build_excititor(pubdir / "x", key, "x2", 2, xseeds2)
        size = sum(p.stat().st_size for p in (*c1.rglob("*"), *x1.rglob("*")) if p.is_file())
        print(f"trees: {size / MB:.0f} MB in the first exports", flush=True)
        ep.replace_prefix("concelier/latest", c1)
        ep.replace_prefix("excititor/latest", x1)

        tools: list[Tool] = [Aws(work, ep), Ours(work, ep, pub)]
        if not args.no_rclone and shutil.which("rclone"):
            tools.append(Rclone(work, ep))
        results: dict[tuple[str, str], Result] = {}
        for scenario, sources in (("a", {"concelier": c1, "excititor": x1}), ("b", {"concelier": c1,
                                  "excititor": x1}), ("c", {"concelier": c2, "excititor": x2})):
            if scenario == "c":
                ep.replace_prefix("concelier/latest", c2)
                ep.replace_prefix("excititor/latest", x2)
            for tool in tools:
                # The median of --repeat runs, each from the same starting point: (a) from empty directories,
                # (c) from the state (a) left (copies restored before each run); (b) repeats as it is.
                runs = []
                for i in range(args.repeat):
                    if scenario in ("a", "c"):
                        (tool.restore if i else tool.snapshot)("before-" + scenario)
                    runs.append(tool.run(sources))
                r = sorted(runs, key=lambda x: x.seconds)[len(runs) // 2]
                results[(tool.name, scenario)] = r
                print(f"({scenario}) {tool.name:<20} {r.seconds:7.2f} s {r.requests:5d} requests "
                      f"{r.rss_mb:6.0f} MB RSS  {'correct' if r.correct else 'NOT the source export'}", flush=True)
        report(results, tools, args.markdown)
        # What re-verification costs: (c) again from the same state, with no recorded digest believed — every
        # reused file (the unchanged domains' payloads) is hashed before it is linked.
        ours = next(t for t in tools if isinstance(t, Ours))
        runs = []
        for _ in range(args.repeat):
            ours.restore("before-c")
            ours.forget_digests()
            runs.append(ours.run({"concelier": c2, "excititor": x2}))
        r = sorted(runs, key=lambda x: x.seconds)[len(runs) // 2]
        with_records = results[(ours.name, "c")].seconds
        print(f"(c) re-verification: {r.seconds:.2f} s hashing every reused file vs {with_records:.2f} s with the "
              f"sync's records: +{r.seconds - with_records:.2f} s  {'correct' if r.correct else 'NOT the source'}")
        if not args.skip_lag:
            print(f"lag: --watch --poll {args.poll:g}, {args.lag_publishes} publishes", flush=True)
            lags = lag(work, ep, key, pub, pubdir / "lag", args.lag_publishes, args.poll, cseeds2, 2)
            q = statistics.quantiles(lags, n=20, method="inclusive") if len(lags) > 1 else lags * 19
            print(f"publish-to-served lag: p50 {statistics.median(lags):.1f} s, p95 {q[18]:.1f} s, "
                  f"max {max(lags):.1f} s (target p95 <= 20 s)")
    finally:
        ep.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(results: dict[tuple[str, str], Result], tools: list[Tool], markdown: bool) -> None:
    names = {"a": "(a) first sync", "b": "(b) no-op", "c": "(c) 2 domains changed"}
    print()
    if markdown:
        print("| scenario | tool | wall s | × aws | requests | max RSS MB | result |")
        print("|---|---|---:|---:|---:|---:|---|")
    for scenario in ("a", "b", "c"):
        base = results[("aws s3 sync", scenario)]
        for tool in tools:
            r = results[(tool.name, scenario)]
            ratio = r.seconds / base.seconds if base.seconds else float("nan")
            verdict = "correct" if r.correct else "**not the source export**"
            if markdown:
                print(f"| {names[scenario]} | {tool.name} | {r.seconds:.2f} | {ratio:.2f} | {r.requests} | "
                      f"{r.rss_mb:.0f} | {verdict} |")
            else:
                print(f"{names[scenario]:<24} {tool.name:<20} {r.seconds:7.2f} s  x{ratio:5.2f}  "
                      f"{r.requests:5d} req  {r.rss_mb:5.0f} MB  {verdict}")


if __name__ == "__main__":
    sys.exit(main())
