"""Domain filters: which merged advisories a mirror domain publishes.

Grammar: ``clause[;clause…]`` where a clause is ``field:value[,value…]``. Clauses combine with AND,
values within a clause with OR. An empty filter (or ``*``) selects everything.

Fields:

- ``ecosystem`` — the advisory has an affected package in one of these ecosystems (case-insensitive;
  ``Debian`` also matches ``Debian:11``);
- ``source`` — a contributing document came from a source with this name or kind (``osv``, ``csaf``);
- ``severity`` — the advisory's severity is one of these (``critical,high``).

Examples: ``ecosystem:PyPI,Go`` · ``source:csaf`` · ``source:osv;severity:critical,high``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stella_mirror.concelier.model import Advisory
from stella_mirror.errors import ConfigError

FIELDS = ("ecosystem", "source", "severity")


@dataclass(frozen=True)
class DomainFilter:
    """A parsed filter; ``clauses`` maps a field to its accepted (lower-cased) values."""

    text: str = ""
    clauses: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None, key: str = "filter") -> DomainFilter:
        """Parse a filter string; ConfigError naming ``key`` when it is not understood."""
        text = (text or "").strip()
        if text in ("", "*"):
            return cls(text="")
        clauses: dict[str, frozenset[str]] = {}
        for raw in text.split(";"):
            clause = raw.strip()
            if not clause:
                continue
            name, sep, values = clause.partition(":")
            name = name.strip().lower()
            if not sep or name not in FIELDS:
                raise ConfigError(key, f"{clause!r} is not field:value[,value] with field one of {', '.join(FIELDS)}")
            vals = frozenset(v.strip().lower() for v in values.split(",") if v.strip())
            if not vals:
                raise ConfigError(key, f"{clause!r} names no values")
            clauses[name] = clauses[name] & vals if name in clauses else vals
        return cls(text=text, clauses=clauses)

    def matches(self, adv: Advisory, source_kinds: dict[str, str]) -> bool:
        """True when ``adv`` passes every clause; ``source_kinds`` maps source name → kind."""
        for name, values in self.clauses.items():
            if name == "ecosystem":
                ok = any(
                    a["ecosystem"].lower() in values or a["ecosystem"].split(":", 1)[0].lower() in values
                    for a in adv["affected"]
                )
            elif name == "source":
                ok = any(
                    p["source"].lower() in values or source_kinds.get(p["source"], "").lower() in values
                    for p in adv["provenance"]
                )
            else:
                ok = (adv["severity"] or "").lower() in values
            if not ok:
                return False
        return True
