"""`dmds gui`: start Qt, open the main window (classic or session protocol), run until it is closed."""

from __future__ import annotations

import signal
import sys

import shiboken6
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from dmds.gui.settings import APPLICATION, ORGANISATION, Mode, open_settings
from dmds.gui.window import MainWindow

__all__ = ["run_gui"]


def run_gui(
    server: str | None = None,
    port: int | None = None,
    ws_url: str | None = None,
    *,
    listen_host: str = "0.0.0.0",
    mode: str | None = None,
) -> int:
    """Open the desktop client; None means "the remembered value" (or the default the first time).

    `mode` is "classic" or "session"; `port` is the port of that protocol.
    """
    app = QApplication.instance() or QApplication(sys.argv[:1])
    QApplication.setOrganizationName(ORGANISATION)
    QApplication.setApplicationName(APPLICATION)
    window = MainWindow(
        open_settings(),
        server=server,
        port=port,
        ws_url=ws_url,
        listen_host=listen_host,
        mode=Mode(mode) if mode is not None else None,
    )
    window.show()
    # Ctrl-C in the terminal closes the window (with its clean DISCONNECT). Python runs signal
    # handlers only between bytecodes, so a timer lets it look while Qt's loop waits.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: window.close())
    wake = QTimer()
    wake.timeout.connect(lambda: None)
    wake.start(200)
    try:
        return app.exec()
    finally:
        wake.stop()
        signal.signal(signal.SIGINT, previous)
        # Delete the window while the QApplication still exists: left to the interpreter's exit, it
        # may be destroyed after the application, which crashes.
        shiboken6.delete(window)
