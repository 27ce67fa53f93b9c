"""Consensus per (vulnerability, product): the DESIGN §4 rules as a table, plus policy revision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from vexhelpers import claim, write_json

from stella_mirror.excititor.claims import Claim
from stella_mirror.excititor.config import Provider
from stella_mirror.excititor.consensus import Consensus, policy_revision
from stella_mirror.excititor.providers import load_claims

PROVIDERS = [
    Provider("vendor", "vendor", 1.0, ("x",)),
    Provider("distro-a", "distro", 0.8, ("x",)),
    Provider("distro-b", "distro", 0.8, ("x",)),
    Provider("hub", "hub", 0.5, ("x",)),
    Provider("hub2", "hub", 0.5, ("x",)),
    Provider("tenth", "platform", 0.1, ("x",)),
    Provider("fifth", "platform", 0.2, ("x",)),
    Provider("third", "attestation", 0.3, ("x",)),
]
J = "vulnerable_code_not_present"


@dataclass
class Case:
    name: str
    claims: list[Claim]
    status: str
    resolution: str
    conflicts: list[str]
    weights: dict[str, float]


CASES = [
    Case("single provider", [claim("vendor", "affected")], "affected", "single", [], {"affected": 1.0}),
    Case(
        "vendor vs hub disagreement",
        [claim("vendor", "not_affected", justification=J), claim("hub", "affected")],
        "not_affected",
        "weighted",
        ["hub"],
        {"affected": 0.5, "not_affected": 1.0},
    ),
    Case(
        "two distros vs one vendor",
        [claim("vendor", "affected"), claim("distro-a", "fixed"), claim("distro-b", "fixed")],
        "fixed",
        "weighted",
        ["vendor"],
        {"affected": 1.0, "fixed": 1.6},
    ),
    Case(
        "not_affected without justification does not count",
        [claim("vendor", "not_affected"), claim("hub", "under_investigation")],
        "under_investigation",
        "single",
        [],
        {"under_investigation": 0.5},
    ),
    Case(
        "only unjustified claims: nothing counted",
        [claim("vendor", "not_affected"), claim("hub", "not_affected")],
        "under_investigation",
        "no-counted-claims",
        [],
        {},
    ),
    Case(
        "exact tie goes to the less safe status",
        [
            claim("vendor", "fixed"),
            claim("hub", "not_affected", justification=J),
            claim("hub2", "not_affected", justification=J),
        ],
        "fixed",
        "tie",
        ["hub", "hub2"],
        {"fixed": 1.0, "not_affected": 1.0},
    ),
    Case(
        "0.1 + 0.2 ties 0.3 exactly (integer weights)",
        [
            claim("tenth", "not_affected", justification=J),
            claim("fifth", "not_affected", justification=J),
            claim("third", "affected"),
        ],
        "affected",
        "tie",
        ["fifth", "tenth"],
        {"affected": 0.3, "not_affected": 0.3},
    ),
    Case(
        "a provider counts once: its latest claim wins",
        [
            claim("vendor", "under_investigation", issued="2024-01-01T00:00:00Z"),
            claim("vendor", "fixed", issued="2024-03-01T00:00:00Z"),
            claim("vendor", "affected", issued="2024-02-01T00:00:00Z"),
            claim("hub", "affected", issued="2024-04-01T00:00:00Z"),
        ],
        "fixed",
        "weighted",
        ["hub"],
        {"affected": 0.5, "fixed": 1.0},
    ),
    Case(
        "aliases fold into the CVE key",
        [
            claim("vendor", "affected", vuln="GHSA-aaaa-bbbb-cccc", aliases=("CVE-2024-0001",)),
            claim("distro-a", "affected", vuln="CVE-2024-0001"),
        ],
        "affected",
        "unanimous",
        [],
        {"affected": 1.8},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_consensus_table(case: Case) -> None:
    consensus = Consensus(case.claims, PROVIDERS)
    assert consensus.keys() == [("CVE-2024-0001", "pkg:pypi/demo@1.0")]
    record = consensus.record(consensus.keys()[0])
    assert record["status"] == case.status
    assert record["resolution"] == case.resolution
    assert [c["providerId"] for c in record["conflicts"]] == case.conflicts
    assert record["weights"] == case.weights
    assert len(record["claims"]) == len(case.claims)  # every contributing claim is kept
    for entry in record["conflicts"]:
        assert entry["status"] != case.status


def test_record_details() -> None:
    consensus = Consensus(
        [
            claim("vendor", "not_affected", justification=J, issued="2024-01-02T00:00:00Z"),
            claim("hub", "affected", issued="2024-01-03T00:00:00Z"),
            claim("hub", "affected", issued="2024-01-01T00:00:00Z"),
            claim("distro-a", "not_affected", issued="2024-01-05T00:00:00Z"),
        ],
        PROVIDERS,
    )
    record = consensus.record(("CVE-2024-0001", "pkg:pypi/demo@1.0"))
    assert (record["status"], record["justification"]) == ("not_affected", J)
    assert record["lastUpdated"] == "2024-01-05T00:00:00Z"
    reasons = {(c["providerId"], c["issuedAt"]): (c["counted"], c["reason"]) for c in record["claims"]}
    assert reasons == {
        ("vendor", "2024-01-02T00:00:00Z"): (True, None),
        ("hub", "2024-01-03T00:00:00Z"): (True, None),
        ("hub", "2024-01-01T00:00:00Z"): (False, "superseded"),
        ("distro-a", "2024-01-05T00:00:00Z"): (False, "unjustified"),
    }


def test_alias_record_lists_aliases_and_original_ids() -> None:
    consensus = Consensus(
        [
            claim("vendor", "fixed", vuln="GHSA-aaaa-bbbb-cccc", aliases=("CVE-2024-0001",)),
            claim("hub", "fixed", vuln="SNYK-X-1", aliases=("GHSA-aaaa-bbbb-cccc",)),
        ],
        PROVIDERS,
    )
    (key,) = consensus.keys()
    record = consensus.record(key)
    assert record["vulnerabilityId"] == "CVE-2024-0001"
    assert record["aliases"] == ["GHSA-aaaa-bbbb-cccc", "SNYK-X-1"]
    assert sorted(c["vulnerabilityId"] for c in record["claims"]) == ["GHSA-aaaa-bbbb-cccc", "SNYK-X-1"]


def test_same_claim_twice_is_listed_once() -> None:
    c = claim("hub", "affected")
    twin = claim("hub", "affected")
    record = Consensus([c, twin], PROVIDERS).record(("CVE-2024-0001", "pkg:pypi/demo@1.0"))
    assert len(record["claims"]) == 1 and record["weights"] == {"affected": 0.5}


def test_same_document_seen_twice_counts_once(tmp_path: Path) -> None:
    doc = {
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://example.test/vex/dup",
        "author": "hub",
        "timestamp": "2024-01-01T00:00:00Z",
        "version": 1,
        "statements": [
            {
                "vulnerability": {"name": "CVE-2024-0001"},
                "products": ["pkg:pypi/demo@1.0"],
                "status": "affected",
                "action_statement": "upgrade",
            }
        ],
    }
    write_json(tmp_path / "hub/a.json", doc)
    write_json(tmp_path / "hub/copy-of-a.json", doc)
    write_json(tmp_path / "mirror/a.json", doc)  # the same bytes under another provider: still once
    write_json(tmp_path / "vendor/v.json", {**doc, "statements": [{**doc["statements"][0], "status": "fixed"}]})
    providers = [
        Provider("hub", "hub", 0.5, ("hub/*.json",)),
        Provider("mirror", "hub", 0.5, ("mirror/*.json",)),
        Provider("vendor", "vendor", 0.4, ("vendor/*.json",)),
    ]
    loaded = load_claims(providers, tmp_path)
    assert len(loaded.claims) == 2
    assert sorted(p for p, _ in loaded.report.duplicates) == ["hub/copy-of-a.json", "mirror/a.json"]
    record = Consensus(loaded.claims, providers).record(("CVE-2024-0001", "pkg:pypi/demo@1.0"))
    # The hub's document counts once (0.5), not three times (1.5), whichever path and provider repeat it.
    assert record["weights"] == {"affected": 0.5, "fixed": 0.4}


def test_policy_revision_tracks_trust_settings() -> None:
    base = policy_revision(PROVIDERS)
    assert base == policy_revision(list(reversed(PROVIDERS)))  # order does not matter
    changed = [Provider("vendor", "vendor", 0.9, ("x",)), *PROVIDERS[1:]]
    assert policy_revision(changed) != base
    rekind = [Provider("vendor", "distro", 1.0, ("x",)), *PROVIDERS[1:]]
    assert policy_revision(rekind) != base
    repath = [Provider("vendor", "vendor", 1.0, ("elsewhere/*",)), *PROVIDERS[1:]]
    assert policy_revision(repath) == base  # where documents come from is not a rule


def test_claims_of_unknown_providers_are_ignored() -> None:
    consensus = Consensus([claim("vendor", "affected"), claim("stranger", "fixed")], PROVIDERS[:1])
    assert consensus.record(consensus.keys()[0])["weights"] == {"affected": 1.0}
