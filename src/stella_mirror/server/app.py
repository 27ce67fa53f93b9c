"""The mirror server's ASGI application: ``create_app(config)``.

Raw ASGI all the way down (no router objects, no per-request Request instances). HTTP requests go to
:class:`~stella_mirror.server.gateway.Gateway`, the one request path (see there); this module owns the
lifespan, the background tasks and reloads.

Configuration-derived state lives in one immutable :class:`~stella_mirror.server.state.ServerState`;
:meth:`MirrorApp.reload` (SIGHUP) builds a new one — re-reading the configuration, htpasswd files, JWKS and,
through reload hooks, TLS certificates — and swaps it in one assignment, so requests in flight finish with
the state they started with and no request is refused while reloading.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.types import Receive, Scope, Send

from stella_mirror.config import MirrorConfig
from stella_mirror.errors import ConfigError, StellaMirrorError
from stella_mirror.server.authn.authenticator import Authenticator, AuthSettings
from stella_mirror.server.files import FileCache
from stella_mirror.server.gateway import Gateway
from stella_mirror.server.metrics import SNAPSHOT_INTERVAL, Metrics
from stella_mirror.server.middleware.access_log import AccessLog, AccessLogSink
from stella_mirror.server.middleware.auth import AuthGate
from stella_mirror.server.middleware.quotas import QuotaGate
from stella_mirror.server.quotas.backend import QuotaBackend
from stella_mirror.server.quotas.memory import MemoryQuotaBackend
from stella_mirror.server.quotas.redis_backend import RedisQuotaBackend
from stella_mirror.server.routes_common import JsonCache, Runtime
from stella_mirror.server.state import NOT_CONFIGURED, ServerState, Service, StateHolder, build_sites
from stella_mirror.server.visibility import restricted_products

log = logging.getLogger("stella_mirror.server")

ReloadHook = Callable[[MirrorConfig], Callable[[], None]]
"""Called with the new configuration before the swap; returns the commit step (raise to abort the reload)."""


def _authenticator(config: MirrorConfig, state_policies: list[Any]) -> Authenticator | None:
    auth = config.authority
    settings = AuthSettings(
        issuer=auth.issuer,
        audiences=tuple(auth.audiences),
        jwks_file=auth.jwks_file,
        jwks_url=auth.jwks_url,
        leeway_seconds=auth.leeway_seconds,
        basic_cache_ttl_seconds=auth.basic_cache_ttl_seconds,
        require_authentication=auth.require_authentication,
    )
    return Authenticator(settings, state_policies)


def _quota_backend(config: MirrorConfig, previous: ServerState | None) -> QuotaBackend | None:
    if previous is not None and previous.config.mirror.quotas == config.mirror.quotas:
        return previous.quota_backend  # keep the counts across reloads
    quotas = config.mirror.quotas
    if quotas.backend == "redis":
        assert quotas.redis_url is not None
        return RedisQuotaBackend(quotas.redis_url, fail_mode=quotas.fail_mode)
    return MemoryQuotaBackend()


def _metrics_token(config: MirrorConfig) -> bytes | None:
    path = config.mirror.limits.metrics_token_file
    if path is None:
        return None
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError("mirror.limits.metricsTokenFile", f"cannot read {path}: {exc.strerror or exc}") from None
    if len(token) < 16 or not token.isascii() or any(c <= 32 for c in token):
        raise ConfigError("mirror.limits.metricsTokenFile", f"{path} must hold one token of at least 16 characters")
    return token


def build_state(
    config: MirrorConfig, service: Service | None = None, previous: ServerState | None = None
) -> ServerState:
    """A complete state generation (raises :class:`StellaMirrorError` on invalid files)."""
    sites, problems = build_sites(config, service)
    state = ServerState(
        config=config, sites=sites, problems=problems, generation=previous.generation + 1 if previous else 0
    )
    authenticator = _authenticator(config, state.all_policies())
    backend = _quota_backend(config, previous)
    complete = ServerState(
        config=config,
        sites=sites,
        authenticator=authenticator,
        quota_backend=backend,
        generation=state.generation,
        problems=problems,
        metrics_token=_metrics_token(config),
        trusted_proxies=tuple(ipaddress.ip_network(n) for n in config.mirror.trusted_proxies),
    )
    return dataclasses.replace(complete, restricted=restricted_products(complete))


def report_problems(state: ServerState) -> None:
    """Log configuration problems; a missing export root is logged with the runbook's exact line."""
    for problem in state.problems:
        product, _, message = problem.partition(": ")
        if message == NOT_CONFIGURED:
            logging.getLogger(f"stella_mirror.{product}").error(NOT_CONFIGURED)
        else:
            log.error("%s", problem)


class MirrorApp:
    """The ASGI application (HTTP + lifespan) with its reloadable state."""

    def __init__(
        self,
        config: MirrorConfig,
        loader: Callable[[], MirrorConfig] | None = None,
        service: Service | None = None,
        metrics_dir: Path | None = None,
        handle_sighup: bool = False,
    ) -> None:
        self.loader = loader
        self.service = service
        self.handle_sighup = handle_sighup
        self.reload_hooks: list[ReloadHook] = []
        self.on_reload: Callable[[bool, str | None], None] | None = None
        """Told how every reload ended (ok, the refusal's reason): the runner answers ``stella-mirror reload``."""
        state = build_state(config, service)
        report_problems(state)
        self.holder = StateHolder(state)
        self.metrics = Metrics(metrics_dir) if config.mirror.metrics else None
        self.sink = self._sink(config.mirror.access_log)
        self.runtime = Runtime(lambda: self.holder.current, FileCache(), JsonCache())
        self._tasks: list[asyncio.Task[None]] = []
        self.pipeline = self._build_pipeline(config)

    @staticmethod
    def _sink(target: str) -> AccessLogSink | None:
        if target.lower() == "off":
            return None
        try:
            return AccessLogSink(target)
        except OSError as exc:
            raise ConfigError("mirror.accessLog", f"cannot open {target}: {exc.strerror or exc}") from None

    def _current_backend(self) -> QuotaBackend:
        backend = self.holder.current.quota_backend
        assert backend is not None  # the quota middleware is only installed with its module
        return backend

    def _current_authenticator(self) -> Authenticator:
        authenticator = self.holder.current.authenticator
        assert authenticator is not None
        return authenticator

    def _build_pipeline(self, config: MirrorConfig) -> Gateway:
        metrics = self.metrics
        quotas = QuotaGate(
            backend=self._current_backend,
            window_seconds=config.mirror.quotas.window_seconds,
            on_reject=metrics.quota_rejected if metrics else None,
            on_unavailable=metrics.quota_degraded if metrics else None,
        )
        auth = AuthGate(self._current_authenticator, on_failure=metrics.auth_failure if metrics else None)
        access_log = AccessLog(lambda: self.sink, metrics)
        return Gateway(lambda: self.holder.current, self.runtime, access_log, auth, quotas, metrics)

    @property
    def state(self) -> ServerState:
        return self.holder.current

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.pipeline(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    # --- lifespan ----------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.startup()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Start the log flusher and metrics snapshots; install the SIGHUP handler when asked to."""
        if self.sink is not None:
            self._tasks.append(asyncio.create_task(self._flush_loop()))
        if self.metrics is not None and self.metrics.snapshot_dir is not None:
            self._tasks.append(asyncio.create_task(self._snapshot_loop()))
        if self.handle_sighup:
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.handle_sighup:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self.sink is not None:
            self.sink.close()
        if self.metrics is not None:
            self.metrics.write_snapshot()
        backend = self.holder.current.quota_backend
        if backend is not None:
            with contextlib.suppress(Exception):
                await backend.close()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            sink = self.sink
            if sink is not None:
                sink.flush()

    async def _snapshot_loop(self) -> None:
        assert self.metrics is not None
        while True:
            await asyncio.sleep(SNAPSHOT_INTERVAL)
            self.metrics.write_snapshot()

    # --- reload ------------------------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read configuration, htpasswd files, JWKS and certificates; swap atomically. False on failure
        (the previous state stays in force and the reason is logged)."""
        if self.loader is None:
            log.warning("reload requested but the configuration source is unknown; nothing reloaded")
            return False
        previous = self.holder.current
        try:
            config = self.loader()
            state = build_state(config, self.service, previous)
            commits = [hook(config) for hook in self.reload_hooks]
        except (StellaMirrorError, OSError, ValueError) as exc:
            log.error("reload failed, keeping the previous configuration: %s", exc)
            if self.metrics is not None:
                self.metrics.reload(False)
            if self.on_reload is not None:
                self.on_reload(False, str(exc))
            return False
        for commit in commits:
            commit()
        self.holder.current = state
        # Directory descriptors are only used between resolving and opening a request's files, never
        # across an await, so the previous generation's can be closed right away.
        for site in previous.sites.values():
            if site.resolver is not None:
                site.resolver.close()
        if config.mirror.access_log != previous.config.mirror.access_log:
            old, self.sink = self.sink, self._sink(config.mirror.access_log)
            if old is not None:
                old.close()
        elif self.sink is not None:
            self.sink.reopen()
        if state.quota_backend is not previous.quota_backend and previous.quota_backend is not None:
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().create_task(previous.quota_backend.close())
        for key, name in (
            ("host", "host"),
            ("port", "port"),
            ("workers", "workers"),
            ("sendfile", "sendfile"),
            ("keep_alive_seconds", "keepAliveSeconds"),
        ):
            if getattr(config.mirror, key) != getattr(previous.config.mirror, key):
                log.warning("mirror.%s changed; it takes effect on restart, not on reload", name)
        old_limits, new_limits = previous.config.mirror.limits, config.mirror.limits
        for key, name in (("max_header_bytes", "maxHeaderBytes"), ("max_connections", "maxConnections")):
            if getattr(new_limits, key) != getattr(old_limits, key):
                log.warning("mirror.limits.%s changed; it takes effect on restart, not on reload", name)
        report_problems(state)
        log.info("configuration reloaded (generation %d)", state.generation)
        if self.metrics is not None:
            self.metrics.reload(True)
        if self.on_reload is not None:
            self.on_reload(True, None)
        return True


def create_app(
    config: MirrorConfig,
    loader: Callable[[], MirrorConfig] | None = None,
    service: Service | None = None,
    metrics_dir: Path | None = None,
    handle_sighup: bool = False,
) -> MirrorApp:
    """Build the ASGI application for ``config`` (raises ConfigError on unreadable htpasswd/JWKS files)."""
    return MirrorApp(config, loader, service, metrics_dir, handle_sighup)
