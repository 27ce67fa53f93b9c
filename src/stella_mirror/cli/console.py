"""The CLI's stderr console, made on first use: rich costs ~20 ms to import, and most runs print nothing."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


@cache
def err_console() -> Console:
    """The shared stderr console (markup on, no highlighting, long lines kept whole)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def escape(text: str) -> str:
    """``text`` with rich markup characters escaped, for printing untrusted strings (paths, messages)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)
