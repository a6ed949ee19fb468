"""Changing, from the window's Settings dialog, where and how the window connects: the server,
the port of each protocol, the normaliser's URL and the protocol itself. Allowed only while not
connected; a new protocol gets the window a new mode, with a new worker.

Functions of the window rather than an object it holds, so that nothing but the window holds the
window (see `dmds.gui.mode` for why).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmds.gui.dialogs import SettingsDialog
from dmds.gui.mode import shown
from dmds.gui.settings import Mode

if TYPE_CHECKING:
    from dmds.gui.window import MainWindow

__all__ = ["apply_settings", "open_settings_dialog"]


def open_settings_dialog(window: MainWindow) -> SettingsDialog:
    """The Settings dialog, showing `window`'s settings; accepting it applies them."""
    settings = window.settings
    dialog = SettingsDialog(
        settings.server,
        settings.port,
        settings.ws_url,
        window,
        mode=settings.mode,
        session_port=settings.session_port,
    )
    dialog.accepted.connect(
        lambda: apply_settings(
            window, *dialog.values(), mode=dialog.mode(), session_port=dialog.session_port_value()
        )
    )
    window.settings_dialog = dialog
    return shown(dialog)


def apply_settings(
    window: MainWindow,
    server: str,
    port: int,
    ws_url: str,
    *,
    mode: Mode | None = None,
    session_port: int | None = None,
) -> None:
    """Make `window` use (and remember) another server, classic port, normaliser URL and (if
    given) protocol and session port; only while not connected."""
    if window.alias is not None:
        window.show_notice("Settings can be changed only while not connected.")
        return
    settings = window.settings
    previous = settings.mode
    settings.server, settings.port, settings.ws_url = server, port, ws_url
    if mode is not None:
        settings.mode = mode
    if session_port is not None:
        settings.session_port = session_port
    window.save_settings()
    if settings.mode is previous:
        window.worker.configure(server, settings.active_port, ws_url)
    else:
        window.replace_mode()
    window.status_line.normaliser_unknown()
    protocol = f"{settings.mode.value} protocol, " if mode is not None else ""
    window.say(f"Settings saved: {protocol}server {window.server_text}, normaliser {ws_url}")
    window.update_status()
