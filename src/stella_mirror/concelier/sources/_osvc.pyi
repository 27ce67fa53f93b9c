"""The Concelier export's hot path in C (_osvc.c and its parts in osvc/); see osv_fast."""

from collections.abc import Callable
from typing import Any

def configure(
    cvss: Callable[[str, str], tuple[Any, ...] | None],
    purl: Callable[[str, str, str | None], str | bool | None],
    severity_word: Callable[[str], str | None],
    sha256: Callable[[Any], Any],
) -> None: ...
def entry(data: bytes, source: str, digest: str) -> tuple[bytes, str, list[str], str | None, str | None] | None: ...
def stage(
    data: bytes,
    digest: str,
    k: int,
    pos: int,
    source: str,
    priority: int,
    mask: int,
    rec: bytearray,
    offs: bytearray,
    keys: bytearray,
    buckets: list[bytearray],
    tally: dict[tuple[int, str], list[Any]] | None,
) -> int | None: ...
def stage_files(
    paths: list[str],
    start: int,
    max_bytes: int,
    k: int,
    pos: int,
    source: str,
    priority: int,
    mask: int,
    rec: bytearray,
    offs: bytearray,
    keys: bytearray,
    buckets: list[bytearray],
    tally: dict[tuple[int, str], list[Any]] | None,
) -> tuple[int, int, int]: ...
def merge(key: str, records: list[tuple[int, bytes]]) -> bytes | None: ...
def count_files(path: str) -> int | None: ...
def list_dir(path: str) -> tuple[list[str], list[str]] | None: ...
def join_pairs(parent: Any, rank: Any, pairs: Any) -> None: ...
def chains(parent: Any, head: Any, nxt: Any) -> None: ...
def group_keys(
    items: list[Any],
    base: int,
    parent: Any,
    head: Any,
    nxt: Any,
    singles: list[Any],
    multi: dict[int, str | None],
    better_cve: Callable[[str | None, str], str],
) -> None: ...
def sha256_hex(data: bytes | bytearray | memoryview) -> str: ...
def use_native_sha256(on: bool) -> bool: ...
def fold_singles(
    spec: Any, pos: int, offsets: Any, starts: tuple[int, ...], maps: list[Any], data: bytearray, lines: bytearray
) -> tuple[int, int]: ...
def window_spec(
    triples: list[Any], lo: int, hi: int, head: Any, nxt: Any, keys: list[str], spec: bytearray
) -> None: ...
def tune_malloc() -> bool: ...
def alias_pairs(files: list[tuple[int, str]]) -> bytes | None: ...
