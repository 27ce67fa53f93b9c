"""The gateway's nginx.conf is rendered from the server configuration only (issue 11, item 1)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stella_mirror.config import load_config
from stella_mirror.errors import ConfigError
from stella_mirror.ops.envfile import read_env_file
from stella_mirror.ops.gateway import plan, render

REPO = Path(__file__).resolve().parents[3]
ENV_EXAMPLE = REPO / "deploy/compose/env/mirror.env.example"
SHIPPED = REPO / "deploy/compose/mirror-gateway/nginx.conf"


def _env(**domains: dict[str, str]) -> dict[str, str]:
    env = {"MIRROR__GATEWAY__TERMINATETLS": "true", "EXCITITOR__MIRROR__ENABLED": "false"}
    for i, (dom, extra) in enumerate(domains.items()):
        base = f"CONCELIER__MIRROR__DOMAINS__{i}__"
        env |= {base + "ID": dom, base + "HOSTNAMES__0": f"{dom}.mirror.test",
                base + "TLS__CERTFILE": f"/tls/{dom}.crt", base + "TLS__KEYFILE": f"/tls/{dom}.key"}
        env |= {base + k: v for k, v in extra.items()}
    return env


def _server(text: str, host: str) -> str:
    start = text.index(f"server_name {host};")
    return text[start:text.index("location / { return 404; }", start)]


def test_shipped_compose_gateway_is_the_rendering_of_the_shipped_env() -> None:
    config = load_config(None, read_env_file(ENV_EXAMPLE))
    assert SHIPPED.read_text() == render(config), "re-render: stella-mirror gateway render (see the env file)"


def test_basic_auth_only_where_the_domain_requires_it() -> None:
    text = render(load_config(None, _env(
        primary={"REQUIREAUTHENTICATION": "true", "HTPASSWD": "/secrets/primary.htpasswd"},
        community={"REQUIREAUTHENTICATION": "false", "HTPASSWD": "/secrets/community.htpasswd"},
        partner={"REQUIREAUTHENTICATION": "true"},  # bearer tokens only: the origin checks them
    )))
    primary, community, partner = (_server(text, f"{d}.mirror.test") for d in ("primary", "community", "partner"))
    assert 'auth_basic "primary";' in primary and "auth_basic_user_file /secrets/primary.htpasswd;" in primary
    assert "ssl_certificate     /tls/primary.crt;" in primary and "/tls/community" not in primary
    assert "auth_basic" not in community and "auth_basic" not in partner
    assert "ssl_certificate     /tls/community.crt;" in community
    # Only what nginx authenticated itself is cached per user; unchecked credentials bypass the cache.
    # The path, never the query string, keys the cache (?bust=N is the same file).
    assert '"$scheme://$host$uri $remote_user"' in primary
    assert all("$request_uri" not in line for line in text.splitlines() if "proxy_cache_key" in line)
    assert "proxy_no_cache $http_authorization;" in partner and "proxy_no_cache $http_authorization;" in community
    assert "proxy_set_header Authorization $http_authorization;" in text
    assert "proxy_cache_lock on;" in text and "add_header X-Cache-Status $upstream_cache_status always;" in primary
    assert "proxy_ignore_headers" not in text  # the origin's Cache-Control decides


def test_bearer_tokens_pass_basic_auth_when_the_authority_is_configured() -> None:
    env = _env(primary={"REQUIREAUTHENTICATION": "true", "HTPASSWD": "/secrets/primary.htpasswd"})
    env |= {"AUTHORITY__ISSUER": "https://authority.test", "AUTHORITY__AUDIENCES__0": "mirror",
            "AUTHORITY__JWKSURL": "https://authority.test/jwks"}
    text = render(load_config(None, env))
    assert "auth_basic $mirror_realm_concelier_primary_basic;" in _server(text, "primary.mirror.test")
    assert re.search(r'map \$http_authorization \$mirror_realm_concelier_primary_basic \{\s*"~\*\^bearer " off;'
                     r'\s*default "primary";', text)


def test_limit_req_follows_the_quotas() -> None:
    env = _env(primary={"MAXDOWNLOADREQUESTSPERHOUR": "1200", "MAXINDEXREQUESTSPERHOUR": "30"}, community={})
    text = render(load_config(None, env))
    assert "zone=concelier_primary_download:10m rate=20r/m;" in text
    assert "zone=concelier_primary_index:10m rate=1r/m;" in text  # nginx counts at least one a minute
    primary = _server(text, "primary.mirror.test")
    assert "limit_req zone=concelier_primary_download burst=1199 nodelay;" in primary
    assert "limit_req zone=concelier_primary_index burst=29 nodelay;" in primary
    assert "limit_req" not in _server(text, "community.mirror.test")  # 0: unlimited
    # Refusals answered like the origin's 429: problem+json with the origin's body, Retry-After, RateLimit-*.
    assert "error_page 429 @concelier_primary_index_refused;" in primary
    found = re.search(r"location @concelier_primary_index_refused \{(.*?)\n\s*\}\n", text, re.S)
    assert found is not None
    refusal = found.group(1)
    assert "default_type application/problem+json;" in refusal and "add_header Retry-After 60 always;" in refusal
    assert "add_header RateLimit-Limit 30 always;" in refusal and "add_header RateLimit-Remaining 0 always;" in refusal
    body = json.loads(refusal.split("return 429 '", 1)[1].split("';", 1)[0])
    assert body == {"type": "https://stella-ops.org/problems/quota-exceeded", "title": "Too many requests",
                    "status": 429, "detail": "the index request quota of 30 per 3600 s for this domain is used up"}


@pytest.mark.parametrize(("extra", "key_path"), [
    ({"CONCELIER__MIRROR__DOMAINS__1__HOSTNAMES__0": ""}, "concelier.mirror.domains.1.hostnames"),
    ({"CONCELIER__MIRROR__DOMAINS__1__TLS__CERTFILE": "", "CONCELIER__MIRROR__DOMAINS__1__TLS__KEYFILE": ""},
     "concelier.mirror.domains.1.tls"),
    ({"CONCELIER__MIRROR__DOMAINS__1__HOSTNAMES__0": "primary.mirror.test",
      "CONCELIER__MIRROR__DOMAINS__1__TLS__CERTFILE": "/tls/primary.crt",
      "CONCELIER__MIRROR__DOMAINS__1__TLS__KEYFILE": "/tls/primary.key"}, "concelier.mirror.domains.1.hostnames"),
    ({"CONCELIER__MIRROR__DOMAINS__1__HOSTNAMES__0": "primary.mirror.test"}, "concelier.mirror.domains.1.tls"),
])
def test_what_the_gateway_cannot_serve_names_the_key(extra: dict[str, str], key_path: str) -> None:
    env = _env(primary={}, community={})
    env.update(extra)
    with pytest.raises(ConfigError) as exc:
        plan(load_config(None, {k: v for k, v in env.items() if v}))
    assert exc.value.key_path == key_path


def test_one_server_per_host_name_across_products() -> None:
    env = _env(primary={})
    env |= {"EXCITITOR__MIRROR__ENABLED": "true", "EXCITITOR__MIRROR__DOMAINS__0__ID": "vex",
            "EXCITITOR__MIRROR__DOMAINS__0__HOSTNAMES__0": "primary.mirror.test",
            "EXCITITOR__MIRROR__DOMAINS__0__TLS__CERTFILE": "/tls/primary.crt",
            "EXCITITOR__MIRROR__DOMAINS__0__TLS__KEYFILE": "/tls/primary.key"}
    text = render(load_config(None, env))
    assert text.count("server_name primary.mirror.test;") == 1
    server = _server(text, "primary.mirror.test")
    assert "proxy_pass http://mirror_concelier;" in server and "proxy_pass http://mirror_excititor;" in server


def test_a_site_written_once_serves_both_products_and_errors_name_it() -> None:
    env = {"MIRROR__GATEWAY__TERMINATETLS": "true", "MIRROR__DOMAINS__0__ID": "primary",
           "MIRROR__DOMAINS__0__HOSTNAMES__0": "primary.mirror.test",
           "MIRROR__DOMAINS__0__TLS__CERTFILE": "/tls/p.crt", "MIRROR__DOMAINS__0__TLS__KEYFILE": "/tls/p.key",
           "MIRROR__DOMAINS__0__HTPASSWD": "/secrets/p.htpasswd"}
    for product in ("CONCELIER", "EXCITITOR"):
        env |= {f"{product}__MIRROR__DOMAINS__0__ID": "primary",
                f"{product}__MIRROR__DOMAINS__0__REQUIREAUTHENTICATION": "true"}
    server = _server(render(load_config(None, env)), "primary.mirror.test")
    assert "# concelier domain primary" in server and "# excititor domain primary" in server
    assert server.count("auth_basic_user_file /secrets/p.htpasswd;") == 4  # both products, both route classes
    env.pop("MIRROR__DOMAINS__0__HOSTNAMES__0")
    with pytest.raises(ConfigError) as info:
        plan(load_config(None, env))
    assert info.value.key_path == "mirror.domains.0.hostnames"
