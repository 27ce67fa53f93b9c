"""``stella-mirror status``: per export root the served export, its age, the last successful sync and the lag;
exits 1 when a root is stale (lag past ``--max-lag``, an expired index, nothing served)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from stella_mirror.cli.server_commands import CONFIG_HELP, config_path


def status(
    dest: Annotated[
        list[Path] | None,
        typer.Option("--dest", help="An export root (repeatable).", show_default="the configured roots"),
    ] = None,
    max_lag: Annotated[str, typer.Option("--max-lag", help="Stale past this sync lag (runbook §7).")] = "15m",
    max_age: Annotated[
        str | None, typer.Option("--max-age", help="Stale past this export age (since the origin generated it).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    config: Annotated[Path | None, typer.Option("--config", "-c", help=CONFIG_HELP)] = None,
) -> None:
    """Show what each export root serves and how fresh it is; exit 1 when any is stale."""
    from stella_mirror.ops.status import RootStatus, age_text, root_status
    from stella_mirror.timeutil import parse_duration, utcnow

    lag = parse_duration(max_lag, "--max-lag")
    age = parse_duration(max_age, "--max-age") if max_age is not None else None
    now = utcnow()
    roots: list[RootStatus] = []
    if dest:
        for root in dest:
            roots.append(root_status(_product(root), root, now, max_lag=lag, max_age=age))
    else:
        from stella_mirror.config import load_config

        cfg = load_config(config_path(config))
        for product, mirror, configured in (
            ("concelier", cfg.concelier.mirror, cfg.concelier.mirror.export_root),
            ("excititor", cfg.excititor.mirror, cfg.excititor.export_root),
        ):
            if mirror.enabled:
                ids = [d.id for d in mirror.domains] or None
                roots.append(root_status(product, configured, now, mirror.active_export_id, ids, lag, age))
    if as_json:
        typer.echo(orjson.dumps({"stale": any(r.stale for r in roots), "roots": [r.as_dict() for r in roots]}).decode())
    else:
        for r in roots:
            sync = (
                "never synced (filled by export)"
                if r.sync is None
                else (
                    f"last successful sync {r.sync.last_success_at.isoformat() if r.sync.last_success_at else 'never'}"
                    f", lag {age_text(r.lag_seconds)}"
                )
            )
            sync += f"; export age {age_text(r.export_age_seconds)}"
            typer.echo(
                f"{'STALE' if r.stale else 'ok   '} {r.product} {r.root}: export {r.export_id or '-'} "
                f"sequence {r.sequence if r.sequence is not None else '-'}; {sync}"
            )
            for problem in r.problems:
                typer.echo(f"      ! {problem}")
            for d in r.domains:
                typer.echo(
                    f"      {d.domain_id}: age {age_text(d.age_seconds)}, expires {d.expires_at}, "
                    f"{d.size_bytes} bytes, {d.items} items, keys {', '.join(d.key_ids) or '-'}"
                    + "".join(f"; {p}" for p in d.problems)
                )
    if any(r.stale for r in roots):
        raise typer.Exit(1)


def _product(root: Path) -> str:
    """Which product an export root holds, from its served tree's shape."""
    from stella_mirror.bundle.store import detect_product, resolve_export_dir
    from stella_mirror.errors import BundleError

    try:
        return detect_product(resolve_export_dir(root))[0]
    except (BundleError, OSError):
        return "unknown"  # nothing served: reported stale as such
