"""`dmds gui`: its flags reach the window, and the settings it remembers go to the user's QSettings."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from dmds.cli.main import main
from dmds.gui.settings import GuiSettings, open_settings
from dmds.gui.window import MainWindow


def test_gui_subcommand_opens_the_window_with_the_flags(
    qtbot: QtBot, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int, str]] = []

    def fake_exec() -> int:  # instead of running the event loop until the window closes
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        assert len(windows) == 1
        window = windows[0]
        seen.append((window.settings.server, window.settings.port, window.connection_label.text()))
        window.shutdown()
        return 0

    monkeypatch.setattr(QApplication, "exec", staticmethod(fake_exec))
    argv = [
        "gui",
        "-s",
        "10.1.2.3",
        "-p",
        "7010",
        "--ws",
        "http://127.0.0.1:5999/?wsdl",
        "--listen-host",
        "127.0.0.1",
    ]
    assert main(argv) == 0
    server, port, status = seen[0]
    assert (server, port) == ("10.1.2.3", 7010)
    assert "10.1.2.3:7010" in status
    # Remembered in the user's settings (under tmp_path in the tests: see conftest).
    remembered = GuiSettings.load(open_settings())
    assert (remembered.server, remembered.port, remembered.ws_url) == (
        "10.1.2.3",
        7010,
        "http://127.0.0.1:5999/?wsdl",
    )


def test_gui_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dmds.cli.main", "gui", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--server", "--port", "--ws", "--session", "--classic"):
        assert flag in out
