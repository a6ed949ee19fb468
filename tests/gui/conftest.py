"""Fixtures of the desktop-client tests: Qt offscreen, settings in tmp_path, windows on a real server."""

from __future__ import annotations

import os

# Before anything creates the QApplication: no display is needed (or used) by the tests.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest
from PySide6.QtCore import QSettings
from pytestqt.qtbot import QtBot

from dmds.gui.settings import Mode
from dmds.gui.window import MainWindow

HOST = "127.0.0.1"
NO_WS = "http://127.0.0.1:1/?wsdl"  # nothing listens on port 1: the normaliser is unavailable
#: Short request timeout and refresh interval, so that failures and list changes show quickly.
TIMEOUT_S = 2.0
REFRESH_MS = 300


@pytest.fixture(autouse=True)
def _isolated_qsettings(tmp_path: Path) -> None:
    """Whatever opens the default QSettings writes under tmp_path, never in the home directory."""
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp_path / "user-settings"))
        QSettings.setPath(fmt, QSettings.Scope.SystemScope, str(tmp_path / "system-settings"))


class WindowFactory(Protocol):
    def __call__(
        self,
        port: int,
        *,
        ws_url: str = ...,
        settings_file: Path | None = ...,
        server: str | None = ...,
        session: bool = ...,
    ) -> MainWindow: ...


@pytest.fixture
def windows(qtbot: QtBot, tmp_path: Path) -> Iterator[WindowFactory]:
    """Makes shown MainWindows, each with its own settings file unless given one; shuts them down after.

    `port` is the port of the protocol: the classic one, or with `session` the session one.
    """
    made: list[MainWindow] = []

    def make(
        port: int,
        *,
        ws_url: str = NO_WS,
        settings_file: Path | None = None,
        server: str | None = HOST,
        session: bool = False,
    ) -> MainWindow:
        path = settings_file or tmp_path / f"window{len(made)}.ini"
        window = MainWindow(
            QSettings(str(path), QSettings.Format.IniFormat),
            server=server,
            port=port,
            ws_url=ws_url,
            listen_host=HOST,
            timeout_s=TIMEOUT_S,
            refresh_ms=REFRESH_MS,
            mode=Mode.SESSION if session else None,
        )
        qtbot.addWidget(window)
        window.show()
        made.append(window)
        return window

    yield make
    for window in made:
        window.shutdown()
