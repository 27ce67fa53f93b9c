"""The CSAF product tree both products read documents through (formats/csaf_product_tree.py)."""

from __future__ import annotations

from typing import Any

import pytest

from stella_mirror.errors import MalformedDocumentError
from stella_mirror.formats.csaf_product_tree import ProductTree
from stella_mirror.formats.reader import ReadContext

CTX = ReadContext("vendor/doc.json", "src", "sha256:" + "0" * 64)

TREE: dict[str, Any] = {
    "branches": [
        {
            "category": "vendor",
            "name": "Acme",
            "branches": [
                {
                    "category": "product_name",
                    "name": "Gateway",
                    "branches": [
                        {
                            "category": "product_version_range",
                            "name": "<V2.3",
                            "product": {"name": "Gateway < V2.3", "product_id": "GW"},
                        },
                        {
                            "category": "product_version",
                            "name": "2.3",
                            "product": {
                                "name": "Gateway 2.3",
                                "product_id": "GW-2.3",
                                "product_identification_helper": {
                                    "purls": ["pkg:generic/acme/gateway@2.3", "pkg:oci/gateway@sha256%3Aab"]
                                },
                            },
                        },
                    ],
                }
            ],
        }
    ],
    "full_product_names": [
        {"name": "lib", "product_id": "LIB", "product_identification_helper": {"cpe": "cpe:/a:acme:lib:1"}}
    ],
    "relationships": [
        {
            "category": "default_component_of",
            "product_reference": "LIB",
            "relates_to_product_reference": "GW-2.3",
            "full_product_name": {"name": "lib in gateway", "product_id": "GW-2.3:LIB"},
        },
        {  # a relationship of a relationship product, and a cycle: both end without looping
            "category": "installed_on",
            "product_reference": "GW-2.3:LIB",
            "relates_to_product_reference": "GW",
            "full_product_name": {"name": "nested", "product_id": "NESTED"},
        },
        {
            "category": "installed_on",
            "product_reference": "LOOP-B",
            "relates_to_product_reference": "GW",
            "full_product_name": {"name": "a", "product_id": "LOOP-A"},
        },
        {
            "category": "installed_on",
            "product_reference": "LOOP-A",
            "relates_to_product_reference": "GW",
            "full_product_name": {"name": "b", "product_id": "LOOP-B"},
        },
    ],
    "product_paths": [  # CSAF 2.1
        {"beginning_product_reference": "LIB", "full_product_name": {"name": "path", "product_id": "PATH"}}
    ],
    "product_groups": [{"group_id": "G", "product_ids": ["GW", "LIB"]}],
}


def test_branches_remember_vendor_name_and_version() -> None:
    tree = ProductTree.load(CTX, TREE)
    gw = tree.get("GW")
    assert (gw.vendor, gw.product_name, gw.version_range, gw.version, gw.identified) == (
        "Acme",
        "Gateway",
        "<V2.3",
        None,
        False,
    )
    gw23 = tree.get("GW-2.3")
    assert gw23.version == "2.3" and gw23.purl == "pkg:generic/acme/gateway@2.3"  # CSAF 2.1: first of purls
    assert gw23.purls == ("pkg:generic/acme/gateway@2.3", "pkg:oci/gateway@sha256%3Aab")


def test_identity_follows_relationships_and_paths_and_stops_on_cycles() -> None:
    tree = ProductTree.load(CTX, TREE)
    rel = tree.get("GW-2.3:LIB")
    assert (rel.component, rel.platform, rel.relationship) == ("LIB", "GW-2.3", "default_component_of")
    assert tree.identity("GW-2.3:LIB").cpe == "cpe:/a:acme:lib:1"
    assert tree.identity("NESTED").product_id == "LIB"  # two hops
    assert tree.identity("PATH").product_id == "LIB"
    assert tree.identity("LOOP-A").product_id in {"LOOP-A", "LOOP-B"}  # ends, unidentified
    assert tree.identity("GW").product_id == "GW"  # nothing to follow
    assert tree.identity("UNKNOWN").product_id == "UNKNOWN"  # a bare product for an undefined id


def test_groups_expand_in_order_without_repeats() -> None:
    tree = ProductTree.load(CTX, TREE)
    holder = {"product_ids": ["LIB", "PATH"], "group_ids": ["G", "MISSING"]}
    assert tree.expand(holder, "/vulnerabilities/0/flags/0") == ["LIB", "PATH", "GW"]


@pytest.mark.parametrize(
    ("tree", "pointer"),
    [
        ({"branches": {}}, "/product_tree/branches"),
        ({"full_product_names": [{"name": "x"}]}, "/product_tree/full_product_names/0/product_id"),
        (
            {"full_product_names": [{"product_id": "X", "product_identification_helper": {"purls": [1]}}]},
            "/product_tree/full_product_names/0/product_identification_helper/purls/0",
        ),
        ({"product_groups": [{"group_id": "G"}]}, "/product_tree/product_groups/0/product_ids"),
        ({"relationships": [{"full_product_name": "x"}]}, "/product_tree/relationships/0/full_product_name"),
    ],
)
def test_malformed_tree_names_file_and_pointer(tree: dict[str, Any], pointer: str) -> None:
    with pytest.raises(MalformedDocumentError) as info:
        ProductTree.load(CTX, tree)
    assert (info.value.path, info.value.pointer) == ("vendor/doc.json", pointer)


def test_deep_branches_do_not_exhaust_the_stack() -> None:
    deep: dict[str, Any] = {"category": "product_version", "name": "1", "product": {"product_id": "DEEP"}}
    for _ in range(5000):
        deep = {"category": "product_family", "name": "f", "branches": [deep]}
    assert ProductTree.load(CTX, {"branches": [deep]}).get("DEEP").version == "1"
