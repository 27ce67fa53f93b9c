"""Benchmark of ``stella-mirror export concelier`` on a synthetic OSV corpus.

    python3 bench/export.py --count 100000 --count 300000 [--dir /tmp/stella-bench] [--workers 2]
    python3 bench/export.py --corpus ../shared/corpus/osv      # each subfolder a source (pypa, golang, …)

Run it once with the code to measure (``PYTHONPATH=src``) and once with the code to compare with (e.g.
``PYTHONPATH=/path/to/main/src``): the export runs as ``sys.executable -c "…main()"`` with this environment.

For each N (and for the corpus) it:

1. generates N OSV JSON documents deterministically (seeded): ids, aliases (a CVE and a GHSA; about
   10 % of CVEs are shared by two records, so merges happen), one or two affected packages with
   ECOSYSTEM/SEMVER ranges and version lists, references, CVSS v3 vectors and ~2 KB of text — the
   shape of the pypa/golang records in the shared corpus;
2. compiles the package's bytecode once (as ``pip install`` does; an editable install or
   ``PYTHONDONTWRITEBYTECODE`` would otherwise recompile every module at each start), then runs the
   real CLI in a child process (``--repeat`` times, default 3; the fastest run counts, as
   the floor's best of three does) and reads its peak RSS with
   ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the maximum over the export processes and their
   reader processes);
3. measures a *floor* in this process: orjson-serialising the same N records (sorted keys) and
   SHA-256 over the resulting bytes — the least any exporter must do to write a signed bundle
   (best of three). Since bundles carry each OSV document twice (its canonical form, about the
   document's size, and the document itself in its provenance entry), the floor serialises each
   document twice as well;
   while the export runs, it samples ``/proc/<pid>/status`` of the exporter and its readers every 20 ms
   for the peak of ``RssAnon`` (anonymous memory: what the process allocated) and of ``RssFile +
   RssShmem`` (pages of mapped files and shared memory, which the kernel can drop and share);
4. prints advisories/s, peak RSS, the export's CPU seconds (exporter + readers: unlike wall time,
   barely affected by other load on the machine), its per-phase timings and the export-time / floor
   ratio as a Markdown table row, with the first 16 hex digits of the bundle's SHA-256 (the same
   corpus must always give the same bundle: see docs/benchmarks.md for the recorded digests).
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import itertools
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

import stella_mirror
from stella_mirror.bundle.keyfiles import generate_keypair

_WORDS = [
    "request",
    "parser",
    "buffer",
    "overflow",
    "allows",
    "remote",
    "attackers",
    "crafted",
    "input",
    "denial",
    "service",
    "memory",
    "corruption",
    "authentication",
    "bypass",
    "header",
    "validation",
    "path",
    "traversal",
    "archive",
    "extraction",
    "injection",
    "template",
    "sandbox",
    "escape",
    "certificate",
    "verification",
    "timing",
    "side",
    "channel",
    "cookie",
    "session",
    "fixation",
    "redirect",
    "deserialization",
    "untrusted",
    "data",
    "integer",
    "underflow",
]
_ECOSYSTEMS = (("PyPI", "ECOSYSTEM"), ("Go", "SEMVER"), ("npm", "SEMVER"), ("Maven", "ECOSYSTEM"))
_VECTORS = (
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
    "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N",
    "CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H",
    "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:C/C:L/I:L/A:N",
)


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def records(n: int, seed: int = 20261129) -> Iterator[dict[str, Any]]:
    """N deterministic OSV records of about 2 KB each."""
    rng = random.Random(seed)
    for i in range(n):
        # Every tenth record reuses the CVE of the record before it: a pypa/golang-style pair to merge.
        cve_no = i - 1 if i % 10 == 9 else i
        ghsa = f"GHSA-{i:04x}-{(i * 7919) % 65536:04x}-{(i * 104729) % 65536:04x}"
        affected = []
        for k in range(1 + (i % 3 == 0)):
            eco, rtype = _ECOSYSTEMS[(i + k) % len(_ECOSYSTEMS)]
            major = rng.randint(0, 9)
            versions = [f"{major}.{minor}.{patch}" for minor in range(3) for patch in range(4)]
            affected.append(
                {
                    "package": {"ecosystem": eco, "name": f"pkg-{i % 5000}-{k}"},
                    "ranges": [{"type": rtype, "events": [{"introduced": f"{major}.0.0"}, {"fixed": f"{major}.3.0"}]}],
                    "versions": versions,
                }
            )
        yield {
            "schema_version": "1.6.0",
            "id": f"SYN-{2000 + i % 25}-{i:06d}",
            "modified": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T12:{i % 60:02d}:00Z",
            "published": f"{2000 + i % 25}-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00Z",
            "aliases": [f"CVE-{2000 + cve_no % 25}-{10000 + cve_no}", ghsa],
            "summary": _text(rng, 8),
            "details": _text(rng, 120),
            "severity": [{"type": "CVSS_V3", "score": _VECTORS[i % len(_VECTORS)]}],
            "affected": affected,
            "references": [
                {"type": "ADVISORY", "url": f"https://example.org/advisories/SYN-{i:06d}"},
                {"type": "FIX", "url": f"https://example.org/pkg-{i % 5000}/commit/{i * 2654435761 % 2**32:08x}"},
                {"type": "WEB", "url": f"https://example.org/bugs/{i}"},
                {"type": "REPORT", "url": f"https://example.org/reports/{i}"},
            ],
            "database_specific": {"severity": ("LOW", "MODERATE", "HIGH", "CRITICAL")[i % 4]},
        }


def generate(n: int, dest: Path) -> int:
    """Write N documents, 1,000 per folder; return total bytes."""
    total = 0
    for i, rec in enumerate(records(n)):
        folder = dest / f"{i // 1000:04d}"
        if i % 1000 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        data = orjson.dumps(rec, option=orjson.OPT_INDENT_2)
        (folder / f"{rec['id']}.json").write_bytes(data)
        total += len(data)
    return total


def floor_seconds(n: int, repeat: int = 3) -> float:
    """:func:`floor_of` the generated records."""
    return floor_of(records(n), repeat)


def corpus_documents(root: Path) -> Iterator[dict[str, Any]]:
    """Every OSV document below ``root`` (JSON or YAML), parsed (outside the timed part of the floor)."""
    import yaml

    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix == ".json":
            yield orjson.loads(path.read_bytes())
        elif path.suffix in (".yaml", ".yml"):
            yield yaml.load(path.read_bytes(), Loader=yaml.CSafeLoader)


def floor_of(documents: Iterator[dict[str, Any]], repeat: int = 3) -> float:
    """Time to orjson-serialise the same records (sorted keys) and SHA-256 the bytes (generation excluded).

    Records are generated in blocks of 4,096 outside the timed part (a clock read per record would add
    ~10 %); each block is timed ``repeat`` times and its best time counts, so that a neighbour's burst
    of CPU does not inflate the floor (repeats find the block warm in cache: if anything, this
    flatters the floor, not the exporter).
    """
    spent = 0.0
    it = documents
    while block := list(itertools.islice(it, 4096)):
        best = float("inf")
        for _ in range(repeat):
            h = hashlib.sha256()
            t0 = time.perf_counter()
            for rec in block:
                h.update(orjson.dumps([rec, rec], option=orjson.OPT_SORT_KEYS, default=str))
            best = min(best, time.perf_counter() - t0)
        spent += best
    return spent


def _status_kib(pid: int) -> tuple[int, int]:
    """``(RssAnon, RssFile + RssShmem)`` of a process in KiB (0, 0 once it is gone)."""
    anon = filed = 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1])
                elif line.startswith(("RssFile:", "RssShmem:")):
                    filed += int(line.split()[1])
    except OSError:
        pass
    return anon, filed


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except OSError:
        return []


class MemorySampler(threading.Thread):
    """Peaks of anonymous and file-backed resident memory of a process and its children (one process at a
    time: the largest single process, as ``ru_maxrss`` reports it)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_anon = 0
        self.peak_file = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in [self.pid, *_children(self.pid)]:
                anon, filed = _status_kib(pid)
                self.peak_anon = max(self.peak_anon, anon)
                self.peak_file = max(self.peak_file, filed)
            self.stop.wait(0.02)


def run_export(
    sources: list[Path], out: Path, keys: Path, workers: int | None
) -> tuple[float, dict[str, Any], MemorySampler]:
    cmd = [
        sys.executable,
        "-c",
        "from stella_mirror.cli.main import main; main()",
        "export",
        "concelier",
        "--key",
        str(keys / "mirror-key.pem"),
        "--out",
        str(out),
        "--json",
        "--export-id",
        "bench",
        "--generated-at",
        "2026-11-29T16:30:00Z",
    ]
    for src in sources:
        cmd += ["--source", f"osv:{src}"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = MemorySampler(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"export failed ({proc.returncode}):\n{stderr}")
    summary: dict[str, Any] = json.loads(stdout)
    return wall, summary, sampler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, action="append", help="corpus sizes (repeatable); default 100000")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/stella-bench"), help="scratch folder (on disk)")
    ap.add_argument("--workers", type=int, default=None, help="reader processes for the export (default: its own)")
    ap.add_argument("--keep-files", action="store_true", help="keep generated corpora for another run")
    ap.add_argument(
        "--corpus", type=Path, action="append", help="an OSV folder to export too; each subfolder is a source"
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="exports per size; the fastest counts, as the floor's best of three does (default 3)",
    )
    args = ap.parse_args()
    counts = args.count or ([] if args.corpus else [100_000])
    # what an installed package has: bytecode on disk (compileall writes it whatever PYTHONDONTWRITEBYTECODE says)
    compileall.compile_dir(Path(stella_mirror.__file__).parent, quiet=1)
    args.dir.mkdir(parents=True, exist_ok=True)
    keys = args.dir / "keys"
    if not (keys / "mirror-key.pem").exists():
        generate_keypair(keys)
    rows = []
    cases: list[tuple[str, list[Path], int, Any]] = []
    for corpus in args.corpus or []:
        subfolders = sorted(p for p in corpus.iterdir() if p.is_dir() and not p.name.startswith("."))
        files = [p for p in corpus.rglob("*") if p.is_file() and not p.name.startswith(".")]
        cases.append(
            (
                f"corpus {corpus.name} ({len(files)} files)",
                subfolders or [corpus],
                sum(p.stat().st_size for p in files),
                corpus,
            )
        )
    for n in counts:
        src = args.dir / f"osv-{n}"
        if not (src / "done").exists():
            shutil.rmtree(src, ignore_errors=True)
            t0 = time.perf_counter()
            size = generate(n, src)
            (src / "done").write_text(str(size))
            print(f"generated {n} documents, {size / 2**20:.0f} MiB, in {time.perf_counter() - t0:.1f}s", flush=True)
        cases.append((str(n), [src], int((src / "done").read_text()), n))
    for label, sources, size, what in cases:
        out = args.dir / "out"
        # Drop nothing from the page cache on purpose: both the export and the floor read warm data.
        # Each export starts from an empty root (sequence 1, no delta), like the first.
        runs = []
        for attempt in range(max(1, args.repeat)):
            shutil.rmtree(out, ignore_errors=True)
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            before, cpu_before = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
            wall, summary, sampler = run_export(sources, out, keys, args.workers)
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            peak_kib, cpu = usage.ru_maxrss, usage.ru_utime + usage.ru_stime - cpu_before
            if attempt == 0 and peak_kib <= before:
                print("warning: peak RSS of this child did not exceed an earlier child's", file=sys.stderr)
            runs.append((wall, cpu, summary, peak_kib, sampler.peak_anon, sampler.peak_file))
        print("  export runs (s): " + ", ".join(f"{r[0]:.2f} ({r[1]:.1f} CPU)" for r in runs), flush=True)
        wall, cpu, summary, peak_kib, anon_kib, file_kib = min(runs, key=lambda r: r[0])
        floor = floor_seconds(what) if isinstance(what, int) else floor_of(corpus_documents(what))
        bundle = out / "latest" / "mirror" / "primary" / "bundle.json"
        with bundle.open("rb") as fh:
            bundle_sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
        row = {
            "documents": label,
            "input MiB": round(size / 2**20),
            "advisories": summary["advisories"],
            "merges": summary["mergesMade"],
            "bundle MiB": round(bundle.stat().st_size / 2**20, 1),
            "export s": round(wall, 1),
            "export CPU s": round(cpu, 1),
            "advisories/s": round(summary["advisories"] / wall),
            "peak RSS MiB": round(peak_kib / 1024),
            "peak anon MiB": round(anon_kib / 1024),
            "peak file+shm MiB": round(file_kib / 1024),
            "floor s": round(floor, 2),
            "export/floor": round(wall / floor, 1),
            "bundle sha256": bundle_sha256[:16],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        print("  phases (s): " + json.dumps(summary.get("phaseSeconds", {})), flush=True)
        shutil.rmtree(out, ignore_errors=True)
        if isinstance(what, int) and not args.keep_files:
            shutil.rmtree(sources[0], ignore_errors=True)
    print()
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    print(f"\nmachine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, orjson {orjson.__version__}")


if __name__ == "__main__":
    main()
