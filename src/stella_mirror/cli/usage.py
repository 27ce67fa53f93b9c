"""Usage lines that name arguments the way the help text does: ``stella-mirror verify [OPTIONS] PATH|URL``.

Typer 0.28 writes a required argument as ``{path}`` in the usage line; this command class writes its metavar (or its
name in capitals) instead, ``[PATH]`` when optional, ``PATH...`` when repeatable. Register commands that take
arguments with ``cls=ArgumentUsageCommand``."""

from __future__ import annotations

import typer.core


class ArgumentUsageCommand(typer.core.TyperCommand):
    """A Typer command whose usage line shows arguments as ``PATH`` (see the module docstring)."""

    def collect_usage_pieces(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperArgument):
                name = param.metavar or (param.name or "ARG").upper()
                if param.nargs != 1:
                    name += "..."
                pieces.append(name if param.required else f"[{name}]")
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces
