"""Run the admin port inside `dmds serve`: uvicorn on the server's event loop, the loop-lag probe,
and the gauges that are read at scrape time (connections, what waits in the store, the drain
backlog, PostgreSQL's connections)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterable, Iterator
from typing import Any

import uvicorn

from dmds.admin.app import Admin, Listener, Listening, build_app
from dmds.core.model import StoreSummary
from dmds.core.ports import Store
from dmds.core.service import Service
from dmds.metrics import Metrics
from dmds.transports.classic_server import ClassicServer
from dmds.transports.session_server import SessionServer

log = logging.getLogger(__name__)

#: Admin requests served at once; more get 503 at once (a scraper and an operator need a few).
MAX_ADMIN_REQUESTS = 32
#: Seconds an idle keep-alive connection to the admin port stays open (Prometheus reuses it).
ADMIN_KEEPALIVE_S = 30

#: Seconds between two measurements of the event loop's lag: a sleep of this long that wakes up
#: late says by how much the loop was busy. Twice a second costs nothing measurable.
LAG_PERIOD_S = 0.5

Samples = Iterable[tuple[tuple[str, ...], float]]


class _EmbeddedServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # `dmds serve` owns the signals


class AdminServer:
    """The admin HTTP server of one process."""

    def __init__(
        self,
        service: Service,
        store: Store,
        metrics: Metrics,
        *,
        token: str,
        ready_timeout_s: float,
        classic: ClassicServer,
        session: SessionServer,
        listeners: dict[str, Listener],
        cluster: Listening | None = None,
        engine: Any = None,
    ) -> None:
        self._service, self._store, self._metrics = service, store, metrics
        self._session, self._classic = session, classic
        self._cluster, self._engine = cluster, engine
        self._summary: StoreSummary | None = None
        self._add_gauges()
        self.admin = Admin(
            service,
            store,
            metrics,
            metrics.registry(),
            token,
            ready_timeout_s,
            listeners=listeners,
            cluster=cluster,
            before_scrape=self._refresh,
        )
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._lag: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        sock = socket.create_server((host, port), reuse_port=False)
        bound = int(sock.getsockname()[1])
        config = uvicorn.Config(
            build_app(self.admin),
            lifespan="off",
            log_level="warning",
            access_log=False,
            limit_concurrency=MAX_ADMIN_REQUESTS,
            timeout_keep_alive=ADMIN_KEEPALIVE_S,
        )
        self._server = _EmbeddedServer(config)
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started and not self._task.done():  # noqa: ASYNC110 - uvicorn has a flag only
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()
        self._lag = loop.create_task(self._measure_lag())
        return bound

    async def close(self) -> None:
        if self._lag is not None:
            self._lag.cancel()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)

    async def _measure_lag(self) -> None:
        loop = asyncio.get_running_loop()
        metrics = self._metrics
        while True:
            due = loop.time() + LAG_PERIOD_S
            await asyncio.sleep(LAG_PERIOD_S)
            lag = max(0.0, loop.time() - due)
            metrics.loop_lag.observe(lag)
            metrics.loop_lag_last_s = lag

    async def _refresh(self) -> None:
        """Read the store's counts for this scrape (one pass over users: cheap at a scrape every
        few seconds); a store that does not answer in time leaves them out, dmds_store_up 0."""
        try:
            self._summary = await asyncio.wait_for(self._store.summary(), self.admin.ready_timeout_s)
        except Exception as exc:  # noqa: BLE001 - a failed store is what the gauge reports
            log.info("metrics: the store did not answer its summary (%s)", exc)
            self._summary = None

    # -- gauges read at scrape time ---------------------------------------------------------------------

    def _add_gauges(self) -> None:
        gauges = self._metrics.gauges
        gauges += [
            ("dmds_connections", "Open client connections, by protocol and transport.",
             ("protocol", "transport"), self._connections),
            ("dmds_users_online", "Users online (on every node of a cluster).", (),
             lambda: [((), self._service.online())]),
            ("dmds_drain_backlog_items", "Items queued in this node's couriers, not pushed yet.", (),
             lambda: [((), self._service.drain_backlog())]),
            ("dmds_store_up", "1 if the store answered the latest scrape's summary, else 0.", (),
             lambda: [((), float(self._summary is not None))]),
            ("dmds_users_registered", "Registered users.", (), lambda: self._stored("users")),
            ("dmds_stored_messages", "Messages stored and not delivered yet.", (),
             lambda: self._stored("stored_messages")),
            ("dmds_stored_bytes", "Bytes of the messages waiting (text and attachments).", (),
             lambda: self._stored("stored_bytes")),
            ("dmds_oldest_undelivered_age_seconds", "Age of the oldest undelivered message (0: none).", (),
             self._oldest),
            ("dmds_store_size_bytes", "Bytes the store takes on disk.", (),
             lambda: self._stored("size_bytes")),
        ]  # fmt: skip
        if self._engine is not None:
            engine, cluster = self._engine, self._cluster
            gauges += [
                ("dmds_pg_connections", "PostgreSQL connections open, by role (writer, listen).", ("role",),
                 lambda: [(("writer",), float(engine.connected)),
                          (("listen",), float(cluster is not None and cluster.listening))]),
                ("dmds_pg_queued_jobs", "Store calls waiting for the writing connection's next batch.", (),
                 lambda: [((), float(engine.queued))]),
                ("dmds_pg_commits_in_doubt", "Batches whose COMMIT broke, waiting for its outcome.", (),
                 lambda: [((), float(engine.in_doubt))]),
            ]  # fmt: skip

    def _connections(self) -> Samples:
        tls = bool(self._session.settings.tls_cert)
        framed = sum(1 for conn in self._session.connections if conn.codec.framed)
        websocket = len(self._session.connections) - framed
        return [
            (("classic", "tcp"), float(self._classic.active)),
            (("session", "tls" if tls else "tcp"), float(framed)),
            (("session", "wss" if tls else "ws"), float(websocket)),
        ]

    def _stored(self, name: str) -> Samples:
        if self._summary is None:
            return []
        return [((), float(getattr(self._summary, name)))]

    def _oldest(self) -> Samples:
        if self._summary is None:
            return []
        oldest = self._summary.oldest_undelivered
        return [((), 0.0 if oldest is None else max(0.0, time.time() - oldest))]
