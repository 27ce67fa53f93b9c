"""The OSV fast path in C (_osvc.c); see osv_fast.compiled_entry."""

from collections.abc import Callable
from typing import Any

def configure(
    cvss: Callable[[str, str], tuple[Any, ...] | None],
    purl: Callable[[str, str, str | None], str | bool | None],
    severity_word: Callable[[str], str | None],
    sha256: Callable[[Any], Any],
) -> None: ...
def entry(doc: object, source: str, digest: str) -> tuple[bytes, str, list[str], str | None, str | None] | None: ...
def stage(
    doc: object,
    source: str,
    digest: str,
    priority: int,
    mask: int,
    k: int,
    pos: int,
    rec: bytearray,
    offs: bytearray,
    keys: list[str | None],
    buckets: list[list[Any]],
    tally: dict[tuple[int, str], list[Any]] | None,
) -> int | None: ...
