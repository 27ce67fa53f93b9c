"""Domain filter grammar and matching."""

from __future__ import annotations

import pytest
from concelier_helpers import record

from stella_mirror.concelier.filters import DomainFilter
from stella_mirror.errors import ConfigError

KINDS = {"osv": "osv", "vendor-feed": "csaf"}


def adv(ecosystems: list[str], source: str, severity: str | None = None):  # type: ignore[no-untyped-def]
    return record(
        "X-1",
        [],
        source=source,
        severity=severity,
        affected=[{"ecosystem": e, "package": "p", "purl": None, "ranges": [], "versions": []} for e in ecosystems],
    )


def test_empty_and_star_select_everything() -> None:
    for text in (None, "", "*"):
        assert DomainFilter.parse(text).matches(adv([], "osv"), KINDS)


def test_ecosystem_values_or_together_case_insensitively() -> None:
    f = DomainFilter.parse("ecosystem:PyPI,Go")
    assert f.matches(adv(["go"], "osv"), KINDS)
    assert f.matches(adv(["npm", "PyPI"], "osv"), KINDS)
    assert not f.matches(adv(["npm"], "osv"), KINDS)
    assert DomainFilter.parse("ecosystem:Debian").matches(adv(["Debian:11"], "osv"), KINDS)


def test_source_matches_name_or_kind_and_clauses_and_together() -> None:
    assert DomainFilter.parse("source:csaf").matches(adv(["CPE"], "vendor-feed"), KINDS)
    assert not DomainFilter.parse("source:csaf").matches(adv(["Go"], "osv"), KINDS)
    both = DomainFilter.parse("source:osv; severity:critical,high")
    assert both.matches(adv(["Go"], "osv", "high"), KINDS)
    assert not both.matches(adv(["Go"], "osv", "low"), KINDS)


@pytest.mark.parametrize("text", ["ecosystem", "color:red", "ecosystem:", "source:,"])
def test_bad_filters_name_the_key(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        DomainFilter.parse(text, "domains.1.filter")
    assert err.value.key_path == "domains.1.filter"
