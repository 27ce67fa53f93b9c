"""The export's reader processes: failures in a reader reach the exporter instead of hanging it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from stella_mirror.concelier.filters import DomainFilter
from stella_mirror.concelier.readers import ReaderPool
from stella_mirror.concelier.staging import Chunk, StageConfig

SAMPLES = Path(__file__).resolve().parents[3] / "src" / "stella_mirror" / "samples" / "concelier" / "osv"


def _chunks(n: int) -> list[Chunk]:
    paths = sorted(str(p) for p in SAMPLES.iterdir() if p.suffix == ".json")
    assert paths
    return [Chunk("osv", "osv", 0, paths) for _ in range(n)]


def _config(work: Path) -> StageConfig:
    return StageConfig(str(work), 1, (DomainFilter(),), {"osv": "osv"}, 1 << 20)


def test_readers_stage_every_chunk(tmp_path: Path) -> None:
    with ReaderPool(_config(tmp_path), 2) as pool:
        results = list(pool.read(iter(_chunks(7))))
    assert len(results) == 7
    tags = {r.tag for r in results}  # the readers' process ids
    assert 1 <= len(tags) <= 2 and all(t.isdigit() and int(t) != os.getpid() for t in tags)
    assert sum(r.records for r in results) == 7 * len(_chunks(1)[0].paths)


def test_an_exception_in_a_reader_is_raised_in_the_exporter(tmp_path: Path) -> None:
    with ReaderPool(_config(tmp_path / "missing"), 2) as pool, pytest.raises(FileNotFoundError):
        list(pool.read(iter(_chunks(3))))


def test_a_reader_that_dies_is_an_error_not_a_hang(tmp_path: Path) -> None:
    with ReaderPool(_config(tmp_path), 2) as pool:
        list(pool.read(iter(_chunks(2))))
        victim = pool._readers[0]
        os.kill(victim.process.pid, signal.SIGKILL)
        victim.process.join()
        with pytest.raises(RuntimeError, match=r"a reader process exited unexpectedly \(exit code -9\)"):
            list(pool.read(iter(_chunks(4))))
