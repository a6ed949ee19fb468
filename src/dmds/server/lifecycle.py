"""Start and stop a whole server process: store, core, front-ends, in that order and back."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from dmds.admin import token
from dmds.admin.server import AdminServer
from dmds.core.ports import Cluster, Store
from dmds.core.service import Service
from dmds.metrics import Metrics
from dmds.server.control import ControlServer
from dmds.server.reload import Reloader
from dmds.settings import ServeSettings
from dmds.stores import describe, open_store
from dmds.stores.sqlite import SqliteStore
from dmds.transports.classic_server import ClassicServer
from dmds.transports.session_server import SessionServer
from dmds.transports.session_ws import WebServer

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from dmds.admin.app import Listening


class StartupError(Exception):
    """The server cannot start as configured (a port taken, a bad token file): said, not a traceback."""


#: Seconds between two purges of delivered messages past the retention period.
PURGE_EVERY_S = 3600.0
#: With gc_full_interval_s: allocations between runs of the youngest generation (Python's: 700),
#: and young runs between runs of the middle one (Python's: 10).
GC_YOUNG, GC_MIDDLE = 50_000, 50


async def _collect_every(period_s: float) -> None:
    """Full garbage collections on a clock instead of by allocation counts. What start-up made lives
    as long as the process and is frozen out of every scan; the automatic schedule keeps the young
    generations and leaves the oldest to this task, so that cycles of closed connections are still
    freed, once a period."""
    gc.freeze()
    before = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, GC_MIDDLE, 1 << 30)
    try:
        while True:
            await asyncio.sleep(period_s)
            started = time.perf_counter()
            found = gc.collect()
            log.debug(
                "full garbage collection: %d objects freed in %.1f ms",
                found,
                1e3 * (time.perf_counter() - started),
            )
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def _write_ports(path: Path, ports: dict[str, int]) -> None:
    """The bound ports and the pid, for programs that started the server on port 0: written to a
    temporary file beside `path` and renamed, so that a reader never sees half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**ports, "pid": os.getpid()}))
    os.replace(tmp, path)


async def _purge_every(service: Service, period_s: float) -> None:
    while True:
        try:
            purged = await service.purge()
        except Exception:
            log.exception("purge of old messages failed; retrying later")
        else:
            if purged:
                log.info("purged %d delivered message(s) past the retention period", purged)
        await asyncio.sleep(period_s)


async def serve(
    settings: ServeSettings,
    stop: asyncio.Event | None = None,
    reload: Callable[[], ServeSettings] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set), then stop gracefully: no new connections, the
    requests in flight answered (within stop_timeout_s), session clients told to go (GoAway), the
    last commit flushed, everything closed. With `reload` (how the settings were read), SIGHUP reads
    them again and applies what can change live (`reload.py`)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics() if settings.admin.admin_port else None
    store, cluster = await open_store(settings, metrics)
    service = Service(store, settings.delivery, settings.accounts, cluster=cluster, metrics=metrics)
    classic = ClassicServer(service, settings.classic, settings.delivery)
    session = SessionServer(service, settings.session, settings.delivery, settings.classic)
    web = WebServer(session)
    # With SQLite, `dmds backup` reaches this process through the data dir's control socket.
    control = (
        ControlServer(settings.server.data_dir, store, settings.server.control_timeout_s)
        if isinstance(store, SqliteStore)
        else None
    )
    purger = loop.create_task(_purge_every(service, PURGE_EVERY_S))
    period = settings.server.gc_full_interval_s
    collector = loop.create_task(_collect_every(period)) if period > 0 else None
    if reload is not None:
        # Before any port is bound: once one answers, a SIGHUP must not meet the default action
        # (the end of the process). The TLS contexts are looked up at each reload.
        reloader = Reloader(reload, settings, service, lambda: [c for c in (session.tls, web.tls) if c])
        loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    admin: AdminServer | None = None
    ports_file: Path | None = None  # written: it goes when the ports close
    try:
        await service.start()
        if control is not None:
            await control.start()
        port = await classic.start(settings.server.host, settings.server.port)
        log.info(
            "dmds classic server listening on %s:%d (store %s, sync=%s%s)",
            settings.server.host,
            port,
            describe(settings),
            settings.store.sync.value,
            f", node {cluster.node_id}" if cluster is not None else "",
        )
        s = settings.session
        session_port = await session.start(s.session_host, s.session_port)
        log.info(
            "dmds session server listening on %s:%d (%s)",
            s.session_host,
            session_port,
            "TLS" if s.tls_cert else "plain TCP: put it behind TLS or set --tls-cert/--tls-key",
        )
        web_port = await web.start(s.web_host, s.web_port, s.tls_cert, s.tls_key)
        tls = bool(s.tls_cert)
        log.info(
            "dmds web client at %s://%s:%d/, session server over WebSocket at %s://%s:%d/session",
            "https" if tls else "http",
            s.web_host,
            web_port,
            "wss" if tls else "ws",
            s.web_host,
            web_port,
        )
        bound = {"classic": port, "session": session_port, "web": web_port}
        if metrics is not None:
            admin, bound["admin"] = await _start_admin(
                settings,
                service=service,
                store=store,
                cluster=cluster,
                metrics=metrics,
                classic=classic,
                session=session,
                web=web,
            )
        if settings.server.ports_file:
            ports_file = Path(settings.server.ports_file)
            _write_ports(ports_file, bound)
        await stop.wait()
        timeout = settings.server.stop_timeout_s
        log.info("stopping: answering the requests in flight (at most %g s)", timeout)
        deadline = loop.time() + timeout
        await asyncio.gather(classic.stop(deadline), session.stop(deadline))
    finally:
        if admin is not None:
            await admin.close()
        purger.cancel()
        if collector is not None:
            collector.cancel()
        if control is not None:
            await control.close()
        await classic.close()
        await web.close()
        await session.close()
        await service.close()
        await store.close()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if ports_file is not None:
            ports_file.unlink(missing_ok=True)
    log.info("stopped")


async def _start_admin(
    settings: ServeSettings,
    *,
    service: Service,
    store: Store,
    cluster: Cluster | None,
    metrics: Metrics,
    classic: ClassicServer,
    session: SessionServer,
    web: WebServer,
) -> tuple[AdminServer, int]:
    a = settings.admin
    path = Path(a.admin_token_file) if a.admin_token_file else settings.server.data_dir / token.TOKEN_NAME
    try:
        secret = token.load_or_create(path)
    except (OSError, ValueError) as exc:
        raise StartupError(f"admin token {path}: {exc}") from exc
    admin = AdminServer(
        service,
        store,
        metrics,
        token=secret,
        ready_timeout_s=a.ready_timeout_s,
        classic=classic,
        session=session,
        listeners={"classic": classic, "session": session, "web": web},
        cluster=cast("Listening | None", cluster),  # PostgresCluster, the one Cluster, has `listening`
        # PostgreSQL's engine (the one with a cluster): its connection and queue gauges
        engine=getattr(store, "engine", None) if cluster is not None else None,
    )
    try:
        port = await admin.start(a.admin_host, a.admin_port)
    except OSError as exc:
        raise StartupError(f"cannot listen on {a.admin_host}:{a.admin_port} (admin port): {exc}") from exc
    log.info("dmds admin port listening on %s:%d (bearer token in %s)", a.admin_host, port, path)
    return admin, port
