"""OSV documents shared by the fast-path tests: a full document, odd strings, a pool of edits."""

from __future__ import annotations

from typing import Any

from jsonedit import DELETE

BASE: dict[str, Any] = {
    "schema_version": "1.6.0",
    "id": "GHSA-xxxx-yyyy-zzzz",
    "modified": "2024-01-02T00:00:00Z",
    "published": "2023-12-30T10:11:12.123456Z",
    "aliases": [" CVE-2024-10001 ", "CVE-2024-9999", "PYSEC-1", ""],
    "summary": "a summary",
    "details": "details ü \u2028 \x01",
    "severity": [
        {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"},
        {"type": "CVSS_V2", "score": "AV:N/AC:L/Au:N/C:P/I:P/A:P"},
        {"type": "CVSS_V3", "score": "CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:C/C:L/I:L/A:N"},
        {"type": "Ubuntu", "score": "medium"},
    ],
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "Demo_Pkg"},
            "ranges": [
                {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.0"}, {"introduced": "2.0"}]},
                {"type": "ECOSYSTEM", "events": [{"fixed": "1.0"}, {"limit": "9"}]},
                {"type": "SEMVER", "events": [{"introduced": "0"}, {"last_affected": "0.5.0"}]},
            ],
            "versions": ["0.1", "0.2", "0.1"],
            "ecosystem_specific": {"imports": [{"path": "x"}]},
            "database_specific": {"source": "https://example.org"},
        },
        {
            "package": {"ecosystem": "Go", "name": "example.org/mod", "purl": "pkg:golang/example.org/mod@v1?x=1"},
            "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.0.0"}]}],
        },
        {"package": {"ecosystem": "Alpine:v3.18", "name": "a"}, "versions": []},
    ],
    "references": [
        {"type": "WEB", "url": "https://b.example"},
        {"type": "ADVISORY", "url": "https://a.example"},
        {"type": "", "url": "https://a.example"},
    ],
    "credits": [{"name": "someone"}],
    "database_specific": {"severity": "MODERATE", "cwe_ids": ["CWE-79", "CWE-20", "CWE-79", 3]},
}


ODD = 'q"b\\s/\x00\x01\x08\t\n\x0c\r\x1f\x7f é \u2028 \U0001f600 end'


EDITS: list[Any] = [
    DELETE, None, "", " ", "x", ODD, 0, 1, -1, 2.5, True, [], {}, ["x"], [None], {"x": 1},
    "CVE-2020-1234", "CVE-2019-99999", "GHSA-1", "2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123456Z",
    "0001-01-01T00:00:00Z", "2024-01-01", "PyPI", "Go", "npm", "pkg:pypi/demo@1", "ECOSYSTEM", "SEMVER", "GIT",
    "CVSS_V3", "CVSS_V2", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "high", "Moderate",
    {"introduced": "0"}, {"fixed": "1.2"}, {"last_affected": "1"}, {"limit": "*"},
    {"type": "WEB", "url": "https://z.example"}, {"ecosystem": "PyPI", "name": "other"},
]


def leaf_paths(node: Any, prefix: list[Any]) -> list[list[Any]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += leaf_paths(v, [*prefix, k])
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += leaf_paths(v, [*prefix, i])
    return out
