"""Running the server through public interfaces: granian for plain HTTP, uvicorn when ``serve`` terminates
TLS.

**Plain HTTP — granian** (its multi-process server; chosen by measurement, docs/benchmarks.md: about twice uvicorn's
requests per second on the same ASGI app). Its HTTP/1 implementation (hyper) gives the request limits a public
server must have: request line + header block bounded by ``mirror.limits.maxHeaderBytes`` and at most 100 headers
(both ``431``); a connection must send a whole request head within ``mirror.keepAliveSeconds`` — the first request
of a new connection and every next one on a kept-alive connection alike (slow or idle sockets are closed, they never
hold a worker); at most ``mirror.limits.maxConnections`` requests in flight per worker. Large bodies go out with the
ASGI ``http.response.pathsend`` extension: granian reads the file as the client takes it, so a slow reader costs one
bounded buffer (the write buffer is ``maxHeaderBytes`` too), never the file.

granian's supervisor forks the workers (``--workers N``); a SIGHUP to it is answered here (an ``on_startup``
hook installs the handler): the new configuration is checked the way a worker will load it, the answer is
written for ``stella-mirror reload``, and the signal is passed on to every worker, which reloads *in place*
(:meth:`MirrorApp.reload`: new state swapped atomically) — no worker restarts, so no connection is dropped.

**TLS — uvicorn.** ``serve`` presents each domain's own certificate by SNI and replaces certificates on reload
in the live ``SSLContext``; granian takes one certificate file. With ``mirror.tls`` set, the workers are uvicorn
servers (its public ``Config``/``Server``, h11 protocol: header block bounded by ``maxHeaderBytes``, answered
``400``; idle keep-alive closed after ``keepAliveSeconds``; ``maxConnections`` answered ``503``) under the small
pre-fork supervisor below, which forwards SIGHUP the same way. Behind the gateway (``terminateTls``, the compose
and Helm profiles) ``serve`` speaks plain HTTP, on granian.

:class:`TlsManager` builds the listening ``SSLContext`` with the default certificate (``mirror.tls``) and an
``sni_callback`` that switches the handshake to the context of the domain whose host name the client asked for
(``<product>.mirror.domains.N.tls``); on reload the default chain is replaced in place and the per-host map by a
freshly built one — new handshakes use the new certificates, established connections are untouched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import resource
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.server import MPServer as Granian  # re-exported there; workers are forked processes

from stella_mirror.config import MirrorConfig, TlsFiles
from stella_mirror.errors import ConfigError, StellaMirrorError
from stella_mirror.preflight import log_serve_checks
from stella_mirror.server.app import MirrorApp, create_app
from stella_mirror.server.reload_report import write_report
from stella_mirror.server.state import Service

log = logging.getLogger("stella_mirror.server")

LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Process logs (not the access log) to stderr, one line each."""
    root = logging.getLogger()
    if not any(getattr(h, "_stella", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._stella = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = True


# --- TLS ------------------------------------------------------------------------------------------


def _context(files: TlsFiles, key_path: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    _load(ctx, files, key_path)
    return ctx


def _load(ctx: ssl.SSLContext, files: TlsFiles, key_path: str) -> None:
    assert files.cert_file is not None and files.key_file is not None
    try:
        ctx.load_cert_chain(str(files.cert_file), str(files.key_file))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        where = f"cannot load certificate {files.cert_file} / key {files.key_file}"
        raise ConfigError(key_path, f"{where}: {reason}") from None


@dataclass(frozen=True)
class _TlsPlan:
    default: TlsFiles
    by_host: dict[str, ssl.SSLContext]


class TlsManager:
    """The listening TLS context and the per-host contexts chosen by SNI."""

    def __init__(self, config: MirrorConfig) -> None:
        plan = self._plan(config)
        self.context = _context(plan.default, "mirror.tls")
        self._by_host = plan.by_host
        self.context.sni_callback = self._sni

    @staticmethod
    def _plan(config: MirrorConfig) -> _TlsPlan:
        default = config.mirror.tls
        if not default.configured:
            raise ConfigError("mirror.tls", "certFile and keyFile are required for TLS")
        _context(default, "mirror.tls")  # validate before anything is replaced
        by_host: dict[str, ssl.SSLContext] = {}
        for product, mirror in (("concelier", config.concelier.mirror), ("excititor", config.excititor.mirror)):
            for i, dom in enumerate(mirror.domains):
                if not dom.tls.configured:
                    continue
                ctx = _context(dom.tls, f"{config.site_key(product, i)}.tls")
                for host in dom.hostnames:
                    by_host.setdefault(host, ctx)
        return _TlsPlan(default, by_host)

    def _sni(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        if server_name:
            ctx = self._by_host.get(server_name.lower().rstrip("."))
            if ctx is not None:
                sslobj.context = ctx

    def prepare(self, config: MirrorConfig) -> Callable[[], None]:
        """Reload hook: load and check every certificate now; the returned step makes them live."""
        if not config.tls_enabled():

            def keep() -> None:
                log.warning("TLS cannot be switched off by reload; restart to serve plain HTTP")

            return keep
        plan = self._plan(config)

        def commit() -> None:
            _load(self.context, plan.default, "mirror.tls")
            self._by_host = plan.by_host

        return commit

    def factory(self, _config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        """``uvicorn.Config(ssl_context_factory=...)``."""
        return self.context


# --- workers --------------------------------------------------------------------------------------


@dataclass
class ServeOptions:
    """What ``stella-mirror serve`` was asked for (CLI flags over the configuration)."""

    loader: Callable[[], MirrorConfig]
    host: str | None = None
    port: int | None = None
    service: Service | None = None
    workers: int | None = None
    pid_file: Path | None = None


def _apply(config: MirrorConfig, opts: ServeOptions) -> tuple[str, int, int]:
    m = config.mirror
    return (opts.host or m.host, opts.port if opts.port is not None else m.port, opts.workers or m.workers)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, shared by all workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError("mirror.port", f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def build_worker_app(
    opts: ServeOptions, metrics_dir: Path | None, reload_answer: Path | None = None
) -> tuple[MirrorApp, TlsManager | None]:
    """A worker's application; with ``reload_answer`` (the pid file) it answers reloads there."""
    config = opts.loader()
    app = create_app(config, opts.loader, opts.service, metrics_dir, handle_sighup=True)
    tls = TlsManager(config) if config.tls_enabled() else None
    if tls is not None:
        app.reload_hooks.append(tls.prepare)
    if reload_answer is not None:
        app.on_reload = functools.partial(write_report, reload_answer)
    return app, tls


def preflight(opts: ServeOptions) -> MirrorConfig:
    """Load everything ``serve`` loads before it binds — configuration, htpasswd files, the JWKS file,
    certificates, the access log — and let it go again; raises exactly what ``serve`` would.
    ``stella-mirror config check`` and the supervisor's reload check run it too. The file checks of
    :mod:`stella_mirror.preflight` come first (a TLS key that is not its certificate's named with its key; expiring
    certificates and missing export roots logged)."""
    config = opts.loader()
    log_serve_checks(config, opts.service)
    app, _ = build_worker_app(opts, None)
    if app.sink is not None:
        app.sink.close()
    return config


def check_reload(opts: ServeOptions) -> tuple[bool, str | None]:
    """Whether a reload now would be accepted, and the refusal's reason if not."""
    try:
        preflight(opts)
    except (StellaMirrorError, OSError, ValueError) as exc:
        return False, str(exc)
    return True, None


FD_HEADROOM = 128
"""Descriptors a worker needs beside its connections: export directories and open files, logs, Redis, listener."""


def ensure_descriptors(config: MirrorConfig) -> int:
    """Make sure every worker may open a descriptor per connection and the headroom: the soft RLIMIT_NOFILE is
    raised as far as needed (never past the hard limit, which systemd sets with ``LimitNOFILE``); a hard limit
    too low for ``mirror.limits.maxConnections`` refuses to start, naming the key. Returns the soft limit."""
    limits = config.mirror.limits
    need = limits.max_connections + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft
    if hard != resource.RLIM_INFINITY and hard < need:
        raise ConfigError(
            "mirror.limits.maxConnections",
            f"{limits.max_connections} connections need {need} file descriptors per worker, but the hard limit is "
            f"{hard} (raise LimitNOFILE / ulimit -n, or lower maxConnections)",
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return need


# --- plain HTTP: granian ------------------------------------------------------------------------------

_SERVING: tuple[ServeOptions, Path | None] | None = None
"""What granian's workers build their application from: set by :func:`run` before granian forks them."""

_GRANIAN_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"generic": {"()": "logging.Formatter", "fmt": LOG_FORMAT}},
    "handlers": {"console": {"formatter": "generic", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {"_granian": {"handlers": ["console"], "level": "WARNING", "propagate": False}},
}
"""granian's own messages in our format on stderr (its default config writes to stdout)."""


def worker_app() -> MirrorApp:
    """granian's factory target: the application of one worker (answering SIGHUP by reloading in place)."""
    assert _SERVING is not None, "worker_app() runs in the workers serve() forks"
    opts, metrics_dir = _SERVING
    app, _ = build_worker_app(opts, metrics_dir)
    return app


def _granian(config: MirrorConfig, host: str, port: int, workers: int) -> Granian:
    limits = config.mirror.limits
    return Granian(
        f"{__name__}:worker_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        websockets=False,  # an Upgrade request reaches the application, which refuses it (400)
        backlog=2048,
        backpressure=limits.max_connections,
        http1_settings=HTTP1Settings(
            header_read_timeout=int(config.mirror.keep_alive_seconds * 1000),
            keep_alive=True,
            max_buffer_size=limits.max_header_bytes,
        ),
        log_dictconfig=_GRANIAN_LOGGING,
        respawn_failed_workers=True,
        respawn_interval=1.0,
        workers_kill_timeout=30,
        factory=True,
    )


def _forward_reloads(opts: ServeOptions, pid_file: Path | None) -> Callable[[], None]:
    """granian ``on_startup`` hook: SIGHUP is checked and answered here, then passed on to every worker."""
    main = os.getpid()

    def forward(_sig: int, _frame: Any) -> None:
        if os.getpid() != main:
            return  # a just-forked worker, before its event loop installed the application's handler
        if pid_file is not None:
            write_report(pid_file, *check_reload(opts))
        for child in multiprocessing.active_children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid or 0, signal.SIGHUP)

    def install() -> None:
        signal.signal(signal.SIGHUP, forward)

    return install


def _serve_granian(
    opts: ServeOptions, config: MirrorConfig, host: str, port: int, workers: int, pid_file: Path | None
) -> int:
    global _SERVING
    bind(host, port).close()  # an address in use fails here, naming the key, before granian forks anything
    metrics_dir = Path(tempfile.mkdtemp(prefix="stella-mirror-metrics-")) if workers > 1 else None
    _SERVING = (opts, metrics_dir)
    # The workers inherit _SERVING (and the configuration loader, a closure) by fork.
    multiprocessing.set_start_method("fork", force=True)
    server = _granian(config, host, port, workers)
    server.on_startup(_forward_reloads(opts, pid_file))
    try:
        server.serve()
    finally:
        if metrics_dir is not None:
            _remove_dir(metrics_dir)
    return 0


# --- TLS: uvicorn -------------------------------------------------------------------------------------


def _uvicorn_config(app: MirrorApp, tls: TlsManager) -> uvicorn.Config:
    mirror = app.state.config.mirror
    return uvicorn.Config(
        app,
        http="h11",
        ws="none",
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        timeout_keep_alive=int(mirror.keep_alive_seconds),
        timeout_graceful_shutdown=30,
        limit_concurrency=mirror.limits.max_connections,
        h11_max_incomplete_event_size=mirror.limits.max_header_bytes,
        ssl_context_factory=tls.factory,
    )


def serve_worker(
    sock: socket.socket, opts: ServeOptions, metrics_dir: Path | None, reload_answer: Path | None = None
) -> None:
    """Run one TLS worker on an already-bound socket until SIGTERM/SIGINT."""
    app, tls = build_worker_app(opts, metrics_dir, reload_answer)
    assert tls is not None
    uvicorn.Server(_uvicorn_config(app, tls)).run(sockets=[sock])


def _announce(host: str, port: int, config: MirrorConfig, workers: int) -> None:
    scheme = "https" if config.tls_enabled() else "http"
    log.info("stella-mirror serving on %s://%s:%d with %d worker(s)", scheme, host, port, workers)


def run(opts: ServeOptions) -> int:
    """``stella-mirror serve``: check, bind, then serve with one or more workers; returns the exit code."""
    setup_logging()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until a reload handler is installed
    # Build once in the parent to fail fast (bad htpasswd, certificates) before forking or binding.
    config = preflight(opts)
    host, port, workers = _apply(config, opts)
    ensure_descriptors(config)
    pid_file = opts.pid_file or config.mirror.pid_file
    if workers > 1 and config.mirror.quotas.backend == "memory":
        log.warning(
            "quotas use the memory backend with %d workers: each worker counts on its own "
            "(use mirror.quotas.backend=redis for exact budgets)",
            workers,
        )
    if not config.tls_enabled():
        if pid_file is not None:
            pid_file.write_text(f"{os.getpid()}\n", encoding="ascii")
        _announce(host, port, config, workers)
        try:
            return _serve_granian(opts, config, host, port, workers, pid_file)
        finally:
            if pid_file is not None:
                with contextlib.suppress(OSError):
                    pid_file.unlink()
    sock = bind(host, port)
    if pid_file is not None:
        pid_file.write_text(f"{os.getpid()}\n", encoding="ascii")
    _announce(host, sock.getsockname()[1], config, workers)
    try:
        if workers == 1:
            serve_worker(sock, opts, None, pid_file)
            return 0
        return _supervise(sock, opts, workers, pid_file)
    finally:
        sock.close()
        if pid_file is not None:
            with contextlib.suppress(OSError):
                pid_file.unlink()


def _remove_dir(path: Path) -> None:
    for child in path.glob("*"):
        with contextlib.suppress(OSError):
            child.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


def _supervise(sock: socket.socket, opts: ServeOptions, workers: int, pid_file: Path | None) -> int:
    metrics_dir = Path(tempfile.mkdtemp(prefix="stella-mirror-metrics-"))
    children: dict[int, int] = {}
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                # Until the worker's event loop installs its reload handler, a SIGHUP must not kill it.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                serve_worker(sock, opts, metrics_dir)
            except BaseException:
                logging.getLogger("stella_mirror.server").exception("worker %d failed", slot)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = slot

    def forward(sig: int, _frame: Any) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        if sig == signal.SIGHUP and pid_file is not None:
            # The workers reload on their own; this answers for them, having checked what they will load.
            write_report(pid_file, *check_reload(opts))
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    for slot in range(workers):
        spawn(slot)
    try:
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid not in children:
                continue
            slot = children.pop(pid)
            if not stopping:
                log.error("worker %d (pid %d) exited with status %d; starting a new one", slot, pid, status)
                time.sleep(0.2)
                spawn(slot)
    finally:
        _remove_dir(metrics_dir)
    return 0


def send_reload(pid_file: Path) -> int:
    """``stella-mirror reload``: SIGHUP the server named by ``pid_file``; returns its pid."""
    try:
        pid = int(pid_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        raise ConfigError("mirror.pidFile", f"cannot read a process id from {pid_file}") from None
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ConfigError("mirror.pidFile", f"no process {pid} (from {pid_file}); is the server running?") from None
    return pid
