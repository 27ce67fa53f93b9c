"""``stella-mirror export``: build signed Concelier and Excititor export trees (publisher side)."""

from __future__ import annotations

import typer

from stella_mirror.cli import export_concelier, export_excititor

app = typer.Typer(help="Build signed exports (Concelier advisories, Excititor VEX).", no_args_is_help=True)

# Each product registers its own command, so each lives in its own small module.
export_concelier.register(app)
export_excititor.register(app)
