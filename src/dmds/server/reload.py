"""SIGHUP: read the settings again and apply those that are safe to change while serving.

Live: the log level, the send rate limit, and the TLS certificate and key (read again from their
files even when their paths did not change: a renewal, e.g. certbot's, replaces the files in place).
Every other setting that changed is named in the log and waits for the next restart. Settings come
from the same sources as at start (flags > environment > the config file), so a setting given as a
flag cannot be changed by the file.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Callable
from typing import Any

from dmds.core.service import Service
from dmds.settings import ServeSettings

log = logging.getLogger(__name__)

#: (concern, setting) pairs a reload applies.
LIVE = frozenset(
    {
        ("server", "log_level"),
        ("delivery", "max_send_rate"),
        ("delivery", "send_burst"),
        ("session", "tls_cert"),
        ("session", "tls_key"),
    }
)


def changes(old: ServeSettings, new: ServeSettings) -> list[tuple[str, str]]:
    """Every (concern, setting) whose value differs."""
    found = []
    for concern in dataclasses.fields(old):
        before, after = getattr(old, concern.name), getattr(new, concern.name)
        for item in dataclasses.fields(before):
            if getattr(before, item.name) != getattr(after, item.name):
                found.append((concern.name, item.name))
    return found


def reload_certificate(context: ssl.SSLContext, cert: str, key: str) -> None:
    """Load `cert` and `key` into a context that is serving: new handshakes present them, the
    connections open keep theirs. Checked on a scratch context first, so that a bad file (or a
    key that does not match) leaves the served certificate as it was. Raises OSError, ssl.SSLError."""
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    context.load_cert_chain(cert, key)


class Reloader:
    """Applies a new reading of the settings to a running server (`reload`, on SIGHUP)."""

    def __init__(
        self,
        load: Callable[[], ServeSettings],
        current: ServeSettings,
        service: Service,
        tls_contexts: Callable[[], list[ssl.SSLContext]],
    ) -> None:
        self._load = load
        self.current = current
        self._service = service
        self._tls_contexts = tls_contexts

    def reload(self) -> None:
        try:
            new = self._load()
        except ValueError as exc:
            log.error("SIGHUP: settings not reloaded, they are not valid: %s", exc)
            return
        found = changes(self.current, new)
        waiting = [f"{c}.{s}" for c, s in found if (c, s) not in LIVE]
        if waiting:
            log.warning("SIGHUP: changed, taking effect at the next restart: %s", ", ".join(waiting))
        applied = self._apply(new, {pair for pair in found if pair in LIVE})
        log.info("SIGHUP: settings reloaded%s", f" ({', '.join(applied)})" if applied else "")

    def _apply(self, new: ServeSettings, live: set[tuple[str, str]]) -> list[str]:
        applied: list[str] = []
        server, delivery, session = self.current.server, self.current.delivery, self.current.session
        if ("server", "log_level") in live:
            logging.getLogger().setLevel(new.server.log_level.upper())
            server = dataclasses.replace(server, log_level=new.server.log_level)
            applied.append(f"log_level {new.server.log_level}")
        if live & {("delivery", "max_send_rate"), ("delivery", "send_burst")}:
            rate, burst = new.delivery.max_send_rate, new.delivery.send_burst
            self._service.set_send_rate(rate, burst)
            delivery = dataclasses.replace(delivery, max_send_rate=rate, send_burst=burst)
            applied.append(f"max_send_rate {rate:g}, send_burst {burst}")
        if session.tls_cert and new.session.tls_cert and new.session.tls_key:
            try:
                for context in self._tls_contexts():
                    reload_certificate(context, new.session.tls_cert, new.session.tls_key)
            except (OSError, ssl.SSLError) as exc:
                log.error("SIGHUP: TLS certificate not reloaded (the old one is served): %s", exc)
            else:
                session = dataclasses.replace(
                    session, tls_cert=new.session.tls_cert, tls_key=new.session.tls_key
                )
                applied.append("TLS certificate")
        elif live & {("session", "tls_cert"), ("session", "tls_key")}:
            log.warning("SIGHUP: TLS cannot be turned on or off while serving; restart for it")
        changed: dict[str, Any] = {"server": server, "delivery": delivery, "session": session}
        self.current = dataclasses.replace(self.current, **changed)
        return applied
