"""Routing: raw-target checks, the route table, host matching, and the per-domain policies built from config."""

from __future__ import annotations

import pytest

from stella_mirror.config import load_config
from stella_mirror.server.middleware.domain import check_raw_target, normalise_host, parse_route
from stella_mirror.server.state import WIDE_DOMAIN_ID, build_sites


@pytest.mark.parametrize(
    ("path", "handler", "route", "kind", "cache", "domain", "pin", "parts"),
    [
        ("/concelier/exports/index.json", "concelier.index", "concelier.index", "index", "index", None, None,
         ("mirror", "index.json")),
        ("/concelier/exports/index.json.jws", "concelier.index", "concelier.index.jws", "index", "index", None, None,
         ("mirror", "index.json.jws")),
        ("/concelier/exports/mirror/primary/manifest.json", "concelier.file", "concelier.manifest", "metadata",
         "payload", "primary", None, ("mirror", "primary", "manifest.json")),
        ("/concelier/exports/mirror/primary/bundle.json", "concelier.file", "concelier.bundle", "download",
         "payload", "primary", None, ("mirror", "primary", "bundle.json")),
        ("/concelier/exports/@20250101T000000Z/mirror/p/bundle.json.sig", "concelier.file", "concelier.bundle.sig",
         "metadata", "payload", "p", "20250101T000000Z", ("mirror", "p", "bundle.json.sig")),
        ("/concelier/exports/@e1/index.json", "concelier.index", "concelier.index", "index", "payload", None, "e1",
         ("mirror", "index.json")),
        ("/excititor/mirror/domains", "excititor.domains", "excititor.domains", "index", "index", None, None, ()),
        ("/excititor/mirror/community/index", "excititor.index", "excititor.index", "index", "index", "community",
         None, ("mirror", "community", "index.json")),
        ("/excititor/mirror/domains/community/index", "excititor.index", "excititor.index", "index", "index",
         "community", None, ("mirror", "community", "index.json")),
        ("/excititor/mirror/community/index.jws", "excititor.index", "excititor.index.jws", "index", "index",
         "community", None, ("mirror", "community", "index.json.jws")),
        ("/excititor/mirror/c/exports/consensus", "excititor.export", "excititor.export", "metadata", "index", "c",
         None, ()),
        ("/excititor/mirror/@x1/c/exports/k/download", "excititor.download", "excititor.download", "download",
         "payload", "c", "x1", ()),
        ("/excititor/mirror/c/exports/k/download.sig", "excititor.download", "excititor.download.sig", "metadata",
         "payload", "c", None, ()),
        ("/healthz", "ops.healthz", "healthz", "ops", None, None, None, ()),
    ],
)
def test_routes(path: str, handler: str, route: str, kind: str, cache: str | None, domain: str | None,
                pin: str | None, parts: tuple[str, ...]) -> None:
    t = parse_route(path)
    assert t is not None
    assert (t.handler, t.route, t.kind, t.cache, t.domain_id, t.pin, t.parts) == (
        handler, route, kind, cache, domain, pin, parts)


@pytest.mark.parametrize("path", [
    "/concelier", "/concelier/exports", "/concelier/exports/", "/concelier/exports/mirror/p/other.json",
    "/concelier/exports/mirror/p/../index.json", "/concelier/exports/mirror/.p/bundle.json",
    "/concelier/exports/mirror//bundle.json", "/concelier/exports/mirror/p/bundle.json/",
    "/concelier/exports/@/index.json", "/concelier/exports/@../index.json", "/concelier/exports/@@x/index.json",
    "/excititor/mirror/c", "/excititor/mirror/c/exports", "/excititor/mirror/c/exports/k/other",
    "/excititor/mirror/c/exports/..%2f/download", "/excititor/mirror/domains/c", "/healthz/",
    "/concelier/exports/mirror/p/bundle.json\x00", "/" + "a/" * 100,
])
def test_unknown_routes(path: str) -> None:
    assert parse_route(path) is None


@pytest.mark.parametrize(("raw", "status"), [
    (b"/concelier/exports/%2e%2e/index.json", 400),
    (b"/concelier/exports/%2E%2E/index.json", 400),
    (b"/concelier/exports/mirror/p%2fbundle.json", 400),
    (b"/concelier/exports/mirror/p%2Fbundle.json", 400),
    (b"/concelier/exports/%252e%252e/index.json", 400),
    (b"/concelier/exports/mirror/p%5cbundle.json", 400),
    (b"/concelier/exports/mirror/p\\bundle.json", 400),
    (b"/concelier/exports/index.json%00", 400),
    (b"/concelier/exports/../../etc/passwd", 400),
    (b"/concelier/exports/./index.json", 400),
    (b"concelier/exports/index.json", 400),
    (b"/" + b"a" * 5000, 414),
])
def test_raw_target_refusals(raw: bytes, status: int) -> None:
    refused = check_raw_target(raw)
    assert refused is not None and refused[0] == status


def test_raw_target_accepts_normal_paths() -> None:
    assert check_raw_target(b"/concelier/exports/mirror/primary/bundle.json") is None
    assert check_raw_target(b"/excititor/mirror/%63ommunity/index") is None  # harmless encoding


def test_normalise_host() -> None:
    assert normalise_host(b"Mirror.Example.ORG:8443") == "mirror.example.org"
    assert normalise_host(b"mirror.example.org.") == "mirror.example.org"
    assert normalise_host(b"[::1]:8080") == "[::1]"
    assert normalise_host(b"127.0.0.1") == "127.0.0.1"


def test_policies_inherit_product_settings_and_map_hosts() -> None:
    cfg = load_config(None, {
        "CONCELIER__MIRROR__EXPORTROOT": "/",
        "CONCELIER__MIRROR__REQUIREAUTHENTICATION": "true",
        "CONCELIER__MIRROR__MAXINDEXREQUESTSPERHOUR": "100",
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "CONCELIER__MIRROR__DOMAINS__0__HOSTNAMES__0": "p.example",
        "CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUR": "7",
        "CONCELIER__MIRROR__DOMAINS__1__ID": "open",
        "CONCELIER__MIRROR__DOMAINS__1__REQUIREAUTHENTICATION": "false",
        "CONCELIER__MIRROR__DOMAINS__1__MAXINDEXREQUESTSPERHOUR": "0",
        "EXCITITOR__MIRROR__ENABLED": "false",
    })
    sites, problems = build_sites(cfg)
    c = sites["concelier"]
    p, o = c.domains["primary"], c.domains["open"]
    assert p.require_authentication and p.max_index_requests_per_hour == 100 and p.max_download_requests_per_hour == 7
    assert not o.require_authentication and o.max_index_requests_per_hour == 0
    assert c.wide_policy("p.example") is p
    assert c.wide_policy("other.example").domain_id == WIDE_DOMAIN_ID
    assert c.wide.require_authentication and c.wide.max_index_requests_per_hour == 100
    assert not sites["excititor"].served and problems == []
    sites, problems = build_sites(load_config(None, {}), "concelier")
    assert not sites["excititor"].served
    assert problems == ["concelier: Mirror export root is not configured"]
    _, problems = build_sites(load_config(None, {"CONCELIER__MIRROR__EXPORTROOT": "/no/such/root"}), "concelier")
    assert problems == ["concelier: Mirror export root is not configured",
                        "concelier: the configured export root /no/such/root does not exist"]
