"""``stella-mirror sync``: verified, atomic mirroring of signed exports; ``sync history``: what the runs did."""

from __future__ import annotations

import gc
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import orjson
import typer

from stella_mirror.cli.server_commands import CONFIG_HELP, config_path

if TYPE_CHECKING:
    from stella_mirror.sync.state import SyncState

app = typer.Typer(
    help="Mirror signed exports from S3, rsync, an upstream mirror, a directory or an offline kit.",
    invoke_without_command=True,
    no_args_is_help=False,
)

KindOpt = Literal["concelier", "excititor"]
LogOpt = Literal["auto", "json", "rich"]
SOURCE_PANEL = "Source access"


def _state(state_dir: Path | None, configured: Path | None) -> SyncState:
    from stella_mirror.sync.state import SyncState, default_state_dir

    return SyncState(state_dir or configured or default_state_dir())


@app.callback()
def sync(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help=CONFIG_HELP + " Its sync.jobs run.")] = None,
    job: Annotated[list[str] | None, typer.Option("--job", help="Run only this configured job (repeatable).")] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="s3://bucket/prefix, rsync://host/module/path, host:path, "
            "https://mirror, file://dir, a directory or an offline kit (.tar).",
        ),
    ] = None,
    dest: Annotated[Path | None, typer.Option("--dest", help="The export root to publish into.")] = None,
    kind: Annotated[KindOpt | None, typer.Option("--kind", help="concelier or excititor.")] = None,
    trust_key: Annotated[
        list[Path] | None, typer.Option("--trust-key", help="Pinned public key (PEM or JWKS); repeat for rotation.")
    ] = None,
    keep: Annotated[int, typer.Option("--keep", min=1, help="Exports kept (for @<exportId> pins).")] = 3,
    allow_same: Annotated[
        bool, typer.Option("--allow-same", help="Accept the served sequence again: re-fetch, re-verify, repair.")
    ] = False,
    repair: Annotated[
        bool, typer.Option("--repair", help="Re-hash the served export (believing no recorded digest) and repair "
                           "damaged files from the source, in place (implies --allow-same --full).")
    ] = False,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            "--state-dir",
            help="Run history (SQLite); default: sync.stateDir, $STATE_DIRECTORY, "
            "/var/lib/stella-mirror as root, else ~/.local/state/stella-mirror.",
        ),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Keep polling the upstream index; sync on change.")] = False,
    poll: Annotated[float | None, typer.Option("--poll", min=0.1, help="--watch: seconds between polls [30].")] = None,
    interval: Annotated[
        float | None, typer.Option("--interval", min=0.1, help="Seconds between full checks [300].")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Do a full check now (skip the probe shortcut).")] = False,
    log: Annotated[LogOpt, typer.Option("--log", help="auto: a progress bar on a terminal, else JSON lines.")] = "auto",
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint-url", help="S3 API endpoint.", rich_help_panel=SOURCE_PANEL)
    ] = None,
    region: Annotated[str | None, typer.Option("--region", help="S3 region.", rich_help_panel=SOURCE_PANEL)] = None,
    username: Annotated[
        str | None, typer.Option("--username", help="Basic Auth / rsync user.", rich_help_panel=SOURCE_PANEL)
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="File with the password.", rich_help_panel=SOURCE_PANEL)
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option("--token-file", help="File with a bearer token.", rich_help_panel=SOURCE_PANEL)
    ] = None,
    token_url: Annotated[
        str | None,
        typer.Option(
            "--token-url", help="OAuth 2.0 token endpoint (client credentials).", rich_help_panel=SOURCE_PANEL
        ),
    ] = None,
    client_id: Annotated[str | None, typer.Option("--client-id", help="OAuth client id (with --token-url).",
                                                  rich_help_panel=SOURCE_PANEL)] = None,
    client_secret_file: Annotated[
        Path | None,
        typer.Option(
            "--client-secret-file", help="e.g. /run/secrets/concelier-authority-client.", rich_help_panel=SOURCE_PANEL
        ),
    ] = None,
    scope: Annotated[
        str | None, typer.Option("--scope", help="e.g. concelier.mirror.read.", rich_help_panel=SOURCE_PANEL)
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds a read may wait; the grace of every transfer's "
                                   "deadline [60].", rich_help_panel=SOURCE_PANEL)
    ] = None,
    min_rate: Annotated[
        int | None, typer.Option("--min-rate", help="Bytes/s a transfer must keep after its grace [65536].",
                                 rich_help_panel=SOURCE_PANEL)
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="CA bundle for the upstream's TLS.", rich_help_panel=SOURCE_PANEL)
    ] = None,
) -> None:
    """Sync signed exports into an export root: stage, reuse, fetch, verify against pinned keys, switch
    `latest` atomically. One-shot (for a timer) or --watch."""
    if ctx.invoked_subcommand is not None:
        return
    # A one-shot run is a short process that allocates little garbage with cycles: collecting while its
    # libraries load (the configuration's pydantic models, botocore) only costs time — about a tenth of a
    # no-op run from a timer. --watch turns the collector back on before it settles into its loop.
    gc.disable()
    from pydantic import ValidationError

    from stella_mirror.config import load_config, validation_error
    from stella_mirror.errors import ConfigError
    from stella_mirror.sync.config import SourceOptions
    from stella_mirror.sync.job import Job
    from stella_mirror.sync.jobs import JobSpec, run_once, specs_from_config
    from stella_mirror.sync.report import make_reporter
    from stella_mirror.sync.watch import watch as watch_loop

    repair = repair or (allow_same and full)  # the same thing: re-hash the served export and repair it
    cfg = load_config(config_path(config))
    interval = interval if interval is not None else cfg.sync.interval_seconds
    if source is not None:
        from stella_mirror.bundle.keyfiles import load_trusted_keys

        given = (("--dest", dest), ("--kind", kind), ("--trust-key", trust_key))
        missing = [name for name, value in given if not value]
        if missing:
            raise ConfigError("", f"--source needs {', '.join(missing)}")
        assert dest is not None and kind is not None and trust_key
        try:
            given_options = {
                "endpoint_url": endpoint_url,
                "region": region,
                "username": username,
                "password_file": password_file,
                "token_file": token_file,
                "token_url": token_url,
                "client_id": client_id,
                "client_secret_file": client_secret_file,
                "scope": scope,
                "ca_file": ca_file,
                "timeout_seconds": timeout,
                "min_bytes_per_second": min_rate,
            }
            options = SourceOptions.model_validate({k: v for k, v in given_options.items() if v is not None})
        except ValidationError as exc:
            raise validation_error(exc) from None
        name = f"{kind}:{dest.name}"
        keys = load_trusted_keys(trust_key)
        job_ = Job(name, kind, dest, keys, keep, allow_same, interval, repair, options.run_timeout_seconds)
        specs = [JobSpec(job_, source, options)]
    else:
        roots = {"concelier": cfg.concelier.mirror.export_root, "excititor": cfg.excititor.export_root}
        specs = specs_from_config(cfg.sync, roots, job)
        if interval != cfg.sync.interval_seconds or repair:
            from dataclasses import replace

            specs = [replace(s, job=replace(s.job, interval=interval, repair=repair)) for s in specs]
    state = _state(state_dir, cfg.sync.state_dir)
    reporter = make_reporter(log)
    if not watch:
        error = run_once(specs, state, reporter, full=full or repair)
        # The run is over and the process about to exit: leave every object to the exit itself, so the
        # interpreter's last collection does not walk them all (a fifth of a no-op run from a timer).
        gc.freeze()
        if error is not None:
            raise error
        return
    gc.enable()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    watch_loop(specs, state, reporter, poll if poll is not None else cfg.sync.poll_seconds, stop)


@app.command("history")
def history(
    config: Annotated[Path | None, typer.Option("--config", "-c", help=CONFIG_HELP)] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="The sync's state directory.")] = None,
    dest: Annotated[Path | None, typer.Option("--dest", help="Only runs into this export root.")] = None,
    job: Annotated[str | None, typer.Option("--job", help="Only runs of this job.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many runs, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array of runs.")] = False,
) -> None:
    """The recorded sync runs: when, from where, outcome, export, files and bytes fetched/reused, error."""
    configured = None
    if config is not None or config_path(None) is not None:
        from stella_mirror.config import load_config

        configured = load_config(config_path(config)).sync.state_dir
    runs = _state(state_dir, configured).history(limit, str(dest) if dest else None, job)
    if as_json:
        typer.echo(orjson.dumps([r.as_dict() for r in runs], option=orjson.OPT_INDENT_2).decode())
        return
    if not runs:
        typer.echo("no sync runs recorded")
        return
    for r in runs:
        export = f"{r.export_id} (sequence {r.sequence})" if r.export_id else "-"
        typer.echo(
            f"{r.started_at}  {r.job:<16} {r.outcome:<10} {export}  fetched {r.files_fetched} files/"
            f"{r.bytes_fetched} B, reused {r.files_reused}/{r.bytes_reused} B  {r.source} -> {r.dest}"
        )
        if r.error:
            typer.echo(f"    error: {r.error}")
        if r.warning:
            typer.echo(f"    warning: {r.warning}")
