"""Shared by the publish e2e tests: three exports of either product with known differences."""

from __future__ import annotations

import hashlib
from pathlib import Path

from stella_mirror.bundle.signing import SigningKey
from treebuilder import advisory, publish_concelier, publish_excititor


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def exports(kind: str, src: Path, key: SigningKey) -> list[Path]:
    """Three exports: e2 changes one domain (a same-size edit) and drops another; e3 changes one more."""
    if kind == "concelier":
        e1 = publish_concelier(src, key, {d: [advisory(f"CVE-{d}-1")] for d in "abcd"}, "e1")
        e2 = publish_concelier(
            src, key, {"a": [advisory("CVE-a-2")], "b": [advisory("CVE-b-1")], "c": [advisory("CVE-c-1")]}, "e2"
        )
        e3 = publish_concelier(
            src, key, {"a": [advisory("CVE-a-2")], "b": [advisory("CVE-b-3")], "c": [advisory("CVE-c-1")]}, "e3"
        )
        return [e1, e2, e3]
    first = {d: {"k1": [{"d": d, "v": 1}], "k2": [{"d": d, "w": 1}]} for d in "abcd"}
    e1 = publish_excititor(src, key, first, "e1")
    second = {"a": {"k1": [{"d": "a", "v": 2}], "k2": first["a"]["k2"]}, "b": first["b"], "c": first["c"]}
    e2 = publish_excititor(src, key, second, "e2")
    third = {**second, "b": {"k1": [{"d": "b", "v": 3}], "k2": first["b"]["k2"]}}
    e3 = publish_excititor(src, key, third, "e3")
    return [e1, e2, e3]
