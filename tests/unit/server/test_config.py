"""Configuration: YAML file + environment with the runbook's names, merge rules, key-path errors, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from stella_mirror.config import LoadReport, env_to_tree, load_config, merge, redacted
from stella_mirror.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mirror.yaml"
    p.write_text(text)
    return p


def test_runbook_environment_names_nest_case_insensitively() -> None:
    env = {
        "CONCELIER__MIRROR__ENABLED": "true",
        "CONCELIER__MIRROR__EXPORTROOT": "/exports/json",
        "CONCELIER__MIRROR__REQUIREAUTHENTICATION": "true",
        "CONCELIER__MIRROR__MAXINDEXREQUESTSPERHOUR": "600",
        "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
        "CONCELIER__MIRROR__DOMAINS__0__DISPLAYNAME": "Primary",
        "CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUR": "1200",
        "CONCELIER__MIRROR__DOMAINS__0__HTPASSWD": "/run/secrets/mirror-primary.htpasswd",
        "CONCELIER__MIRROR__DOMAINS__0__HOSTNAMES__0": "Mirror-Primary.stella-ops.org",
        "CONCELIER__MIRROR__DOMAINS__0__SCOPES__0": "concelier.mirror.read",
        "concelier__mirror__domains__0__tls__certfile": "/tls/p.crt",
        "CONCELIER__MIRROR__DOMAINS__0__TLS__KEYFILE": "/tls/p.key",
        "EXCITITOR__ARTIFACTS__FILESYSTEM__ROOT": "/exports",
        "EXCITITOR__MIRROR__MAXINDEXREQUESTSPERHOUR": "60",
        "EXCITITOR__MIRROR__DOMAINS__0__ID": "community",
        "EXCITITOR__MIRROR__DOMAINS__0__REQUIREAUTHENTICATION": "false",
        "AUTHORITY__ISSUER": "https://authority.example",
        "AUTHORITY__AUDIENCES__0": "mirror",
        "AUTHORITY__AUDIENCES__1": "mirror2",
        "AUTHORITY__JWKSFILE": "/jwks.json",
        "MIRROR__QUOTAS__BACKEND": "redis",
        "MIRROR__QUOTAS__REDISURL": "redis://:pw@127.0.0.1:6379/0",
        "MIRROR__QUOTAS__FAILMODE": "closed",
        "MIRROR__TLS__CERTFILE": "/tls/d.crt",
        "MIRROR__TLS__KEYFILE": "/tls/d.key",
        "MIRROR__ACCESSLOG": "/var/log/mirror.jsonl",
        "PATH": "/usr/bin",
        "OTHERAPP__X": "1",
    }
    cfg = load_config(None, env)
    c = cfg.concelier.mirror
    assert c.enabled and c.export_root == Path("/exports/json") and c.active_export_id == "latest"
    assert c.require_authentication and c.max_index_requests_per_hour == 600
    d = c.domains[0]
    assert (d.id, d.display_name, d.max_download_requests_per_hour) == ("primary", "Primary", 1200)
    assert d.hostnames == ("mirror-primary.stella-ops.org",)
    assert d.scopes == ("concelier.mirror.read",)
    assert d.tls.cert_file == Path("/tls/p.crt") and d.tls.key_file == Path("/tls/p.key")
    assert cfg.excititor.export_root == Path("/exports")
    assert cfg.excititor.mirror.domains[0].require_authentication is False
    assert cfg.authority.audiences == ("mirror", "mirror2")
    assert cfg.authority.client_secret_file == Path("/run/secrets/concelier-authority-client")
    assert cfg.mirror.quotas.backend == "redis" and cfg.mirror.quotas.fail_mode == "closed"
    assert cfg.mirror.access_log == "/var/log/mirror.jsonl"
    assert cfg.tls_enabled()


def test_defaults_without_any_input() -> None:
    cfg = load_config(None, {})
    assert cfg.concelier.mirror.enabled and cfg.concelier.mirror.export_root is None
    assert cfg.concelier.mirror.active_export_id == "latest"
    assert cfg.mirror.quotas.backend == "memory" and cfg.mirror.quotas.fail_mode == "open"
    assert cfg.mirror.access_log == "-" and cfg.mirror.port == 8080 and not cfg.tls_enabled()


def test_environment_beats_file_and_merges_list_items_by_index(tmp_path: Path) -> None:
    path = write(tmp_path, """
concelier:
  mirror:
    exportRoot: /file/root
    maxIndexRequestsPerHour: 5
    domains:
      - id: primary
        displayName: From file
        maxDownloadRequestsPerHour: 10
        hostnames: [a.example, b.example]
      - id: second
""")
    env = {
        "CONCELIER__MIRROR__EXPORTROOT": "/env/root",
        "CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUR": "99",
        "CONCELIER__MIRROR__DOMAINS__0__HOSTNAMES__1": "c.example",
        "CONCELIER__MIRROR__DOMAINS__2__ID": "third",
    }
    cfg = load_config(path, env)
    m = cfg.concelier.mirror
    assert m.export_root == Path("/env/root") and m.max_index_requests_per_hour == 5
    assert [d.id for d in m.domains] == ["primary", "second", "third"]
    assert m.domains[0].display_name == "From file" and m.domains[0].max_download_requests_per_hour == 99
    assert m.domains[0].hostnames == ("a.example", "c.example")


def test_file_keys_are_case_insensitive_too(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "CONCELIER:\n  Mirror:\n    EXPORTROOT: /r\n"), {})
    assert cfg.concelier.mirror.export_root == Path("/r")


@pytest.mark.parametrize(
    ("env", "key_path", "reason"),
    [
        ({"CONCELIER__MIRROR__DOMAINS__0__ID": "p",
          "CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUR": "lots"},
         "concelier.mirror.domains.0.maxDownloadRequestsPerHour", "integer"),
        ({"CONCELIER__MIRROR__DOMAINS__0__ID": "p", "CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUR": "-1"},
         "concelier.mirror.domains.0.maxDownloadRequestsPerHour", "greater than or equal to 0"),
        ({"CONCELIER__MIRROR__DOMAINS__0__DISPLAYNAME": "x"}, "concelier.mirror.domains.0.id", "required"),
        ({"CONCELIER__MIRROR__DOMAINS__1__ID": "x"}, "concelier.mirror.domains.1", "item 0 is missing"),
        ({"EXCITITOR__MIRROR__DOMAINS__0__ID": "../etc"}, "excititor.mirror.domains.0.id", "not a valid domain id"),
        ({"EXCITITOR__MIRROR__DOMAINS__0__ID": "domains"}, "excititor.mirror.domains.0.id", "reserved"),
        ({"CONCELIER__MIRROR__DOMAINS__0__ID": "a", "CONCELIER__MIRROR__DOMAINS__1__ID": "a"},
         "concelier.mirror.domains", "configured twice"),
        ({"CONCELIER__MIRROR__ACTIVEEXPORTID": "../x"}, "concelier.mirror.activeExportId", "valid export id"),
        ({"CONCELIER__MIRROR__ENABLED": "maybe"}, "concelier.mirror.enabled", "boolean"),
        ({"MIRROR__QUOTAS__BACKEND": "memcached"}, "mirror.quotas.backend", "'memory' or 'redis'"),
        ({"MIRROR__QUOTAS__BACKEND": "redis"}, "mirror.quotas", "redisUrl is required"),
        ({"MIRROR__QUOTAS__FAILMODE": "sometimes"}, "mirror.quotas.failMode", "'open' or 'closed'"),
        ({"MIRROR__TLS__CERTFILE": "/a.crt"}, "mirror.tls", "together"),
        ({"AUTHORITY__JWKSURL": "ftp://x"}, "authority.jwksUrl", "http(s) URL"),
        ({"CONCELIER__MIRROR__DOMAINS__0__ID": "p", "CONCELIER__MIRROR__DOMAINS__0__HOSTNAMES__0": "bad host!"},
         "concelier.mirror.domains.0.hostnames", "not a valid host name"),
        ({"AUTHORITY__CLIENTSECRET": "hunter2"}, "authority.clientsecret", "never read from the environment"),
        ({"CONCELIER__MIRROR__DOMAINS__X__ID": "p"}, "concelier.mirror.domains", "expected a list"),
        # A domain's site (host names, certificate, htpasswd) has one home: mirror.domains.
        ({"MIRROR__DOMAINS__0__ID": "p", "CONCELIER__MIRROR__DOMAINS__0__ID": "p",
          "CONCELIER__MIRROR__DOMAINS__0__HOSTNAMES__0": "p.example"},
         "concelier.mirror.domains.0.hostnames", "has its site in mirror.domains.0: write hostnames there only"),
        ({"MIRROR__DOMAINS__0__ID": "p", "MIRROR__DOMAINS__1__ID": "q", "CONCELIER__MIRROR__DOMAINS__0__ID": "p"},
         "mirror.domains.1.id", "no concelier or excititor domain is 'q'"),
        # The typo the other way round (issue 19): a product domain whose id has no site.
        ({"MIRROR__DOMAINS__0__ID": "community", "CONCELIER__MIRROR__DOMAINS__0__ID": "community",
          "EXCITITOR__MIRROR__DOMAINS__0__ID": "comunity"}, "excititor.mirror.domains.0.id",
         "domain 'comunity' has no entry in mirror.domains (community)"),
        ({"MIRROR__DOMAINS__0__ID": "p", "MIRROR__DOMAINS__1__ID": "p", "CONCELIER__MIRROR__DOMAINS__0__ID": "p"},
         "mirror.domains.1.id", "configured twice"),
        ({"MIRROR__DOMAINS__0__ID": "p", "MIRROR__DOMAINS__0__HOSTNAMES__0": "bad host!",
          "CONCELIER__MIRROR__DOMAINS__0__ID": "p"}, "mirror.domains.0.hostnames", "not a valid host name"),
        ({"MIRROR__DOMAINS__0__ID": "p", "MIRROR__DOMAINS__0__TLS__CERTFILE": "/p.crt",
          "CONCELIER__MIRROR__DOMAINS__0__ID": "p"}, "mirror.domains.0.tls", "together"),
    ],
)
def test_invalid_configuration_names_the_key_path(env: dict[str, str], key_path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, env)
    assert info.value.key_path == key_path
    assert reason in info.value.reason
    assert info.value.exit_code == 3
    assert "hunter2" not in str(info.value)


def test_unknown_file_key_is_an_error_unknown_env_key_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "concelier:\n  mirror:\n    exportRot: /x\n"), {})
    assert info.value.key_path == "concelier.mirror.exportRot"
    assert info.value.reason == "unknown key (did you mean exportRoot?)"


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUER",
         "CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUR"),
        ("MIRROR__QUOTAS__FAILMOD", "MIRROR__QUOTAS__FAILMODE"),
        ("EXCITITOR__STORAGE__DSN", None),
    ],
)
def test_unknown_env_key_of_our_sections_is_an_error_naming_the_variable(name: str, meant: str | None) -> None:
    env = {"CONCELIER__MIRROR__DOMAINS__0__ID": "primary", name: "5"}
    with pytest.raises(ConfigError) as info:
        load_config(None, env)
    assert info.value.key_path == name and info.value.exit_code == 3
    assert "matches no setting" in info.value.reason and "STELLA_MIRROR_IGNORE_ENV" in info.value.reason
    assert (f"did you mean {meant}?" in info.value.reason) if meant else "did you mean" not in info.value.reason


def test_the_escape_hatch_ignores_listed_variables_and_prefixes_only() -> None:
    env = {"CONCELIER__MIRROR__EXPORTR00T": "/x", "CONCELIER__STORAGE__DSN": "mongodb://x",
           "AUTHORITY__BOOTSTRAP__ENABLED": "true"}
    with pytest.raises(ConfigError) as info:
        load_config(None, env)
    assert info.value.key_path == "CONCELIER__MIRROR__EXPORTR00T"
    report = LoadReport()
    load_config(None, {**env, "STELLA_MIRROR_IGNORE_ENV": "concelier__mirror__exportr00t, CONCELIER__STORAGE__"},
                report)
    # Still reported (config check prints them), no longer refused; AUTHORITY__ keys are only ever reported.
    assert report.ignored_env == ["concelier.mirror.exportr00t", "concelier.storage", "authority.bootstrap"]
    with pytest.raises(ConfigError) as info:
        load_config(None, {**env, "STELLA_MIRROR_IGNORE_ENV": "CONCELIER__STORAGE"})  # a prefix ends in __
    assert info.value.key_path == "CONCELIER__MIRROR__EXPORTR00T"


def test_bad_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "concelier:\n  mirror: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.key_path == str(path) and "line" in info.value.reason
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", {})


def test_env_to_tree_and_merge_are_small_and_predictable() -> None:
    tree = env_to_tree({"MIRROR__A__0__B": "x", "Mirror__a__0__C": "y", "MIRROR__EMPTY": "", "HOME": "/root"})
    assert tree == {"mirror": {"a": {0: {"b": "x", "c": "y"}}}}
    assert merge([{"b": "1", "d": "2"}], {0: {"b": "x"}, 1: {"b": "z"}}) == [{"b": "x", "d": "2"}, {"b": "z"}]
    assert merge({"k": [1, 2]}, {"k": {1: 9}}) == {"k": [1, 9]}
    with pytest.raises(ConfigError, match="both as a value and as a section"):
        env_to_tree({"MIRROR__A": "x", "MIRROR__A__B": "y"})


def test_redacted_output_hides_secrets(tmp_path: Path) -> None:
    secret = tmp_path / "client-secret"
    secret.write_text("s3cr3t-value\n")
    cfg = load_config(None, {"MIRROR__QUOTAS__BACKEND": "redis", "MIRROR__QUOTAS__REDISURL": "redis://:pa55@r:6379/0",
                             "AUTHORITY__CLIENTSECRETFILE": str(secret)})
    data = redacted(cfg)
    text = repr(data)
    assert "pa55" not in text and "s3cr3t" not in text
    assert data["mirror"]["quotas"]["redisUrl"] == "redis://***@r:6379/0"
    assert data["authority"]["clientSecretPresent"] is True
    assert cfg.authority.client_secret() == "s3cr3t-value"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pa55word@r:6379/0", "redis://***@r:6379/0"),
        ("redis://mirror:p@ss/w?rd@r:6379/0", "redis://***@r:6379/0"),  # unencoded @ / ? in the password
        ("redis://r:6379/0?password=pa55word", "redis://r:6379/0?password=***"),
        ("redis://r:6379/0?db=0&password=p@ss:word&ssl=false", "redis://r:6379/0?db=0&password=***&ssl=false"),
        ("unix://:pa55word@/run/redis.sock?db=0", "unix://***@/run/redis.sock?db=0"),
        ("rediss://r:6380/1", "rediss://r:6380/1"),
    ],
)
def test_redacted_output_hides_a_redis_password_however_it_is_written(url: str, shown: str) -> None:
    cfg = load_config(None, {"MIRROR__QUOTAS__BACKEND": "redis", "MIRROR__QUOTAS__REDISURL": url,
                             "AUTHORITY__JWKSURL": "https://jwks-user:jw5s3cret@authority.example/jwks"})
    data = redacted(cfg)
    assert data["mirror"]["quotas"]["redisUrl"] == shown
    assert data["authority"]["jwksUrl"] == "https://***@authority.example/jwks"
    for secret in ("pa55word", "p@ss", "jw5s3cret", "w?rd"):
        assert secret not in repr(data)


@pytest.mark.parametrize("url", ["redis://:p@ss@r:99999/0", "redis://:hunter2@r:63a79/0"])
def test_a_bad_redis_url_names_the_key_and_never_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"MIRROR__QUOTAS__BACKEND": "redis", "MIRROR__QUOTAS__REDISURL": url})
    assert info.value.key_path == "mirror.quotas.redisUrl" and info.value.exit_code == 3
    assert "not a valid Redis URL" in info.value.reason
    assert "p@ss" not in str(info.value) and "hunter2" not in str(info.value) and "63a79" not in str(info.value)


def test_env_example_is_valid_and_uses_the_runbook_names() -> None:
    example = Path(__file__).resolve().parents[3] / "deploy" / "compose" / "env" / "mirror.env.example"
    env = {}
    for line in example.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    report = LoadReport()
    cfg = load_config(None, env, report)
    assert report.ignored_env == []
    assert cfg.concelier.mirror.export_root == Path("/exports/json")
    assert cfg.excititor.export_root == Path("/exports")
    assert [d.id for d in cfg.concelier.mirror.domains] == ["primary", "community"]
    assert cfg.authority.client_secret_file == Path("/run/secrets/concelier-authority-client")
    assert cfg.mirror.quotas.backend == "redis"
    assert cfg.mirror.gateway.terminate_tls and not cfg.tls_enabled()  # the gateway terminates TLS
    assert not any("SECRET=" in k.upper() + "=" for k in env), "no secret values in the example"


def test_a_domain_site_is_written_once_for_both_product_lines() -> None:
    site = {"MIRROR__DOMAINS__0__ID": "primary", "MIRROR__DOMAINS__0__HOSTNAMES__0": "Mirror-Primary.example",
            "MIRROR__DOMAINS__0__HTPASSWD": "/s/mirror-primary.htpasswd",
            "MIRROR__DOMAINS__0__TLS__CERTFILE": "/t/p.crt", "MIRROR__DOMAINS__0__TLS__KEYFILE": "/t/p.key"}
    site |= {"MIRROR__DOMAINS__1__ID": "other"}
    cfg = load_config(None, {**site, "CONCELIER__MIRROR__DOMAINS__0__ID": "primary",
                             "CONCELIER__MIRROR__DOMAINS__0__MAXDOWNLOADREQUESTSPERHOUR": "5",
                             "EXCITITOR__MIRROR__DOMAINS__0__ID": "other",
                             "EXCITITOR__MIRROR__DOMAINS__1__ID": "primary",
                             "MIRROR__GATEWAY__TERMINATETLS": "true"})
    for dom in (cfg.concelier.mirror.domains[0], cfg.excititor.mirror.domains[1]):
        assert dom.hostnames == ("mirror-primary.example",)
        assert dom.htpasswd == Path("/s/mirror-primary.htpasswd")
        assert (dom.tls.cert_file, dom.tls.key_file) == (Path("/t/p.crt"), Path("/t/p.key"))
    assert cfg.concelier.mirror.domains[0].max_download_requests_per_hour == 5  # quotas stay per product
    assert cfg.excititor.mirror.domains[0].hostnames == ()
    assert cfg.site_key("excititor", 1) == "mirror.domains.0"
    assert cfg.site_key("excititor", 0) == "mirror.domains.1"
    # Without mirror.domains, each product domain keeps these keys itself.
    alone = load_config(None, {"EXCITITOR__MIRROR__DOMAINS__0__ID": "other",
                               "EXCITITOR__MIRROR__DOMAINS__0__HOSTNAMES__0": "other.example"})
    assert alone.excititor.mirror.domains[0].hostnames == ("other.example",)
    assert alone.site_key("excititor", 0) == "excititor.mirror.domains.0"


def test_cli_error_lines_redact_any_url(capsys: pytest.CaptureFixture[str]) -> None:
    from stella_mirror.cli.main import report_error
    from stella_mirror.errors import StellaMirrorError

    code = report_error(StellaMirrorError("cannot reach https://sync:p@ss@upstream.example/index.json?token=t0k"))
    err = capsys.readouterr().err
    assert code == 1 and "https://***@upstream.example/index.json?token=***" in err
    assert "p@ss" not in err and "t0k" not in err
