"""Start and stop a whole server process: store, core, front-ends, in that order and back."""

from __future__ import annotations

import asyncio
import logging
import signal

from dmds.core.service import Service
from dmds.settings import ServeSettings
from dmds.stores.sqlite import SqliteStore
from dmds.stores.sqlite.store import DB_NAME
from dmds.transports.classic_server import ClassicServer

log = logging.getLogger(__name__)


async def serve(settings: ServeSettings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set), then close everything cleanly."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = await SqliteStore.open(settings.server.data_dir, settings.store)
    service = Service(store, settings.delivery)
    classic = ClassicServer(service, settings.classic, settings.delivery)
    try:
        port = await classic.start(settings.server.host, settings.server.port)
        log.info(
            "dmds classic server listening on %s:%d (store %s, sync=%s)",
            settings.server.host,
            port,
            settings.server.data_dir / DB_NAME,
            settings.store.sync.value,
        )
        await stop.wait()
        log.info("stopping")
    finally:
        await classic.close()
        await service.close()
        await store.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("stopped")
