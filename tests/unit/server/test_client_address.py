"""``mirror.trustedProxies``: which address is the client (pure logic; the e2e proof is test_gateway_nginx.py)."""

from __future__ import annotations

import pytest

from stella_mirror.config import MirrorConfig, load_config
from stella_mirror.errors import ConfigError
from stella_mirror.server.app import build_state
from stella_mirror.server.state import client_address


def _state(*networks: str):  # type: ignore[no-untyped-def]
    env = {f"MIRROR__TRUSTEDPROXIES__{i}": n for i, n in enumerate(networks)}
    env["EXCITITOR__MIRROR__ENABLED"] = "false"
    return build_state(load_config(environ=env))


@pytest.mark.parametrize(("peer", "forwarded", "client"), [
    ("10.0.0.5", "203.0.113.7", "203.0.113.7"),  # the gateway forwarded its client
    ("10.0.0.5", "198.51.100.1, 203.0.113.7", "203.0.113.7"),  # the left part is the client's own words
    ("10.0.0.5", "203.0.113.7, 10.0.0.9", "203.0.113.7"),  # two trusted hops
    ("10.0.0.5", "10.0.0.9", "10.0.0.9"),  # every hop trusted: the leftmost
    ("10.0.0.5", "not-an-ip, 203.0.113.7", "203.0.113.7"),
    ("10.0.0.5", "203.0.113.7, garbage", "10.0.0.5"),  # a broken hop right of the client: the last trusted one
    ("192.0.2.1", "203.0.113.7", "192.0.2.1"),  # an untrusted peer is its own client
    ("10.0.0.5", "", "10.0.0.5"),
    ("10.0.0.5", " 2001:db8::1 ", "2001:db8::1"),
])
def test_rightmost_untrusted_hop(peer: str, forwarded: str, client: str) -> None:
    assert client_address(peer, forwarded, _state("10.0.0.0/8")) == client


def test_no_trusted_proxies_means_the_peer() -> None:
    assert client_address("127.0.0.1", "203.0.113.7", _state()) == "127.0.0.1"


def test_a_bad_network_fails_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(environ={"MIRROR__TRUSTEDPROXIES__0": "10.0.0.0/33"})
    assert err.value.key_path.startswith("mirror.trustedProxies")
    assert MirrorConfig().mirror.trusted_proxies == ()
