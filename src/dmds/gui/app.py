"""`dmds gui`: start Qt, open the main window, run until it is closed."""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QApplication

from dmds.gui.settings import APPLICATION, ORGANISATION, open_settings
from dmds.gui.window import MainWindow

__all__ = ["run_gui"]


def run_gui(
    server: str | None = None,
    port: int | None = None,
    ws_url: str | None = None,
    *,
    listen_host: str = "0.0.0.0",
) -> int:
    """Open the desktop client; None means "the remembered value" (or the default the first time)."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    QApplication.setOrganizationName(ORGANISATION)
    QApplication.setApplicationName(APPLICATION)
    window = MainWindow(open_settings(), server=server, port=port, ws_url=ws_url, listen_host=listen_host)
    window.show()
    return app.exec()
