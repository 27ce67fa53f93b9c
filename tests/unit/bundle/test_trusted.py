"""The trust rules of a sync (``bundle/trusted.py``), attack by attack, through an in-memory fake upstream —
python-tuf's ``RepositorySimulator`` for our exports: real signatures over real index bytes, no disk, no
network. A client loop reads the upstream as the sync does (indexes and signatures into memory, then every
listed file) and asks the trust object at each step."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from stella_mirror.bundle import canonical, layout
from stella_mirror.bundle.digest import sha256_bytes
from stella_mirror.bundle.model import SCHEMA_VERSION
from stella_mirror.bundle.signing import SigningKey, TrustedKeys, generate
from stella_mirror.bundle.trusted import TrustedIndex, TrustedIndexSet
from stella_mirror.errors import (
    DigestError,
    EqualSequenceError,
    ExpiredError,
    MalformedBundleError,
    RollbackError,
    SignatureError,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
INDEX = layout.CONCELIER_INDEX


def _ts(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Impostor(SigningKey):
    """A key of the attacker's that names a trusted key id in its JWS header."""

    claimed: str = ""

    @property
    def kid(self) -> str:
        return self.claimed


@dataclass
class FakeUpstream:
    """An upstream Concelier export directory held in memory: what ``Source.index_files`` and
    ``Source.small_files`` return, and every file an index lists."""

    key: SigningKey
    files: dict[str, bytes] = field(default_factory=dict)

    def publish(
        self,
        export_id: str,
        sequence: int,
        domains: dict[str, bytes],
        ttl: timedelta = timedelta(days=7),
        **overrides: Any,
    ) -> None:
        self.files = {}
        entries = []
        for domain_id, bundle in sorted(domains.items()):
            base = f"mirror/{domain_id}/"
            bundle_ref = {
                "path": base + "bundle.json",
                "sizeBytes": len(bundle),
                "digest": sha256_bytes(bundle),
                "signature": {"path": base + "bundle.json.jws", "algorithm": "ES256", "keyId": self.key.kid},
            }
            manifest = orjson.dumps(
                {
                    "schemaVersion": SCHEMA_VERSION,
                    "exportId": export_id,
                    "sequence": sequence,
                    "domainId": domain_id,
                    "advisoryCount": 1,
                    "bundle": bundle_ref,
                }
            )
            entry = {
                "domainId": domain_id,
                "advisoryCount": 1,
                "bundle": bundle_ref,
                "manifest": {
                    "path": base + "manifest.json",
                    "sizeBytes": len(manifest),
                    "digest": sha256_bytes(manifest),
                },
            }
            self.files |= {
                base + "bundle.json": bundle,
                base + "manifest.json": manifest,
                base + "bundle.json.jws": self.key.sign_detached_jws(bundle),
                base + "bundle.json.sig": self.key.sign_blob_b64(bundle),
            }
            entries.append(entry)
        index = {
            "schemaVersion": SCHEMA_VERSION,
            "exportId": export_id,
            "sequence": sequence,
            "generatedAt": _ts(NOW - timedelta(minutes=5)),
            "expiresAt": _ts(NOW - timedelta(minutes=5) + ttl),
            "domains": entries,
            **overrides,
        }
        for entry in entries:
            own = canonical.domain_index(index, entry)
            self.files[f"mirror/{entry['domainId']}/index.json"] = own
        self.set_index(canonical.dumps(index))

    def set_index(self, data: bytes, key: SigningKey | None = None) -> None:
        """Replace the index bytes and sign them (with ``key``, default the publisher's)."""
        signer = key or self.key
        self.files[INDEX] = data
        self.files[INDEX + ".jws"] = signer.sign_detached_jws(data)
        self.files[INDEX + ".sig"] = signer.sign_blob_b64(data)

    def index_files(self, kind: str) -> dict[str, bytes]:
        return {rel: self.files[rel] for rel in layout.index_paths(kind, self.files)}

    def small_files(self, rels: list[str], max_size: int) -> dict[str, bytes]:
        return {rel: self.files[rel] for rel in rels if rel in self.files and len(self.files[rel]) <= max_size}

    def snapshot(self) -> dict[str, bytes]:
        return dict(self.files)


def update(trust: TrustedIndexSet, up: FakeUpstream) -> TrustedIndex:
    """What the sync does before it writes anything: indexes and their signatures in memory, then the verdict;
    then every listed file is checked as it arrives."""
    indexes = up.index_files("concelier")
    signatures = up.small_files([r + s for r in indexes for s in layout.SIGNATURE_SUFFIXES], 64 << 10)
    new = trust.update_index(indexes, signatures)
    for item in new.files:
        if item.rel in up.files or not item.optional:
            trust.check_file(item.rel, up.files.get(item.rel, b""))
    return new


@pytest.fixture
def key() -> SigningKey:
    return generate()


@pytest.fixture
def up(key: SigningKey) -> FakeUpstream:
    return FakeUpstream(key)


def served_at(up: FakeUpstream, key: SigningKey, export_id: str, sequence: int, **kw: Any) -> TrustedIndexSet:
    """A trust set whose root serves ``export_id`` at ``sequence`` (published by ``up``, then kept locally)."""
    up.publish(export_id, sequence, {"primary": f"bundle of {export_id}".encode()})
    trust = TrustedIndexSet("concelier", TrustedKeys([key.public]), NOW, **kw)
    indexes = up.index_files("concelier")
    assert trust.load_served(indexes, up.small_files([INDEX + ".jws", INDEX + ".sig"], 1 << 16)) is not None
    return trust


def test_a_newer_signed_export_is_accepted_and_its_files_checked(up: FakeUpstream, key: SigningKey) -> None:
    trust = served_at(up, key, "e1", 1)
    up.publish("e2", 2, {"primary": b"two", "community": b"community"})
    new = update(trust, up)
    assert (new.export_id, new.sequence, new.domains) == ("e2", 2, ["community", "primary"])
    assert new.generated_at == NOW - timedelta(minutes=5) and key.kid in new.key_ids
    assert trust.floor == 1 and trust.served is not None and trust.served.export_id == "e1"


def test_rollback(up: FakeUpstream, key: SigningKey) -> None:
    trust = served_at(up, key, "e5", 5)
    up.publish("e4", 4, {"primary": b"older"})
    with pytest.raises(RollbackError) as info:
        update(trust, up)
    assert not isinstance(info.value, EqualSequenceError)
    assert info.value.exit_code == 13 and "sequence 4" in str(info.value) and trust.accepted is None


def test_equal_sequence_needs_allow_same(up: FakeUpstream, key: SigningKey) -> None:
    trust = served_at(up, key, "e5", 5)
    up.publish("e5b", 5, {"primary": b"same sequence, other export"})
    with pytest.raises(EqualSequenceError):
        update(trust, up)
    again = served_at(FakeUpstream(key), key, "e5", 5, allow_same=True)
    assert update(again, up).export_id == "e5b"


def test_the_same_export_with_another_sequence_is_malformed(up: FakeUpstream, key: SigningKey) -> None:
    trust = served_at(up, key, "e5", 5)
    up.publish("e5", 6, {"primary": b"x"})
    with pytest.raises(MalformedBundleError, match="served with sequence 5"):
        update(trust, up)


def test_freeze_an_expired_index_is_refused_before_its_sequence_is_looked_at(up: FakeUpstream, key: SigningKey) -> None:
    trust = served_at(up, key, "e5", 5)
    up.publish("e9", 9, {"primary": b"new"}, ttl=timedelta(minutes=1))  # expired 4 minutes ago
    with pytest.raises(ExpiredError):
        update(trust, up)
    up.publish("e1", 1, {"primary": b"old"}, ttl=timedelta(minutes=1))  # expired AND a rollback: expiry first
    with pytest.raises(ExpiredError):
        update(trust, up)


def test_wrong_key(up: FakeUpstream, key: SigningKey) -> None:
    trust = served_at(up, key, "e1", 1)
    attacker = FakeUpstream(generate())
    attacker.publish("e2", 2, {"primary": b"evil"})
    with pytest.raises(SignatureError, match="not among the trusted keys"):
        update(trust, attacker)


def test_a_trusted_key_id_with_the_wrong_key_material(up: FakeUpstream, key: SigningKey) -> None:
    trust = served_at(up, key, "e1", 1)
    impostor = Impostor(generate().private, claimed=key.kid)
    up.publish("e2", 2, {"primary": b"evil"})
    up.set_index(up.files[INDEX], key=impostor)
    assert orjson.loads(layout_b64_header(up.files[INDEX + ".jws"]))["kid"] == key.kid
    with pytest.raises(SignatureError, match="does not verify"):
        update(trust, up)


def layout_b64_header(jws: bytes) -> bytes:
    from stella_mirror.bundle.signing import b64url_decode

    return b64url_decode(jws.split(b".")[0])


@pytest.mark.parametrize(
    "claims",
    [
        {"exportId": "backup", "sequence": 3},
        {"exportId": "e1", "sequence": 0},
        {"exportId": "e1", "sequence": 99},
        {"exportId": "../../etc"},
    ],
)
def test_a_forged_index_is_a_signature_failure_whatever_it_claims(
    up: FakeUpstream, key: SigningKey, claims: dict[str, Any]
) -> None:
    """A copy of a real export with its claims edited (the issue's attack): the old signature no longer covers
    the bytes. Reported as a signature failure — never as a rollback — and no claimed value is quoted."""
    trust = served_at(up, key, "e1", 1)
    up.publish("e2", 2, {"primary": b"two"})
    forged = {**orjson.loads(up.files[INDEX]), **claims}
    up.files[INDEX] = canonical.dumps(forged)  # the signatures are e2's
    with pytest.raises(SignatureError) as info:
        update(trust, up)
    assert info.value.exit_code == 10
    for value in claims.values():
        assert str(value) not in str(info.value).replace(INDEX, "")


def test_an_unsigned_index_is_a_signature_failure(up: FakeUpstream, key: SigningKey) -> None:
    trust = served_at(up, key, "e1", 1)
    up.publish("e2", 2, {"primary": b"two"})
    del up.files[INDEX + ".jws"], up.files[INDEX + ".sig"]
    with pytest.raises(SignatureError, match="not signed"):
        update(trust, up)


def test_mix_and_match_a_manifest_from_another_export(up: FakeUpstream, key: SigningKey) -> None:
    trust = served_at(up, key, "e1", 1)
    old = up.snapshot()
    up.publish("e2", 2, {"primary": b"two"})
    up.files["mirror/primary/manifest.json"] = old["mirror/primary/manifest.json"]
    with pytest.raises(DigestError, match=r"mirror/primary/manifest\.json"):
        update(trust, up)
    # An offline kit's manifest from another export, beside this export's signed index, is refused too.
    assert trust.accepted is not None and trust.accepted.export_id == "e2"
    trust.check_kit_manifest({"kind": "concelier", "exportId": "e2", "sequence": 2})
    with pytest.raises(MalformedBundleError, match="does not describe the signed export"):
        trust.check_kit_manifest({"kind": "concelier", "exportId": "e1", "sequence": 1})


def test_a_file_not_listed_or_of_another_size_is_refused(up: FakeUpstream, key: SigningKey) -> None:
    trust = served_at(up, key, "e1", 1)
    up.publish("e2", 2, {"primary": b"two"})
    update(trust, up)
    with pytest.raises(DigestError, match="not listed"):
        trust.check_file("mirror/primary/other.json", b"x")
    with pytest.raises(DigestError, match="size 4 differs"):
        trust.check_file("mirror/primary/bundle.json", b"twoo")
    trust.check_file("mirror/primary/bundle.json", sha256_bytes(b"two"))  # a digest known for the bytes


def test_an_unverifiable_served_index_leaves_the_recorded_floor(up: FakeUpstream, key: SigningKey) -> None:
    trust = TrustedIndexSet("concelier", TrustedKeys([key.public]), NOW, floor=7)
    up.publish("e7", 7, {"primary": b"x"})
    damaged = {INDEX: up.files[INDEX].replace(b'"sequence":7', b'"sequence":2')}
    assert trust.load_served(damaged, {INDEX + ".jws": up.files[INDEX + ".jws"]}) is None
    assert trust.floor == 7
    up.publish("e6", 6, {"primary": b"older"})
    with pytest.raises(RollbackError):
        update(trust, up)


def test_an_exportid_that_is_not_a_directory_name_is_refused_even_when_signed(
    up: FakeUpstream, key: SigningKey
) -> None:
    trust = served_at(up, key, "e1", 1)
    up.publish("latest", 2, {"primary": b"two"})
    with pytest.raises(MalformedBundleError, match="not a valid export id"):
        update(trust, up)
