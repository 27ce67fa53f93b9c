"""Basic authentication against real `htpasswd -B` files: decoding, per-domain isolation, the bcrypt cache."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import time
from pathlib import Path

import anyio
import bcrypt
import pytest

from stella_mirror.server.authn import Authenticator, AuthFailure, AuthSettings
from stella_mirror.server.authn.basic import FAILED, VerdictCache, parse_basic
from stella_mirror.server.context import DomainPolicy, Principal

pytestmark = pytest.mark.skipif(shutil.which("htpasswd") is None, reason="htpasswd (apache2-utils) not installed")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the server runs on asyncio


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def check(auth: Authenticator, domain: DomainPolicy, header: str | None) -> Principal:
    """The one entry point, from synchronous test code."""
    return asyncio.run(auth.authenticate(domain, header))


def make_htpasswd(path: Path, users: dict[str, str], cost: int = 5) -> Path:
    for i, (user, password) in enumerate(users.items()):
        flags = ["-B", "-C", str(cost), "-b"] + (["-c"] if i == 0 else [])
        subprocess.run(["htpasswd", *flags, str(path), user, password], check=True, capture_output=True)
    return path


@pytest.fixture
def domains(tmp_path: Path) -> tuple[DomainPolicy, DomainPolicy]:
    primary = DomainPolicy(
        "concelier",
        "primary",
        require_authentication=True,
        htpasswd=make_htpasswd(tmp_path / "primary.htpasswd", {"alice": "pw-alice", "ünï": "пароль:with:colons"}),
    )
    community = DomainPolicy(
        "concelier",
        "community",
        htpasswd=make_htpasswd(tmp_path / "community.htpasswd", {"bob": "pw-bob"}),
    )
    return primary, community


# --- decoding -------------------------------------------------------------------------------------


def test_parse_basic_splits_at_the_first_colon() -> None:
    creds = parse_basic(base64.b64encode(b"alice:pa:ss").decode())
    assert (creds.user, creds.password) == ("alice", "pa:ss")
    assert "pa:ss" not in repr(creds)


@pytest.mark.parametrize(
    "value",
    [
        "!!!not-base64!!!",
        base64.b64encode(b"no-colon").decode(),
        base64.b64encode(b"\xff\xfe:\xff").decode(),  # not UTF-8
        base64.b64encode(b":password-without-user").decode(),
        base64.b64encode(b"al\x00ice:pw").decode(),  # control character in the user name
        "",
        "A" * 5000,
    ],
)
def test_malformed_basic_values_are_401_malformed(value: str) -> None:
    with pytest.raises(AuthFailure) as info:
        parse_basic(value)
    assert (info.value.status, info.value.reason) == (401, "malformed")


# --- the authentication matrix ----------------------------------------------------------------------


def test_basic_matrix(domains: tuple[DomainPolicy, DomainPolicy]) -> None:
    primary, community = domains
    auth = Authenticator(AuthSettings(), domains)

    def reason(domain: DomainPolicy, header: str | None) -> str:
        try:
            principal = check(auth, domain, header)
        except AuthFailure as exc:
            assert exc.status == 401
            assert exc.challenge == f'Basic realm="{domain.domain_id}", charset="UTF-8"'
            return exc.reason
        return f"ok:{principal.method}:{principal.name}"

    assert reason(primary, None) == "missing"
    assert reason(primary, basic("alice", "wrong")) == "bad-credentials"
    # one reason for a wrong password, an unknown user and another domain's user: metrics name no user names
    assert reason(primary, basic("nobody", "pw")) == "bad-credentials"
    assert reason(primary, basic("bob", "pw-bob")) == "bad-credentials"  # community's user never opens primary
    assert reason(primary, basic("alice", "pw-alice")) == "ok:basic:alice"
    assert reason(primary, basic("ünï", "пароль:with:colons")) == "ok:basic:ünï"
    assert reason(primary, "Digest username=alice") == "malformed"
    # an open domain: anonymous without credentials, but wrong credentials are still refused
    assert reason(community, None) == "ok:anonymous:anonymous"
    assert reason(community, basic("bob", "nope")) == "bad-credentials"
    assert reason(community, basic("alice", "pw-alice")) == "bad-credentials"
    assert reason(community, "basic " + basic("bob", "pw-bob").split()[1]) == "ok:basic:bob"  # scheme is case-blind


def test_global_switch_requires_auth_on_open_domains(domains: tuple[DomainPolicy, DomainPolicy]) -> None:
    _, community = domains
    auth = Authenticator(AuthSettings(require_authentication=True), domains)
    with pytest.raises(AuthFailure) as info:
        check(auth, community, None)
    assert info.value.reason == "missing"


def test_domain_without_htpasswd_refuses_basic() -> None:
    auth = Authenticator(AuthSettings())
    with pytest.raises(AuthFailure) as info:
        check(auth, DomainPolicy("excititor", "open"), basic("alice", "pw"))
    assert (info.value.status, info.value.reason) == (401, "bad-credentials")


def test_password_longer_than_72_bytes_behaves_like_htpasswd(tmp_path: Path) -> None:
    long_pw = "x" * 100
    domain = DomainPolicy("concelier", "d", htpasswd=make_htpasswd(tmp_path / "l.htpasswd", {"u": long_pw}))
    auth = Authenticator(AuthSettings(basic_cache_ttl_seconds=0))
    assert check(auth, domain, basic("u", long_pw)).name == "u"
    # bcrypt (and so htpasswd) only looks at 72 bytes: this is the same password to both
    assert check(auth, domain, basic("u", long_pw[:72] + "different-tail")).name == "u"
    with pytest.raises(AuthFailure):
        check(auth, domain, basic("u", long_pw[:71]))


def test_failures_never_carry_the_password(domains: tuple[DomainPolicy, DomainPolicy]) -> None:
    primary, _ = domains
    auth = Authenticator(AuthSettings(), domains)
    for header in (basic("alice", "Sup3rSecret!"), basic("nobody", "Sup3rSecret!")):
        with pytest.raises(AuthFailure) as info:
            check(auth, primary, header)
        text = f"{info.value} {info.value.detail} {info.value.challenge} {info.value!r}"
        assert "Sup3rSecret" not in text and "$2y$" not in text


# --- the bcrypt cache -----------------------------------------------------------------------------


def test_cache_makes_the_second_request_fast_and_reload_drops_it(tmp_path: Path) -> None:
    path = make_htpasswd(tmp_path / "slow.htpasswd", {"alice": "first"}, cost=11)  # ~100 ms per check
    domain = DomainPolicy("concelier", "primary", require_authentication=True, htpasswd=path)
    auth = Authenticator(AuthSettings(basic_cache_ttl_seconds=60), [domain])

    def timed(header: str) -> float:
        start = time.perf_counter()
        check(auth, domain, header)
        return time.perf_counter() - start

    cold = timed(basic("alice", "first"))
    warm = min(timed(basic("alice", "first")) for _ in range(5))
    assert cold > 0.02, f"bcrypt at cost 11 should be slow, took {cold:.4f}s"
    assert warm < cold / 10, f"cached check {warm:.4f}s not much faster than bcrypt {cold:.4f}s"
    # a wrong password is never served from the cache, even right after a success
    with pytest.raises(AuthFailure, match="bad-credentials"):
        check(auth, domain, basic("alice", "firsT"))

    subprocess.run(["htpasswd", "-B", "-C", "5", "-b", str(path), "alice", "second"], check=True, capture_output=True)
    assert check(auth, domain, basic("alice", "first")).name == "alice"  # not reloaded yet: old file
    auth.reload()
    with pytest.raises(AuthFailure) as info:
        check(auth, domain, basic("alice", "first"))
    assert info.value.reason == "bad-credentials"
    assert check(auth, domain, basic("alice", "second")).name == "alice"


def test_cache_is_per_domain(tmp_path: Path) -> None:
    """The same user and password in two domains' files: a cached success in one proves nothing in the other."""
    a = DomainPolicy("concelier", "a", htpasswd=make_htpasswd(tmp_path / "a.htpasswd", {"carol": "pw"}))
    b = DomainPolicy("concelier", "b", htpasswd=make_htpasswd(tmp_path / "b.htpasswd", {"carol": "other"}))
    auth = Authenticator(AuthSettings(), [a, b])
    assert check(auth, a, basic("carol", "pw")).name == "carol"
    with pytest.raises(AuthFailure, match="bad-credentials"):
        check(auth, b, basic("carol", "pw"))


def test_verdict_cache_expires_and_is_bounded() -> None:
    now = [0.0]
    cache = VerdictCache(ttl_seconds=10, failure_ttl_seconds=2, max_entries=2, clock=lambda: now[0])
    sent = [base64.b64encode(f"u{i}:p".encode()).decode() for i in range(3)]
    who = [Principal(f"u{i}", "basic") for i in range(3)]
    users = {f"u{i}": b"h" for i in range(3)}
    cache.remember("d", sent[0], "u0", who[0], b"h")
    assert cache.hit("d", sent[0], users) is who[0]
    assert cache.hit("other-file", sent[0], users) is None
    assert cache.hit("d", sent[1], users) is None  # another credential (e.g. another password)
    assert cache.hit("d", sent[0], {"u0": b"changed-hash"}) is None  # the user's line changed: entry dropped
    assert cache.hit("d", sent[0], users) is None
    cache.remember("d", sent[0], "u0", who[0], b"h")
    now[0] = 10.5
    assert cache.hit("d", sent[0], users) is None
    for s, p in zip(sent, who, strict=True):
        cache.remember("d", s, p.name, p, b"h")
    assert len(cache) == 2 and cache.hit("d", sent[0], users) is None and cache.hit("d", sent[2], users) is who[2]


def test_failures_are_remembered_briefly_and_only_while_the_user_line_stays() -> None:
    now = [0.0]
    cache = VerdictCache(ttl_seconds=60, failure_ttl_seconds=2, clock=lambda: now[0])
    sent = base64.b64encode(b"zed:guess").decode()
    cache.remember("d", sent, "zed", FAILED, None)  # zed is in no file
    assert cache.hit("d", sent, {}) is FAILED
    assert cache.hit("d", sent, {"zed": b"h"}) is None  # zed was added meanwhile: check again
    cache.remember("d", sent, "zed", FAILED, None)
    now[0] = 2.5
    assert cache.hit("d", sent, {}) is None


def test_verdict_cache_never_holds_the_password() -> None:
    cache = VerdictCache(ttl_seconds=10)
    sent = base64.b64encode(b"alice:s3cret-pw").decode()
    cache.remember("d", sent, "alice", Principal("alice", "basic"), b"h")
    held = repr(cache._entries).encode()
    assert b"s3cret-pw" not in held and sent.encode() not in held


def test_a_repeated_wrong_credential_costs_one_bcrypt_check(tmp_path: Path) -> None:
    """A client (or a flood) repeating a wrong password is answered from the failure memory."""
    path = make_htpasswd(tmp_path / "t.htpasswd", {"alice": "pw"}, cost=12)
    domain = DomainPolicy("concelier", "t", htpasswd=path)
    auth = Authenticator(AuthSettings(), [domain])

    def fail_time(header: str) -> float:
        start = time.perf_counter()
        with pytest.raises(AuthFailure) as info:
            check(auth, domain, header)
        assert info.value.reason == "bad-credentials"
        return time.perf_counter() - start

    first = fail_time(basic("alice", "bad"))
    again = max(fail_time(basic("alice", "bad")) for _ in range(5))
    assert again < first / 5, (first, again)
    assert check(auth, domain, basic("alice", "pw")).name == "alice"  # the right password is not held up


def test_unknown_users_cost_a_bcrypt_check(tmp_path: Path) -> None:
    """No user enumeration by timing: an unknown user takes about as long as a wrong password."""
    path = make_htpasswd(tmp_path / "t.htpasswd", {"alice": "pw"}, cost=10)
    domain = DomainPolicy("concelier", "t", htpasswd=path)
    auth = Authenticator(AuthSettings(basic_cache_ttl_seconds=0), [domain])

    def fail_time(header: str) -> float:
        start = time.perf_counter()
        with pytest.raises(AuthFailure):
            check(auth, domain, header)
        return time.perf_counter() - start

    wrong = min(fail_time(basic("alice", "bad")) for _ in range(3))
    unknown = min(fail_time(basic("zed", "bad")) for _ in range(3))
    assert unknown > wrong * 0.5, (unknown, wrong)


@pytest.mark.anyio
async def test_async_variant_runs_bcrypt_off_the_event_loop(tmp_path: Path) -> None:
    """While bcrypt checks run, the event loop keeps ticking (it would stall for ~250 ms per check inline)."""
    path = make_htpasswd(tmp_path / "a.htpasswd", {"alice": "pw"}, cost=12)
    domain = DomainPolicy("concelier", "a", htpasswd=path)
    auth = Authenticator(AuthSettings(basic_cache_ttl_seconds=0), [domain])
    gaps: list[float] = []
    done = anyio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await anyio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        for _ in range(3):
            assert (await auth.authenticate(domain, basic("alice", "pw"))).name == "alice"
        with pytest.raises(AuthFailure):
            await auth.authenticate(domain, basic("alice", "nope"))
        done.set()
    # Compare with what one inline check costs on this machine right now (other work may be running),
    # so a loaded machine does not turn a correct implementation red: an inline check would stall the
    # loop for at least one whole bcrypt computation.
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(12))
    start = time.perf_counter()
    bcrypt.checkpw(b"pw", hashed)
    inline = time.perf_counter() - start
    assert gaps and max(gaps) < max(0.1, inline * 0.5), (
        f"event loop stalled for {max(gaps):.3f}s (inline {inline:.3f}s)"
    )
