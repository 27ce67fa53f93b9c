"""Untrusted YAML/JSON: timestamps stay strings, bombs and deep nesting are refused cleanly."""

from __future__ import annotations

import time

import pytest

from stella_mirror.concelier.sources.safeload import load_json, load_yaml
from stella_mirror.errors import MalformedDocumentError

BILLION_LAUGHS = b"""
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_unquoted_timestamps_are_the_same_strings_as_quoted() -> None:
    unquoted = load_yaml("u.yaml", b"modified: 2021-07-05T00:01:22.415943Z\npublished: 2014-05-14\n")
    quoted = load_yaml("q.yaml", b'modified: "2021-07-05T00:01:22.415943Z"\npublished: "2014-05-14"\n')
    assert unquoted == quoted == {"modified": "2021-07-05T00:01:22.415943Z", "published": "2014-05-14"}


def test_billion_laughs_is_refused_quickly() -> None:
    start = time.monotonic()
    with pytest.raises(MalformedDocumentError, match="aliases") as err:
        load_yaml("bomb.yaml", BILLION_LAUGHS)
    assert err.value.path == "bomb.yaml"
    assert time.monotonic() - start < 2


def test_a_few_aliases_are_fine() -> None:
    assert load_yaml("ok.yaml", b"a: &x [1, 2]\nb: *x\n") == {"a": [1, 2], "b": [1, 2]}


@pytest.mark.parametrize(
    "data", [b"[" * 100_000 + b"]" * 100_000, b"- " * 100_000 + b"x", b"".join(b" " * i + b"k:\n" for i in range(200))]
)
def test_deep_yaml_is_refused(data: bytes) -> None:
    with pytest.raises(MalformedDocumentError, match=r"nests deeper|not valid YAML"):
        load_yaml("deep.yaml", data)


def test_deep_json_is_refused_by_orjson_cleanly() -> None:
    with pytest.raises(MalformedDocumentError, match="not valid JSON") as err:
        load_json("deep.json", b"[" * 100_000 + b"]" * 100_000)
    assert str(err.value).startswith("deep.json: ")


@pytest.mark.parametrize(("loader", "name"), [(load_json, "x.json"), (load_yaml, "x.yaml")])
def test_non_utf8_is_refused(loader: object, name: str) -> None:
    with pytest.raises(MalformedDocumentError, match=name):
        loader(name, b'{"id": "\xff\xfe bad"}')  # type: ignore[operator]
