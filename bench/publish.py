"""Benchmark of ``stella-mirror publish --to s3://`` against the runbook's ``aws s3 sync --delete --size-only`` used
to upload, on the trees of ``bench/sync.py`` (Concelier: 4 domains of 5–50 MB; Excititor: 3 domains × 4 artifacts
of 1–4 MB), one moto S3 endpoint on loopback (requests counted in its log).

    python3 bench/publish.py [--markdown]

Scenarios per product: (a) the first export into an empty prefix; (b) a new export where 2 domains changed (the
other domains' payloads keep their bytes, as in bench/sync.py); (c) the same export again. Printed per tool and
scenario: wall time, requests at the endpoint, payload bytes sent (ours: the outcome's ``bytesUploaded``; aws:
the sizes of the files it uploaded, from its own ``--dryrun`` listing), and whether a ``stella-mirror sync`` from
the bucket afterwards serves the new export (``correct``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from sync import BUCKET, CLI, Endpoint, build_concelier, build_excititor

from stella_mirror.bundle.keyfiles import generate_keypair


def _run(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env}, check=False)
    return time.perf_counter() - start, proc


def _synced(ep: Endpoint, work: Path, kind: str, prefix: str, export_id: str, pub: Path) -> bool:
    """Does a fresh ``stella-mirror sync`` from ``prefix`` serve ``export_id``, verified?"""
    dest = Path(tempfile.mkdtemp(dir=work, prefix="check-"))
    try:
        cmd = [
            *CLI,
            "sync",
            "--source",
            f"s3://{BUCKET}/{prefix}",
            "--dest",
            str(dest),
            "--kind",
            kind,
            "--trust-key",
            str(pub),
            "--state-dir",
            str(dest / ".state"),
            "--log",
            "json",
        ]
        _, proc = _run(cmd, ep.env)
        return proc.returncode == 0 and os.readlink(dest / "latest") == export_id
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def ours(ep: Endpoint, work: Path, kind: str, export: Path, pub: Path) -> dict[str, Any]:
    before = ep.requests()
    cmd = [
        *CLI,
        "publish",
        str(export),
        "--to",
        f"s3://{BUCKET}/ours-{kind}",
        "--key",
        str(pub),
        "--json",
        "--log",
        "json",
    ]
    seconds, proc = _run(cmd, ep.env)
    assert proc.returncode == 0, proc.stderr
    out = orjson.loads(proc.stdout)
    return {
        "seconds": seconds,
        "requests": ep.requests() - before,
        "bytes": out["bytesUploaded"],
        "correct": _synced(ep, work, kind, f"ours-{kind}/latest", export.name, pub),
    }


def aws(ep: Endpoint, work: Path, kind: str, export: Path, pub: Path) -> dict[str, Any]:
    dest = f"s3://{BUCKET}/aws-{kind}/latest"
    args = ["aws", "s3", "sync", str(export), dest, "--delete", "--size-only"]
    _, dry = _run([*args, "--dryrun"], ep.env)
    sent = sum(
        (export / line.split(f"{export}/", 1)[1].split(" to ")[0]).stat().st_size
        for line in dry.stdout.splitlines()
        if line.startswith("(dryrun) upload:")
    )
    before = ep.requests()
    seconds, proc = _run([*args, "--only-show-errors"], ep.env)
    assert proc.returncode == 0, proc.stderr
    return {
        "seconds": seconds,
        "requests": ep.requests() - before,
        "bytes": sent,
        "correct": _synced(ep, work, kind, f"aws-{kind}/latest", export.name, pub),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    ep = Endpoint(work)
    try:
        key = generate_keypair(work / "keys")
        pub = work / "keys" / "mirror-key.pub"
        trees = work / "trees"
        c1 = build_concelier(trees / "c", key, "c1", 1, {d: f"{d}-1" for d in ("alpha", "bravo", "charlie", "delta")})
        c2 = build_concelier(
            trees / "c",
            key,
            "c2",
            2,
            {"alpha": "alpha-1", "bravo": "bravo-2", "charlie": "charlie-1", "delta": "delta-2"},
        )
        x1 = build_excititor(
            trees / "x", key, "x1", 1, {d: [f"{d}-{i}-1" for i in range(4)] for d in ("east", "north", "west")}
        )
        x2 = build_excititor(
            trees / "x",
            key,
            "x2",
            2,
            {
                "east": [f"east-{i}-1" for i in range(4)],
                "north": ["north-0-2", "north-1-1", "north-2-1", "north-3-1"],
                "west": ["west-0-1", "west-1-1", "west-2-1", "west-3-2"],
            },
        )
        rows = []
        for kind, first, second in (("concelier", c1, c2), ("excititor", x1, x2)):
            for tool in (ours, aws):
                for scenario, export in (
                    ("(a) first", first),
                    ("(b) 2 domains changed", second),
                    ("(c) same again", second),
                ):
                    rows.append((kind, tool.__name__, scenario, tool(ep, work, kind, export, pub)))
    finally:
        ep.stop()
        shutil.rmtree(work, ignore_errors=True)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    if args.markdown:
        print(f"CPU: {cpu}, {os.cpu_count()} cores\n")
        print("| product | tool | scenario | wall s | requests | payload bytes sent | sync serves the new export |")
        print("|---|---|---|---|---|---|---|")
        for kind, tool, scenario, r in rows:
            print(
                f"| {kind} | {tool} | {scenario} | {r['seconds']:.2f} | {r['requests']} | {r['bytes']:,} | "
                f"{'yes' if r['correct'] else 'NO'} |"
            )
        return
    print(f"CPU: {cpu}")
    for kind, tool, scenario, r in rows:
        print(
            f"{kind:10} {tool:5} {scenario:24} {r['seconds']:7.2f}s {r['requests']:5} req "
            f"{r['bytes']:>12,} B  correct={r['correct']}"
        )


if __name__ == "__main__":
    main()
