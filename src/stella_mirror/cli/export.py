"""``stella-mirror export``: build signed Concelier and Excititor export trees (publisher side)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Build signed exports (Concelier advisories, Excititor VEX).", no_args_is_help=True)

# Each product registers its own command, so each lives in its own small module.
for _module in ("export_concelier", "export_excititor"):
    try:
        _mod = __import__(f"stella_mirror.cli.{_module}", fromlist=["register"])
    except ModuleNotFoundError as _exc:
        if _exc.name != f"stella_mirror.cli.{_module}":
            raise
        continue
    _mod.register(app)
