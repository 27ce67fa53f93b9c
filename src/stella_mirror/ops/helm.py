"""Our Helm chart rendered without ``helm``, through :mod:`stella_mirror.ops.gotemplate`.

Used by ``deploy/tools/validate-profiles.sh`` (which checks the objects with ``kubernetes-validate`` and each
container through :mod:`stella_mirror.ops.containers`) and by the tests that start ``serve`` from what the chart
renders.

What ``helm template`` provides and this does: ``values.yaml`` deep-merged with each values file (maps merge,
anything else replaces, ``null`` deletes), ``.Values``, ``.Chart`` (Chart.yaml's keys capitalised: ``.Chart.Name``),
``.Release`` (``Name``, ``Namespace``, ``Service`` = ``Helm``, ``IsInstall``, ``Revision``); templates under
``templates/`` (``_*`` files only lend their ``define``\\ s); output split on ``---`` lines into YAML documents.
Not provided (a template using them fails, naming the line): ``.Capabilities``, ``.Files``, ``.Template``,
``lookup``, subcharts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stella_mirror.errors import ConfigError
from stella_mirror.ops.gotemplate import TemplateError, render_files


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


def coalesce(base: Any, override: Any) -> Any:
    """Helm's values merge: maps merge key by key, ``null`` deletes a key, anything else replaces."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = coalesce(out.get(key), value)
    return out


def _chart_meta(chart: Path) -> dict[str, Any]:
    meta = _read_yaml(chart / "Chart.yaml")
    if not isinstance(meta, dict) or not meta.get("name") or not meta.get("version"):
        raise ConfigError(str(chart / "Chart.yaml"), "a chart needs a mapping with name and version")
    return {("APIVersion" if k == "apiVersion" else k[:1].upper() + k[1:]): v for k, v in meta.items()}


def values(chart: Path, value_files: Sequence[Path] = ()) -> dict[str, Any]:
    """``values.yaml`` with each values file merged over it, in order."""
    merged: Any = _read_yaml(chart / "values.yaml") or {}
    for path in value_files:
        extra = _read_yaml(path) or {}
        if not isinstance(extra, dict):
            raise ConfigError(str(path), "a values file must be a mapping")
        merged = coalesce(merged, extra)
    return dict(merged)


def render_chart(chart: Path, value_files: Sequence[Path] = (), release: str = "mirror",
                 namespace: str = "default") -> list[Manifest]:
    """Every object the chart renders with these values; :class:`ConfigError` naming the file (and line) when a
    template fails or renders invalid YAML."""
    data = {
        "Values": values(chart, value_files),
        "Chart": _chart_meta(chart),
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": True,
                    "IsUpgrade": False, "Revision": 1},
    }
    files = {}
    for path in sorted((chart / "templates").iterdir()):
        if path.suffix in (".yaml", ".yml", ".tpl"):
            files[f"{chart.name}/templates/{path.name}"] = path.read_text(encoding="utf-8")
    manifests = []
    try:
        rendered = list(render_files(files, data, lambda name: Path(name).name.startswith("_")))
    except TemplateError as exc:
        raise ConfigError(str(exc).split(":", 1)[0], str(exc).split(": ", 1)[-1]) from None
    for source, text in rendered:
        for i, part in enumerate(re.split(r"(?m)^---[ \t]*$", text)):
            try:
                doc = yaml.safe_load(part)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark else ""
                raise ConfigError(source, f"document {i + 1} of the rendering is not valid YAML{where}") from None
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise ConfigError(source, f"document {i + 1} of the rendering is not a mapping")
            manifests.append(Manifest(source, doc))
    return manifests
