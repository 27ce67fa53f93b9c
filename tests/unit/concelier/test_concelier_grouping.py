"""Grouping machinery: the external sort and the windowed fold give the same bytes at any size."""

from __future__ import annotations

import os
import random
from array import array
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stella_mirror.bundle.keyfiles import load_signing_key
from stella_mirror.concelier import export, grouping, readers, staging
from stella_mirror.concelier.config import sample_sources
from stella_mirror.concelier.export import DomainSpec, ExportRequest, run_export
from stella_mirror.concelier.filters import DomainFilter
from stella_mirror.concelier.grouping import ExternalSort, RecordUnion


@pytest.mark.parametrize("run_size", [1, 3, 1000])
def test_external_sort_matches_sorted(tmp_path: Path, run_size: int) -> None:
    rng = random.Random(run_size)
    triples = [(f'K-{rng.randrange(500):03d}\n\t"é', rng.randrange(10**6), rng.randrange(2)) for _ in range(700)]
    order = ExternalSort(tmp_path, run_size)
    for t in triples[:300]:
        order.add(*t)
    order.extend(triples[300:301])
    order.extend(triples[301:650])  # in bulk, across run boundaries
    for t in triples[650:]:
        order.add(*t)
    assert order.count == 700
    assert [tuple(t) for t in order] == sorted(triples)


def test_record_union_joins_transitively() -> None:
    uf = RecordUnion(6)
    uf.union(0, 3)
    uf.union(3, 5)
    uf.union(1, 2)
    assert uf.find(0) == uf.find(5) != uf.find(1) == uf.find(2) != uf.find(4)


FILTERED = [
    DomainSpec("primary", "Primary"),
    DomainSpec("pypi", "PyPI", DomainFilter.parse("ecosystem:PyPI")),
    DomainSpec("vendor", "Vendor", DomainFilter.parse("source:csaf")),
]


def _export(out: Path, keydir: Path, workers: int, domains: list[DomainSpec] = FILTERED) -> dict[str, bytes]:
    req = ExportRequest(
        sources=sample_sources(),
        domains=domains,
        key=load_signing_key(keydir / "mirror-key.pem"),
        out=out,
        export_id="20261129T163000Z",
        generated_at=datetime(2026, 11, 29, 16, 30, tzinfo=UTC),
        workers=workers,
    )
    summary = run_export(req)
    assert summary.records > summary.advisories > 1  # the samples merge something
    root = out / "latest"
    files = {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in (".json", ".jsonl")
    }
    files["summary: advisories per domain"] = repr([(d.domain_id, d.advisory_count) for d in summary.domains]).encode()
    return files


def test_tiny_runs_windows_and_buckets_change_nothing(
    tmp_path: Path, keydir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sort runs of 2, fold windows of 2 with 1 ahead, one alias bucket or many, in a process pool."""
    expected = _export(tmp_path / "default", keydir, workers=1)
    monkeypatch.setattr(grouping, "SORT_RUN", 2)
    monkeypatch.setattr(export, "_FOLD_WINDOW", 2)
    monkeypatch.setattr(export, "_FOLD_AHEAD", 1)
    monkeypatch.setattr(export, "_IN_PROCESS_BELOW", 0)
    for buckets in (1, 8):
        monkeypatch.setattr(export, "bucket_count", lambda _n, b=buckets: b)
        assert _export(tmp_path / f"pool-{buckets}", keydir, workers=2) == expected
        assert _export(tmp_path / f"inline-{buckets}", keydir, workers=1) == expected
    # Folded windows through spill files: none fits a shared slot; then no slot for most windows.
    unlinked: list[str] = []
    real_unlink = os.unlink

    def unlink(path: str, *args: object, **kwargs: object) -> None:
        unlinked.append(str(path))
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(readers, "SLOT_BYTES", 16)
        m.setattr(os, "unlink", unlink)
        assert _export(tmp_path / "spilled", keydir, workers=2) == expected
    spills = [p for p in unlinked if Path(p).name.startswith("fold-")]
    assert spills and not any(Path(p).exists() for p in spills), "windows went through spill files, deleted once read"
    original = readers.ReaderPool.__init__

    def one_slot(pool: readers.ReaderPool, cfg: staging.StageConfig, workers: int, slots: int = 0) -> None:
        original(pool, cfg, workers, slots=1)

    with monkeypatch.context() as m:
        m.setattr(export, "_FOLD_AHEAD", 4)
        m.setattr(readers.ReaderPool, "__init__", one_slot)
        assert _export(tmp_path / "one-slot", keydir, workers=2) == expected


def test_every_unfiltered_domain_gets_every_advisory(
    tmp_path: Path, keydir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two domains without filters: the same advisories, statistics and state lines, in and out of a pool."""
    import orjson

    domains = [DomainSpec("primary", "Primary"), DomainSpec("copy", "Copy")]
    monkeypatch.setattr(export, "_FOLD_WINDOW", 3)
    monkeypatch.setattr(export, "_IN_PROCESS_BELOW", 0)
    files = _export(tmp_path / "inline", keydir, 1, domains)
    assert _export(tmp_path / "pool", keydir, 2, domains) == files
    primary, copy = (orjson.loads(files[f"mirror/{d}/bundle.json"]) for d in ("primary", "copy"))
    assert primary["advisories"] == copy["advisories"] and primary["advisoryCount"] == len(primary["advisories"]) > 1
    manifests = [orjson.loads(files[f"mirror/{d}/manifest.json"]) for d in ("primary", "copy")]
    assert manifests[0]["sources"] == manifests[1]["sources"] and manifests[0]["sources"]
    assert files["state/primary.digests.jsonl"] == files["state/copy.digests.jsonl"]


def test_bucket_count_is_a_bounded_power_of_two() -> None:
    assert staging.bucket_count(0) == 1
    assert staging.bucket_count(100_000) == 8
    assert staging.bucket_count(10**9) == 256


@pytest.mark.parametrize(("run_size", "window"), [(1, 1), (5, 3), (64, 7), (10_000, 1024)])
def test_windows_list_every_group_in_order(tmp_path: Path, run_size: int, window: int) -> None:
    rng = random.Random(window)
    n = 600
    head, nxt = array("i", [-1]) * n, array("i", [-1]) * n
    order = ExternalSort(tmp_path / f"c{window}", run_size)
    (tmp_path / f"c{window}").mkdir()
    expected: list[tuple[str, int | list[int]]] = []
    records = list(range(n))
    rng.shuffle(records)
    while records:
        members = [records.pop() for _ in range(min(len(records), rng.choice([1, 1, 1, 2, 3])))]
        r = members[0]
        for g in members:  # chains as grouping.group builds them: head[r] is the last linked
            nxt[g] = head[r]
            head[r] = g
        chain = []
        g = head[r]
        while g != -1:
            chain.append(g)
            g = nxt[g]
        key = f"K-{rng.randrange(10**6):06d}-{r}"
        fast = len(members) == 1 and rng.random() < 0.8
        order.add(key, r, int(fast))
        expected.append((key, r if fast else chain))
    expected.sort()
    windows = list(grouping.Groups(order, head, nxt, 0).windows(window))
    assert all(len(keys) == window for keys, _ in windows[:-1]) and 0 < len(windows[-1][0]) <= window
    assert [(k, g) for keys, groups in windows for k, g in zip(keys, groups, strict=True)] == expected


def test_alias_pairs_join_exactly_the_records_that_share_an_alias(tmp_path: Path) -> None:
    """Across the bucket's files of several readers (with their record bases): records naming the same alias
    string end up in one group, and only those — escapes, non-ASCII and look-alikes ("a" vs "a " vs "A")
    are different aliases."""
    import orjson

    rng = random.Random(3)
    pool = ["CVE-2024-1", "CVE-2024-1 ", "cve-2024-1", 'q"uote', "back\\slash", "tab\there", "nul\x00", "é", "€x", "😀"]
    pool += [f"GHSA-{i:04d}" for i in range(40)]
    files = []
    owners: dict[str, set[int]] = {}
    for r, base in enumerate([0, 500, 1200]):
        path = tmp_path / f"alias-{r}-0.jsonl"
        with path.open("wb") as fh:
            for _ in range(rng.randint(1, 6)):
                items: list[object] = []
                for _ in range(rng.randint(1, 30)):
                    k, alias = rng.randrange(400), rng.choice(pool)
                    items += [k, alias]
                    owners.setdefault(alias, set()).add(base + k)
                fh.write(orjson.dumps(items) + b"\n")
        files.append((base, str(path)))
    pairs = staging.alias_pairs(files)
    uf, expected = RecordUnion(1600), RecordUnion(1600)
    uf.union_pairs(pairs)
    for records in owners.values():
        first, *rest = sorted(records)
        for g in rest:
            expected.union(first, g)

    def partition(union: RecordUnion) -> list[list[int]]:
        groups: dict[int, list[int]] = {}
        for g in range(1600):
            groups.setdefault(union.find(g), []).append(g)
        return sorted(groups.values())

    assert len(pairs) > 0
    assert partition(uf) == partition(expected)
    assert len(staging.alias_pairs([])) == 0
