"""Version orderings per ecosystem (univers) and the interval form of OSV range events.

OSV's evaluation algorithm (https://ossf.github.io/osv-schema/#evaluation) sorts a SEMVER or
ECOSYSTEM range's events by the ecosystem's version order ("0" first) and walks them: ``introduced``
makes later versions affected, ``fixed`` makes the fixed version and later ones unaffected,
``last_affected`` makes versions after it unaffected. :func:`intervals` compiles that walk into
disjoint intervals ``{introduced, fixed, lastAffected}`` — an ``introduced`` while already affected
and a ``fixed``/``last_affected`` while not affected change nothing, as in the walk. The events are
never paired in list order.

No interval form is derived (None) where the order is not known: GIT ranges (commit graphs), an
ecosystem without a univers version class, a version the class cannot parse, or a ``limit`` event
outside a GIT range. The events, kept verbatim in the record, then stand alone.
"""

from __future__ import annotations

import functools
from typing import Any

from univers import versions as uv

from stella_mirror.concelier.model import Interval

# OSV ecosystem (the part before any ":" such as "Debian:11") → univers version class for ECOSYSTEM ranges.
_ECOSYSTEM_CLASSES: dict[str, type[uv.Version]] = {
    "PyPI": uv.PypiVersion,
    "Go": uv.GolangVersion,
    "npm": uv.SemverVersion,
    "crates.io": uv.SemverVersion,
    "Hex": uv.SemverVersion,
    "Pub": uv.SemverVersion,
    "Bitnami": uv.SemverVersion,
    "Maven": uv.MavenVersion,
    "NuGet": uv.NugetVersion,
    "RubyGems": uv.RubygemsVersion,
    "Packagist": uv.ComposerVersion,
    "Debian": uv.DebianVersion,
    "Ubuntu": uv.DebianVersion,
    "Alpine": uv.AlpineLinuxVersion,
    "AlmaLinux": uv.RpmVersion,
    "Rocky Linux": uv.RpmVersion,
    "Red Hat": uv.RpmVersion,
    "SUSE": uv.RpmVersion,
    "openSUSE": uv.RpmVersion,
    "Mageia": uv.RpmVersion,
}


def version_class(range_type: str, ecosystem: str) -> type[uv.Version] | None:
    """The version class that orders a range's events: SemVer 2.0 for SEMVER, the ecosystem's for ECOSYSTEM."""
    if range_type == "SEMVER":
        return uv.SemverVersion
    if range_type == "ECOSYSTEM":
        return _ECOSYSTEM_CLASSES.get(ecosystem.partition(":")[0])
    return None


def parse_version(cls: type[uv.Version], text: str) -> uv.Version | None:
    """``text`` as a version of ``cls``, None when the class does not accept it."""
    key: Any = cls  # classes hash by identity; univers' stubs declare an instance __hash__ only
    return _parse(key, text)


@functools.lru_cache(maxsize=65536)
def _parse(cls: Any, text: str) -> uv.Version | None:
    try:
        version: uv.Version = cls(text)
        return version
    except Exception:  # univers raises ValueError, InvalidVersion or a parser's own error, per class
        return None


def intervals(range_type: str, ecosystem: str, events: list[dict[str, Any]]) -> list[Interval] | None:
    """The intervals OSV's evaluation algorithm gives for one range's events, or None when no order is known."""
    cls = version_class(range_type, ecosystem)
    if cls is None:
        return None
    zeros: list[tuple[str, str]] = []  # introduced "0": before every version
    keyed: list[tuple[Any, int, str, str]] = []
    for n, event in enumerate(events):
        ((kind, value),) = event.items()
        if kind == "limit":
            return None  # a bound on a commit walk: meaningless in a version order
        if kind == "introduced" and value == "0":
            zeros.append((kind, value))
            continue
        version = parse_version(cls, value)
        if version is None:
            return None
        # A univers version orders by its ``value`` field alone (the parsed version, the one field declared
        # ``order=True``): comparing it directly is the same order without attrs building tuples (10x faster).
        keyed.append((version.value, n, kind, value))
    keyed.sort(key=lambda k: (k[0], k[1]))  # equal versions keep their source order
    out: list[Interval] = []
    opened = False
    start: str | None = None
    for kind, value in [*zeros, *((k[2], k[3]) for k in keyed)]:
        if kind == "introduced":
            if not opened:
                opened, start = True, (None if value == "0" else value)
        elif opened:
            if kind == "fixed":
                out.append({"introduced": start, "fixed": value, "lastAffected": None})
            else:
                out.append({"introduced": start, "fixed": None, "lastAffected": value})
            opened = False
    if opened:
        out.append({"introduced": start, "fixed": None, "lastAffected": None})
    return out
