"""Which index files a tree holds, from a listing of its names — shared by the sources that can list."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

CONCELIER_INDEX = "mirror/index.json"


def index_paths(kind: str, names: Iterable[str]) -> list[str]:
    """The signed index paths of a ``kind`` export among ``names`` (paths relative to the export directory).

    Concelier has one index; an Excititor export has one per domain (``mirror/<domain>/index.json``).
    Domain names are only used to ask for ``…/index.json``; everything else comes from the signed indexes.
    """
    if kind == "concelier":
        return [CONCELIER_INDEX] if CONCELIER_INDEX in set(names) else []
    out = []
    for name in names:
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "mirror" and parts[2] == "index.json" and not parts[1].startswith("."):
            out.append(name)
    return sorted(set(out))


def local_index_names(export_dir: Path) -> list[str]:
    """The candidate index paths of an export directory on this host (either product)."""
    mirror = export_dir / "mirror"
    names = [CONCELIER_INDEX] if (mirror / "index.json").is_file() else []
    if mirror.is_dir():
        names += [f"mirror/{p.name}/index.json" for p in mirror.iterdir() if (p / "index.json").is_file()]
    return names
