"""Server commands: ``serve``, ``demo``, ``reload``, ``config check`` and ``compress``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import orjson
import typer

from stella_mirror.cli.usage import ArgumentUsageCommand

if TYPE_CHECKING:
    from stella_mirror.config import MirrorConfig

# Heavy modules (the pydantic configuration model, the server) are imported inside the commands, so
# other commands such as export and verify do not pay for them at start-up.

ServiceOpt = Literal["all", "concelier", "excititor"]

CONFIG_ENV = "STELLA_MIRROR_CONFIG"
"""Configuration file used when ``--config`` is not given."""
CONFIG_HELP = f"YAML configuration file (or ${CONFIG_ENV})."


def config_path(config: Path | None) -> Path | None:
    if config is not None:
        return config
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else None


def serve(
    config: Annotated[Path | None, typer.Option("--config", "-c", help=CONFIG_HELP)] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Listen address.", show_default="mirror.host, 127.0.0.1")
    ] = None,
    port: Annotated[int | None, typer.Option("--port", help="Listen port.", show_default="mirror.port, 8080")] = None,
    service: Annotated[
        ServiceOpt | None, typer.Option("--service", help="Product lines to serve.", show_default="mirror.service, all")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, max=64, help="Worker processes.", show_default="mirror.workers, 1")
    ] = None,
    pid_file: Annotated[
        Path | None,
        typer.Option("--pid-file", help="Write the server's pid here.", show_default="mirror.pidFile, none"),
    ] = None,
) -> None:
    """Serve the Concelier and Excititor mirror routes from their export roots (SIGHUP reloads)."""
    from stella_mirror.config import load_config
    from stella_mirror.server.runner import ServeOptions, run

    path = config_path(config)

    def loader() -> MirrorConfig:
        return load_config(path)

    raise typer.Exit(run(ServeOptions(loader, host, port, service, workers, pid_file)))


RELOAD_WAIT_SECONDS = 15.0


def reload(
    pid_file: Annotated[Path | None, typer.Option("--pid-file", help="The server's pid file.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Read mirror.pidFile from here.")] = None,
    wait: Annotated[
        float, typer.Option("--wait", min=0.1, help="Seconds to wait for the server's answer.")
    ] = RELOAD_WAIT_SECONDS,
) -> None:
    """Ask a running server to re-read configuration, htpasswd files and certificates (SIGHUP) and report
    its answer: exit 0 when it took the new configuration, 3 with the reason when it refused it."""
    import time

    from stella_mirror.config import load_config
    from stella_mirror.errors import ConfigError, StellaMirrorError
    from stella_mirror.server.reload_report import read_report, report_identity, report_path
    from stella_mirror.server.runner import send_reload

    if pid_file is None:
        pid_file = load_config(config_path(config)).mirror.pid_file
    if pid_file is None:
        raise ConfigError("mirror.pidFile", "no pid file: pass --pid-file or set mirror.pidFile")
    before = report_identity(pid_file)
    pid = send_reload(pid_file)
    deadline = time.monotonic() + wait
    while report_identity(pid_file) == before:
        if time.monotonic() > deadline:
            raise StellaMirrorError(
                f"sent SIGHUP to {pid} but no answer appeared in {report_path(pid_file)} within {wait:g}s"
            )
        time.sleep(0.05)
    answer = read_report(pid_file) or {}
    if not answer.get("ok"):
        raise ConfigError("", f"the server (pid {pid}) refused the new configuration: {answer.get('reason')}")
    typer.echo(f"reloaded: the server (pid {pid}) took the new configuration")


config_app = typer.Typer(help="Inspect the server configuration.", no_args_is_help=True)


@config_app.command("check")
def config_check(
    config: Annotated[Path | None, typer.Option("--config", "-c", help=CONFIG_HELP)] = None,
    output: Annotated[Literal["yaml", "json"], typer.Option("--output", "-o", help="Output format.")] = "yaml",
) -> None:
    """Load the configuration exactly as `serve` does — file, environment, htpasswd files, JWKS file,
    certificates, access log — fail the same way (exit 3 naming the key), else print it with secrets redacted.
    Warns about certificates expiring within 30 days and export roots that are not directories."""
    import logging

    from stella_mirror.config import LoadReport, load_config, redacted
    from stella_mirror.preflight import serve_checks
    from stella_mirror.server.runner import ServeOptions, preflight
    from stella_mirror.server.state import build_sites

    report = LoadReport()
    path = config_path(config)
    cfg = load_config(path, report=report)
    # The server's own log lines would repeat the warnings printed below.
    logging.disable(logging.CRITICAL)
    try:
        preflight(ServeOptions(lambda: load_config(path)))
    finally:
        logging.disable(logging.NOTSET)
    data = redacted(cfg)
    if output == "json":
        typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
    else:
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=True, default_flow_style=False).rstrip())
    for key in report.ignored_env:
        typer.echo(f"warning: environment key {key} matches no setting and was ignored", err=True)
    _, problems = build_sites(cfg)
    for problem in [*problems, *serve_checks(cfg)]:
        typer.echo(f"warning: {problem}", err=True)


def compress(
    path: Annotated[
        Path, typer.Argument(help="An export directory (or staging directory) to precompress.", metavar="PATH")
    ],
    min_size: Annotated[int, typer.Option("--min-size", help="Skip files smaller than this many bytes.")] = 1024,
) -> None:
    """Write .zst and .gz variants beside every JSON payload (before publishing — never in a served root)."""
    from stella_mirror.errors import ConfigError
    from stella_mirror.server.files import precompress_tree

    # An export that lists signed .zst variants (issue 20) must keep them: rewriting them at another level
    # would make their listed digests wrong and the export fail verification.
    for index in [path / "mirror" / "index.json", *sorted(path.glob("mirror/*/index.json"))]:
        if index.is_file() and b'"encodings"' in index.read_bytes():
            raise ConfigError("path", f"{index} lists signed .zst variants already; compress would rewrite them")
    written = precompress_tree(path, min_size)
    typer.echo(f"wrote {len(written)} compressed variant(s) under {path}")


def demo(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 8080,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where to build the demo mirror.", show_default="a new temp directory")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=16, help="Worker processes.")] = 1,
) -> None:
    """Build a signed demo mirror from the built-in samples and serve it, printing smoke-test commands."""
    from stella_mirror.demo import run_demo

    raise typer.Exit(run_demo(port, directory, workers))


def register(app: typer.Typer) -> None:
    """Add the server commands to the ``stella-mirror`` CLI."""
    app.command("serve")(serve)
    app.command("reload")(reload)
    app.command("demo")(demo)
    app.command("compress", cls=ArgumentUsageCommand)(compress)
    app.add_typer(config_app, name="config")
