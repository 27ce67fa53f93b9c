"""The Helm chart rendered with values-mirror.yaml: one configuration (the ``env`` values) read by both servers and by
the gateway's render step, and per domain its own TLS secret mounted where that configuration names the files."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from stella_mirror.config import load_config
from stella_mirror.ops.containers import containers
from stella_mirror.ops.helm import Manifest, render_chart, values

CHART = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "stellaops"


@pytest.fixture(scope="module")
def manifests() -> list[Manifest]:
    return render_chart(CHART, [CHART / "values-mirror.yaml"])


def test_every_object_is_valid_kubernetes(manifests: list[Manifest]) -> None:
    kinds = sorted((m.kind, m.name) for m in manifests)
    assert ("ConfigMap", "stellaops-mirror-env") in kinds and ("Deployment", "stellaops-mirror-gateway") in kinds
    for m in manifests:
        kubernetes_validate.validate(m.doc, "1.30.0", strict=True)


def test_one_configuration_for_servers_and_gateway(manifests: list[Manifest]) -> None:
    by_label = {c.label: c for c in containers(manifests)}
    render = by_label["stellaops-mirror-gateway/render"]
    assert render.init and render.command[:3] == ["stella-mirror", "gateway", "render"]
    config = load_config(None, by_label["stellaops-concelier/concelier"].env)
    for label in ("stellaops-excititor/excititor", "stellaops-mirror-gateway/render"):
        other = load_config(None, by_label[label].env)
        assert other.concelier == config.concelier and other.excititor == config.excititor
        assert other.mirror.domains == config.mirror.domains
    # Each server reaches the other (its part of /status) where the gateway reaches it: the chart's Services.
    for label in ("stellaops-concelier/concelier", "stellaops-excititor/excititor", "stellaops-mirror-gateway/render"):
        upstreams = load_config(None, by_label[label].env).mirror.gateway.upstreams
        assert (upstreams.concelier, upstreams.excititor) == ("stellaops-concelier:8080", "stellaops-excititor:8080")
    # The Authority client secret is each product's own (runbook §2: <product>-mirror-auth).
    assert by_label["stellaops-excititor/excititor"].env["AUTHORITY__CLIENTSECRETFILE"] == \
        "/run/secrets/excititor-authority-client"


def test_each_domain_gets_its_own_tls_secret_where_the_configuration_expects_it(manifests: list[Manifest]) -> None:
    nginx = next(c for c in containers(manifests) if c.label == "stellaops-mirror-gateway/nginx")
    tls = next(m for m in nginx.mounts if m.volume["name"] == "tls")
    sources = {s["secret"]["name"]: {i["key"]: f"{tls.path}/{i['path']}" for i in s["secret"]["items"]}
               for s in tls.volume["projected"]["sources"]}
    config = load_config(None, next(c for c in containers(manifests) if c.init).env)
    expected = {f"mirror-gateway-tls-{site.id}": {"tls.crt": str(site.tls.cert_file), "tls.key": str(site.tls.key_file)}
                for site in config.mirror.domains}
    assert sources == expected
    assert set(expected) == {"mirror-gateway-tls-primary", "mirror-gateway-tls-community"}


def test_values_are_helms_coalesce(tmp_path: Path) -> None:
    """Later files merge into earlier ones; a null deletes the chart's default (Helm's own merge)."""
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("mirrorSync:\n  schedule: '*/10 * * * *'\nimage:\n  tag: one\n")
    second.write_text("mirrorSync:\n  awsSecret: null\nimage:\n  tag: two\n")
    merged = values(CHART, [first, second])
    assert merged["mirrorSync"]["schedule"] == "*/10 * * * *" and "awsSecret" not in merged["mirrorSync"]
    assert merged["mirrorSync"]["verifyKeysSecret"] == "mirror-verify-keys"  # defaults stay
    assert merged["image"]["tag"] == "two"
    assert set(values(CHART)) >= {"image", "mirrorSync"}  # the chart's own defaults


def test_a_broken_template_is_named(tmp_path: Path) -> None:
    import shutil

    from stella_mirror.errors import ConfigError

    chart = tmp_path / "stellaops"
    shutil.copytree(CHART, chart)
    tpl = chart / "templates" / "mirror-server.yaml"
    tpl.write_text(tpl.read_text() + "\n{{ .Values.no.such.key }}\n")
    with pytest.raises(ConfigError) as err:
        render_chart(chart, [chart / "values-mirror.yaml"])
    assert err.value.key_path == "stellaops/templates/mirror-server.yaml"
    assert "nil pointer" in err.value.reason


def test_defaults_render_nothing_but_the_disabled_profile() -> None:
    assert render_chart(CHART) == []
