"""Our Helm chart rendered without the ``helm`` program, by Helm itself: helm-python-sdk binds Helm's official Go
SDK (``libhelm_c``), so templates, sprig functions and the values merge are Helm's own, not an imitation.

Used by ``deploy/tools/validate-profiles.sh`` (which checks the objects with ``kubernetes-validate`` and each
container through :mod:`stella_mirror.ops.containers`) and by the tests that start ``serve`` from what the chart
renders. An optional dependency: ``pip install 'stella-mirror[validate]'``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stella_mirror.errors import ConfigError


@dataclass(frozen=True)
class Manifest:
    """One rendered Kubernetes object and the template it came from."""

    source: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.doc.get("metadata") or {}).get("name", ""))


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(str(path), f"not valid YAML{f' at line {mark.line + 1}' if mark else ''}") from None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``helm -f a.yaml -f b.yaml``: later files' maps merge into earlier ones key by key (nulls are kept: Helm
    deletes those keys when it coalesces the result with the chart's defaults)."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _user_values(value_files: Sequence[Path]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in value_files:
        extra = _read_yaml(path) or {}
        if not isinstance(extra, dict):
            raise ConfigError(str(path), "a values file must be a mapping")
        merged = _merge(merged, extra)
    return merged


def _load(chart: Path) -> Any:
    try:
        from helm_python.chart import Chart
        from helm_python.errors import HelmError
    except ImportError:  # pragma: no cover - the validate extra is part of dev
        raise ConfigError("helm", "rendering needs helm-python-sdk: pip install 'stella-mirror[validate]'") from None
    try:
        return Chart.load(chart)
    except HelmError as exc:
        raise ConfigError(str(chart), f"not a loadable chart: {exc}") from None


def values(chart: Path, value_files: Sequence[Path] = ()) -> dict[str, Any]:
    """The values the templates see: ``values.yaml`` coalesced with each values file, as Helm does it."""
    from helm_python.errors import HelmError

    try:
        merged: dict[str, Any] = _load(chart).merge_values(_user_values(value_files))
    except HelmError as exc:
        raise ConfigError(str(chart), f"values: {exc}") from None
    return merged


def render_chart(
    chart: Path, value_files: Sequence[Path] = (), release: str = "mirror", namespace: str = "default"
) -> list[Manifest]:
    """Every object the chart renders with these values (``helm template``); :class:`ConfigError` naming the
    template when one fails or renders invalid YAML."""
    from helm_python.errors import HelmError

    try:
        rendered: dict[str, str] = _load(chart).render(_user_values(value_files), name=release, namespace=namespace)
    except HelmError as exc:
        # Helm names the template and line: "template: stellaops/templates/x.yaml:12:3: executing …"
        template = re.search(r"([\w.-]+/templates/[\w./-]+)", str(exc))
        raise ConfigError(template.group(1) if template else str(chart), str(exc)) from None
    manifests = []
    for source, text in sorted(rendered.items()):
        try:
            docs = list(yaml.safe_load_all(text))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(source, f"the rendering is not valid YAML{where}") from None
        for i, doc in enumerate(docs):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ConfigError(source, f"document {i + 1} of the rendering is not a mapping")
            manifests.append(Manifest(source, doc))
    return manifests
