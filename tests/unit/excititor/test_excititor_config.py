"""Excititor configuration: validation errors name the key path; globs are relative to the config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from jsonedit import DELETE, edited
from stella_mirror.errors import ConfigError
from stella_mirror.excititor.config import Filters, load_config, parse_config
from stella_mirror.excititor.providers import provider_files

GOOD: dict[str, Any] = {
    "providers": [
        {"id": "vendor-a", "kind": "vendor", "weight": 1.0, "paths": ["vex/vendor-a/**/*.json"]},
        {"id": "hub", "kind": "hub", "weight": 0.5, "paths": ["vex/hub/**"]},
    ],
    "domains": [
        {
            "id": "community",
            "displayName": "Community",
            "exports": [
                {"key": "consensus", "format": "json", "view": "consensus"},
                {"key": "claims", "format": "jsonl", "view": "claims", "filters": {"providers": ["hub"]}},
                {
                    "key": "openvex",
                    "format": "openvex",
                    "view": "consensus",
                    "filters": {"productTypes": ["pypi", "golang"]},
                },
            ],
        }
    ],
}


def _with(path: list[Any], value: Any) -> dict[str, Any]:
    return edited(GOOD, path, DELETE if value is KeyError else value)


def test_issue_example_parses(tmp_path: Path) -> None:
    cfg = parse_config(GOOD, tmp_path)
    assert [p.id for p in cfg.providers] == ["vendor-a", "hub"]
    exports = cfg.domains[0].exports
    assert [(e.key, e.format, e.view, e.filename) for e in exports] == [
        ("consensus", "json", "consensus", "consensus.json"),
        ("claims", "jsonl", "claims", "claims.jsonl"),
        ("openvex", "openvex", "consensus", "openvex.openvex.json"),
    ]
    assert exports[2].filters.product_types == ("pypi", "golang")


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (["providers", 0, "kind"], "reseller", "providers.0.kind"),
        (["providers", 1, "weight"], "heavy", "providers.1.weight"),
        (["providers", 1, "weight"], -1, "providers.1.weight"),
        (["providers", 1, "id"], "vendor-a", "providers.1.id"),
        (["providers", 0, "paths"], [], "providers.0.paths"),
        (["providers", 0, "color"], "red", "providers.0.color"),
        (["domains", 0, "id"], "../escape", "domains.0.id"),
        (["domains", 0, "exports", 0, "format"], "xml", "domains.0.exports.0.format"),
        (["domains", 0, "exports", 2, "view"], "claims", "domains.0.exports.2.view"),
        (["domains", 0, "exports", 1, "filters", "providers"], ["nobody"], "domains.0.exports.1.filters.providers.0"),
        (["domains", 0, "exports", 1, "filters", "severity"], ["high"], "domains.0.exports.1.filters.severity"),
        (["domains", 0, "exports", 1, "key"], "consensus", "domains.0.exports.1.key"),
        (["domains"], KeyError, "domains"),
    ],
)
def test_errors_name_the_key(path: list[Any], value: Any, key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_with(path, value), tmp_path, "mirror.yaml")
    assert info.value.key_path == f"mirror.yaml: {key}"


def test_yaml_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("providers: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value)
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.yaml")


def test_globs_are_relative_to_the_config_folder(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "conf"
    rels = ("vex/vendor-a/2024/a.json", "vex/vendor-a/b.json", "vex/vendor-a/notes.txt", "vex/hub/x/y.json")
    for rel in (*rels, "vex/vendor-a/.b.json.swp.json", "vex/hub/.git/z.json"):
        (cfg_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (cfg_dir / rel).write_text("{}")
    (cfg_dir / "c.yaml").write_text(yaml.safe_dump(GOOD))
    cfg = load_config(cfg_dir / "c.yaml")
    assert cfg.base_dir == cfg_dir.resolve()
    vendor = [(p.relative_to(cfg_dir).as_posix(), h) for p, h in provider_files(cfg.providers[0], cfg.base_dir)]
    # Dot names are matched too, marked hidden: the loader counts and names them, never reads them.
    assert vendor == [
        ("vex/vendor-a/.b.json.swp.json", True),
        ("vex/vendor-a/2024/a.json", False),
        ("vex/vendor-a/b.json", False),
    ]
    hub = [(p.relative_to(cfg_dir).as_posix(), h) for p, h in provider_files(cfg.providers[1], cfg.base_dir)]
    assert hub == [("vex/hub/.git/z.json", True), ("vex/hub/x/y.json", False)]


def test_filters() -> None:
    f = Filters(
        vulnerabilities=("CVE-2024-*", "GHSA-aaaa-bbbb-cccc"), product_types=("apk",), product_namespaces=("wolfi",)
    )
    assert f.vulnerability_matches(["CVE-2024-1234"])
    assert f.vulnerability_matches(["CVE-2023-1", "GHSA-aaaa-bbbb-cccc"])
    assert not f.vulnerability_matches(["CVE-2023-1"])
    assert f.product_matches("pkg:apk/wolfi/bash@1")
    assert not f.product_matches("pkg:apk/alpine/bash@1")
    assert not f.product_matches("csaf:T:1")
    assert Filters(product_namespaces=("golang/example.com/acme",)).product_matches(
        "pkg:golang/example.com/acme/agent@v1"
    )
    assert Filters().product_matches("csaf:T:1") and Filters().vulnerability_matches(["x"])
