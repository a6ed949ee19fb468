"""What the desktop client remembers between runs (QSettings): the protocol (classic or session),
server, the port of each protocol, normaliser URL, last alias. Never a password.

`open_settings` returns the application's QSettings (``~/.config/dmds/dmds-gui.conf`` on Linux);
tests hand the window a QSettings of their own, in a temporary directory.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from PySide6.QtCore import QSettings

from dmds.soap.normaliser import DEFAULT_WSDL_URL

__all__ = ["APPLICATION", "ORGANISATION", "GuiSettings", "Mode", "open_settings"]

ORGANISATION: Final = "dmds"
APPLICATION: Final = "dmds-gui"
DEFAULT_SERVER: Final = "127.0.0.1"
DEFAULT_PORT: Final = 7000
DEFAULT_SESSION_PORT: Final = 7001


class Mode(enum.StrEnum):
    """Which protocol the window speaks."""

    CLASSIC = "classic"  # the original protocol: CONNECT, a push listener, no passwords
    SESSION = "session"  # one connection, passwords, receipts, presence, attachments


def _port(store: QSettings, key: str, default: int) -> int:
    try:
        port = int(str(store.value(key, default)))
    except ValueError:
        return default
    return port if 0 < port < 65536 else default


@dataclass
class GuiSettings:
    server: str = DEFAULT_SERVER
    #: the classic protocol's port
    port: int = DEFAULT_PORT
    ws_url: str = DEFAULT_WSDL_URL
    last_alias: str = ""
    mode: Mode = Mode.CLASSIC
    session_port: int = DEFAULT_SESSION_PORT

    @property
    def active_port(self) -> int:
        """The port of the protocol in use."""
        return self.session_port if self.mode is Mode.SESSION else self.port

    def override(
        self,
        *,
        mode: Mode | None = None,
        server: str | None = None,
        port: int | None = None,
        ws_url: str | None = None,
    ) -> None:
        """Flags given on the command line win over (and replace) what was remembered; `port` is
        the port of the protocol in use (`mode`, or the remembered one)."""
        if mode is not None:
            self.mode = mode
        if server is not None:
            self.server = server
        if port is not None and self.mode is Mode.SESSION:
            self.session_port = port
        elif port is not None:
            self.port = port
        if ws_url is not None:
            self.ws_url = ws_url

    @classmethod
    def load(cls, store: QSettings) -> GuiSettings:
        """The remembered settings; defaults for what is missing or unreadable."""
        defaults = cls()
        try:
            mode = Mode(str(store.value("server/mode", defaults.mode.value)))
        except ValueError:
            mode = defaults.mode
        return cls(
            server=str(store.value("server/host", defaults.server)) or defaults.server,
            port=_port(store, "server/port", defaults.port),
            ws_url=str(store.value("normaliser/url", defaults.ws_url)) or defaults.ws_url,
            last_alias=str(store.value("user/last_alias", "")),
            mode=mode,
            session_port=_port(store, "server/session_port", defaults.session_port),
        )

    def save(self, store: QSettings) -> None:
        store.setValue("server/host", self.server)
        store.setValue("server/port", self.port)
        store.setValue("server/mode", self.mode.value)
        store.setValue("server/session_port", self.session_port)
        store.setValue("normaliser/url", self.ws_url)
        store.setValue("user/last_alias", self.last_alias)
        store.sync()


def open_settings() -> QSettings:
    """The application's settings store (native format, per user)."""
    return QSettings(ORGANISATION, APPLICATION)
