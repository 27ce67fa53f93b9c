"""Benchmark: Excititor consensus over a synthetic claim set, written as a signed json export.

Default: 1,000,000 claims over 200,000 (vulnerability, product) pairs from 6 providers. The generator is
deterministic (seeded) and runs in-process; its time is reported separately. The measured part is
what ``stella-mirror export excititor`` does after reading documents: group and fold aliases, decide
every pair, stream the canonical ``json`` consensus artifact, sign it (JWS + .sig), write the domain
index, verify the staged tree and publish it.

    python bench/consensus.py [--claims N] [--pairs N] [--seed N] [--out DIR]

Prints claims/s and peak RSS (ru_maxrss of this process, generator included).
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from stella_mirror.bundle.digest import sha256_bytes
from stella_mirror.bundle.signing import generate
from stella_mirror.excititor.claims import JUSTIFICATIONS, STATUSES, Claim
from stella_mirror.excititor.config import parse_config
from stella_mirror.excititor.export import run_export
from stella_mirror.excititor.providers import ClaimSet, LoadReport

PROVIDERS = [
    {"id": "vendor-a", "kind": "vendor", "weight": 1.0},
    {"id": "vendor-b", "kind": "vendor", "weight": 1.0},
    {"id": "distro-a", "kind": "distro", "weight": 0.8},
    {"id": "distro-b", "kind": "distro", "weight": 0.8},
    {"id": "platform", "kind": "platform", "weight": 0.6},
    {"id": "hub", "kind": "hub", "weight": 0.5},
]
ECOSYSTEMS = ["pypi", "npm", "golang", "maven", "deb/debian", "apk/alpine", "rpm/redhat", "cargo"]


def generate_claims(n_claims: int, n_pairs: int, seed: int) -> list[Claim]:
    """Deterministic claims: every pair gets at least one; providers repeat (superseded claims),
    not_affected is sometimes unjustified, and 5% of vulnerabilities are named by a GHSA alias."""
    rng = random.Random(seed)
    n_vulns = max(1, n_pairs // 4)
    n_products = max(1, n_pairs // 5)
    vulns = [f"CVE-{2015 + i % 10}-{100000 + i}" for i in range(n_vulns)]
    ghsa = {i: f"GHSA-{i:04x}-{(i * 7) % 65536:04x}-bnch" for i in range(0, n_vulns, 20)}
    products = [
        f"pkg:{ECOSYSTEMS[i % len(ECOSYSTEMS)]}/bench-pkg-{i}@{1 + i % 9}.{i % 13}.{i % 7}" for i in range(n_products)
    ]
    pairs: set[tuple[int, int]] = set()
    while len(pairs) < n_pairs:
        pairs.add((rng.randrange(n_vulns), rng.randrange(n_products)))
    pair_list = sorted(pairs)
    times = [f"2024-{1 + d // 28:02d}-{1 + d % 28:02d}T{d % 24:02d}:00:00Z" for d in range(336)]
    justifications = sorted(JUSTIFICATIONS)
    provider_ids = [p["id"] for p in PROVIDERS]
    digests = {pid: [sha256_bytes(f"{pid}-{k}".encode()) for k in range(n_claims // 1000 + 1)] for pid in provider_ids}
    weights_status = [0.35, 0.15, 0.25, 0.25]  # affected, under_investigation, fixed, not_affected
    claims: list[Claim] = []
    for i in range(n_claims):
        v, p = pair_list[i % n_pairs] if i < n_pairs else pair_list[rng.randrange(n_pairs)]
        provider = provider_ids[rng.randrange(len(provider_ids))]
        status = rng.choices(STATUSES, weights_status)[0]
        justification = None
        if status == "not_affected" and rng.random() < 0.8:
            justification = justifications[rng.randrange(len(justifications))]
        vid, aliases = vulns[v], ()
        if v in ghsa and provider == "hub":
            vid, aliases = ghsa[v], (vulns[v],)
        claims.append(
            Claim(
                vulnerability_id=vid,
                product_key=products[p],
                provider_id=provider,
                status=status,
                justification=justification,
                detail=None,
                document_digest=digests[provider][i // 1000],
                issued_at=times[rng.randrange(len(times))],
                aliases=aliases,
                document_path=f"bench/{provider}.json",
                source_format="openvex",
            )
        )
    return claims


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--claims", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--out", type=Path, help="export root to keep (default: a temporary directory, removed)")
    args = parser.parse_args()
    if args.pairs > args.claims:
        parser.error("--pairs must not exceed --claims")

    t0 = time.perf_counter()
    claims = generate_claims(args.claims, args.pairs, args.seed)
    t_gen = time.perf_counter() - t0

    tmp = Path(tempfile.mkdtemp(prefix="bench-consensus-"))
    out = args.out or tmp / "root"
    config = parse_config(
        {
            "providers": [{**p, "paths": ["unused/*.json"]} for p in PROVIDERS],
            "domains": [{"id": "bench", "exports": [{"key": "consensus", "format": "json", "view": "consensus"}]}],
        },
        tmp,
        "bench",
    )
    try:
        t1 = time.perf_counter()
        summary = run_export(
            config,
            generate(),
            out,
            generated_at=datetime(2024, 6, 1, tzinfo=UTC),
            claim_set=ClaimSet(claims, LoadReport()),
        )
        t_export = time.perf_counter() - t1
        (artifact,) = summary.artifacts
        size = (summary.export_dir / artifact.path).stat().st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"claims:               {args.claims:,} over {args.pairs:,} requested pairs, {len(PROVIDERS)} providers")
    print(f"consensus records:    {artifact.record_count:,} (pairs after alias folding)")
    print(f"generation:           {t_gen:.1f} s (not part of the measure)")
    print(f"consensus + export:   {t_export:.1f} s  ({args.claims / t_export:,.0f} claims/s)")
    print(f"json artifact:        {size / 2**20:,.0f} MiB, signed and verified")
    print(f"peak RSS:             {peak_mib:,.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
