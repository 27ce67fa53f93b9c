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


def test_the_gateway_is_ready_only_when_both_products_are(manifests: list[Manifest]) -> None:
    nginx = next(m for m in manifests if m.kind == "Deployment" and m.name == "stellaops-mirror-gateway")
    probe = nginx.doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    command = " ".join(probe["exec"]["command"])
    assert "http://127.0.0.1:8081/concelier/readyz && wget -q -O /dev/null http://127.0.0.1:8081/excititor/readyz" \
        in command


def _pods_mounting(manifests: list[Manifest], claims: set[str]) -> dict[str, dict[str, object]]:
    """Pod specs (by workload) that mount any of ``claims``."""
    out = {}
    for m in manifests:
        spec = m.doc.get("spec", {})
        pod = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec") or \
            spec.get("template", {}).get("spec")
        if pod and any(v.get("persistentVolumeClaim", {}).get("claimName") in claims for v in pod.get("volumes", [])):
            out[m.name] = pod
    return out


@pytest.mark.parametrize("sharing", ["ReadWriteMany", "coSchedule"])
def test_volume_access_modes_match_how_the_pods_are_placed(tmp_path: Path, sharing: str) -> None:
    """Issue 19: the exports are written by the sync's pod and read by every server replica. ReadWriteMany lets
    them run anywhere; ReadWriteOnce volumes attach to one node, so every pod mounting them is required there."""
    extra = tmp_path / "sharing.yaml"
    extra.write_text(f"persistence:\n  sharing: {sharing}\n  create: true\n  storageClass: fast\n")
    rendered = render_chart(CHART, [CHART / "values-mirror.yaml", extra])
    pvcs = {m.name: m.doc["spec"] for m in rendered if m.kind == "PersistentVolumeClaim"}
    claims = {"concelier-mirror-jobs", "concelier-mirror-exports", "excititor-mirror-exports"}
    assert set(pvcs) == claims
    mode = "ReadWriteMany" if sharing == "ReadWriteMany" else "ReadWriteOnce"
    assert all(spec["accessModes"] == [mode] and spec["storageClassName"] == "fast" for spec in pvcs.values())
    pods = _pods_mounting(rendered, claims)
    assert set(pods) == {"stellaops-concelier", "stellaops-excititor", "mirror-sync"}
    for name, pod in pods.items():
        if sharing == "ReadWriteMany":
            assert "affinity" not in pod, name
        else:
            [term] = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]  # type: ignore[index]
            assert term == {"topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "stellaops-concelier"}}}, name
    for m in rendered:
        kubernetes_validate.validate(m.doc, "1.30.0", strict=True)


def test_default_values_create_no_pvc_and_refuse_an_unknown_sharing(tmp_path: Path) -> None:
    from stella_mirror.errors import ConfigError

    assert not [m for m in render_chart(CHART, [CHART / "values-mirror.yaml"]) if m.kind == "PersistentVolumeClaim"]
    extra = tmp_path / "bad.yaml"
    extra.write_text("persistence:\n  sharing: ReadWriteOnce\n")
    with pytest.raises(ConfigError, match=r"persistence\.sharing must be ReadWriteMany or coSchedule"):
        render_chart(CHART, [CHART / "values-mirror.yaml", extra])
