"""What the desktop client remembers between runs (QSettings): server, port, normaliser URL, last alias.

`open_settings` returns the application's QSettings (``~/.config/dmds/dmds-gui.conf`` on Linux);
tests hand the window a QSettings of their own, in a temporary directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from PySide6.QtCore import QSettings

from dmds.soap.normaliser import DEFAULT_WSDL_URL

__all__ = ["APPLICATION", "ORGANISATION", "GuiSettings", "open_settings"]

ORGANISATION: Final = "dmds"
APPLICATION: Final = "dmds-gui"
DEFAULT_SERVER: Final = "127.0.0.1"
DEFAULT_PORT: Final = 7000


@dataclass
class GuiSettings:
    server: str = DEFAULT_SERVER
    port: int = DEFAULT_PORT
    ws_url: str = DEFAULT_WSDL_URL
    last_alias: str = ""

    @classmethod
    def load(cls, store: QSettings) -> GuiSettings:
        """The remembered settings; defaults for what is missing or unreadable."""
        defaults = cls()
        try:
            port = int(str(store.value("server/port", defaults.port)))
        except ValueError:
            port = defaults.port
        if not 0 < port < 65536:
            port = defaults.port
        return cls(
            server=str(store.value("server/host", defaults.server)) or defaults.server,
            port=port,
            ws_url=str(store.value("normaliser/url", defaults.ws_url)) or defaults.ws_url,
            last_alias=str(store.value("user/last_alias", "")),
        )

    def save(self, store: QSettings) -> None:
        store.setValue("server/host", self.server)
        store.setValue("server/port", self.port)
        store.setValue("normaliser/url", self.ws_url)
        store.setValue("user/last_alias", self.last_alias)
        store.sync()


def open_settings() -> QSettings:
    """The application's settings store (native format, per user)."""
    return QSettings(ORGANISATION, APPLICATION)
