"""The desktop client against a real `dmds serve` on loopback: two windows talking, queued messages,
a server that stops answering, the dialogs, the remembered settings."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QDate, QSettings, QTimer
from pytestqt.qtbot import QtBot

from dmds.client.classic import MESSAGES
from dmds.gui.classic_mode import ATTACH_TOOLTIP, failure_text
from dmds.gui.conversations import Status
from dmds.gui.message_html import DELIVERED_MARK
from dmds.gui.window import MainWindow
from dmds.soap.service import SoapServer
from tests.conftest import FAST, ServerFactory, ServerProcess
from tests.gui.conftest import HOST, NO_WS, REFRESH_MS, TIMEOUT_S, WindowFactory
from tests.gui.helpers import (
    WAIT_MS,
    click,
    connect,
    contact_names,
    disconnect,
    log_lines,
    open_conversation,
    register,
    retype,
    send,
    type_text,
    wait_line,
)

pytestmark = pytest.mark.timeout(60)


def _statuses(window: MainWindow, peer: str) -> list[Status]:
    return [message.status for message in window.conversations.messages(peer)]


def _users(window: MainWindow) -> list[str]:
    return window.connected_aliases


def _wait_users(qtbot: QtBot, window: MainWindow, aliases: list[str]) -> None:
    qtbot.waitUntil(lambda: sorted(_users(window)) == aliases, timeout=WAIT_MS)


def test_two_windows_exchange_messages(
    qtbot: QtBot, server: ServerProcess, soap: SoapServer, windows: WindowFactory
) -> None:
    juan = windows(server.port, ws_url=soap.wsdl_url)
    maria = windows(server.port, ws_url=soap.wsdl_url)
    register(qtbot, juan, "juan123", "Juan Pérez")
    register(qtbot, maria, "maria123", "María López", QDate(1999, 4, 3))
    connect(qtbot, juan, "juan123")
    connect(qtbot, maria, "maria123")

    # Each sees the other in the connected list, refreshed by itself.
    for window in (juan, maria):
        _wait_users(qtbot, window, ["juan123", "maria123"])
        assert window.users_label.text() == "Connected users: 2"
    assert "Connected as juan123" in juan.connection_label.text()

    send(qtbot, juan, "maria123", "Hola    soy   Juan")
    # The receipt comes: the message is marked delivered, with the id the server gave.
    qtbot.waitUntil(lambda: _statuses(juan, "maria123") == [Status.DELIVERED], timeout=WAIT_MS)
    sent = juan.conversations.messages("maria123")[0]
    assert (sent.message_id, sent.text) == (1, "Hola soy Juan")  # normalised by the SOAP service
    assert DELIVERED_MARK in juan.conversation_text()
    assert "Hola soy Juan" in juan.conversation_text()
    assert "Normaliser: ok" in juan.normaliser_label.text()
    wait_line(qtbot, juan.server_log, "s> SEND MESSAGE 1 OK")
    assert log_lines(juan.client_log)[-1] == "c> SEND maria123 Hola    soy   Juan"
    assert "s> SEND OK - MESSAGE 1" in log_lines(juan.server_log)

    # María gets it in a conversation with Juan, with sender, id and time.
    wait_line(qtbot, maria.server_log, "s> MESSAGE 1 FROM juan123: Hola soy Juan")
    assert contact_names(maria) == ["juan123"]
    got = maria.conversations.messages("juan123")[0]
    assert (got.peer, got.message_id, got.text, got.status) == (
        "juan123",
        1,
        "Hola soy Juan",
        Status.RECEIVED,
    )
    assert "juan123 · #1 · " in maria.conversation_text()
    assert got.time.strftime("%H:%M:%S") in maria.conversation_text()

    # She answers from the conversation: choosing it fills the destination.
    open_conversation(qtbot, maria, "juan123")
    retype(qtbot, maria.message_edit, "¿qué tal?")
    click(qtbot, maria.send_button)
    qtbot.waitUntil(lambda: _statuses(maria, "juan123")[-1] is Status.DELIVERED, timeout=WAIT_MS)
    wait_line(qtbot, juan.server_log, "s> MESSAGE 1 FROM maria123: ¿qué tal?")
    qtbot.waitUntil(lambda: "¿qué tal?" in juan.conversation_text(), timeout=WAIT_MS)
    lines = juan.conversation_text().splitlines()
    assert lines.index(next(line for line in lines if "¿qué tal?" in line)) > lines.index(
        next(line for line in lines if "Hola soy Juan" in line)
    )  # newest at the bottom

    # CONNECTED USERS by hand is logged as the original did.
    click(qtbot, juan.users_button)
    wait_line(qtbot, juan.server_log, "s> CONNECTED USERS (2 users connected) OK - juan123, maria123")
    assert "c> CONNECTEDUSERS" in log_lines(juan.client_log)

    # QUIT disconnects cleanly: María sees Juan leave, and Juan's window closes.
    click(qtbot, juan.quit_button)
    qtbot.waitUntil(lambda: not juan.isVisible(), timeout=WAIT_MS)
    assert not juan.worker.alive
    qtbot.waitUntil(lambda: _users(maria) == ["maria123"], timeout=WAIT_MS)
    assert "c> DISCONNECT juan123" in log_lines(juan.client_log)


def test_queued_messages_arrive_on_reconnect(
    qtbot: QtBot, server: ServerProcess, windows: WindowFactory
) -> None:
    juan, maria = windows(server.port), windows(server.port)
    register(qtbot, juan, "juan123")
    register(qtbot, maria, "maria123")
    connect(qtbot, juan, "juan123")
    connect(qtbot, maria, "maria123")
    qtbot.waitUntil(lambda: "maria123" in _users(juan), timeout=WAIT_MS)

    disconnect(qtbot, maria)
    assert maria.connect_button.isEnabled()
    assert not maria.send_button.isEnabled()
    assert not maria.users_button.isEnabled()
    assert maria.users_list.count() == 0
    qtbot.waitUntil(lambda: _users(juan) == ["juan123"], timeout=WAIT_MS)

    send(qtbot, juan, "maria123", "uno")
    send(qtbot, juan, "maria123", "dos")
    qtbot.waitUntil(lambda: _statuses(juan, "maria123") == [Status.SENT, Status.SENT], timeout=WAIT_MS)
    assert [m.message_id for m in juan.conversations.messages("maria123")] == [1, 2]
    assert DELIVERED_MARK not in juan.conversation_text()
    assert "not delivered yet" in juan.conversation_text()
    # The normaliser is down: the text went as typed, and the window says so.
    assert "Normaliser unavailable" in juan.normaliser_label.text()
    assert any("normaliser unavailable" in line for line in log_lines(juan.client_log))

    connect(qtbot, maria, "maria123")
    qtbot.waitUntil(lambda: len(maria.conversations.messages("juan123")) == 2, timeout=WAIT_MS)
    assert [(m.message_id, m.text) for m in maria.conversations.messages("juan123")] == [
        (1, "uno"),
        (2, "dos"),
    ]
    qtbot.waitUntil(
        lambda: _statuses(juan, "maria123") == [Status.DELIVERED, Status.DELIVERED], timeout=WAIT_MS
    )
    assert juan.conversation_text().count(DELIVERED_MARK) == 2


def test_server_going_away_is_reported_and_the_window_stays_responsive(
    qtbot: QtBot, server_factory: ServerFactory, windows: WindowFactory
) -> None:
    server = server_factory(*FAST)
    port = server.port
    juan = windows(port)
    register(qtbot, juan, "maria123")
    register(qtbot, juan, "juan123")
    connect(qtbot, juan, "juan123")

    # A server that hangs: the request waits for its timeout in the worker, never in the window.
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    ticks: list[float] = []
    heartbeat = QTimer()
    heartbeat.timeout.connect(lambda: ticks.append(time.monotonic()))
    heartbeat.start(20)
    started = time.monotonic()
    send(qtbot, juan, "maria123", "hola")
    assert time.monotonic() - started < 0.5
    assert "sending…" in juan.conversation_text()
    qtbot.waitUntil(
        lambda: _statuses(juan, "maria123") == [Status.FAILED], timeout=int(TIMEOUT_S * 1000) + 3000
    )
    heartbeat.stop()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 20, "the GUI thread was blocked"
    assert max(gaps) < 0.5, "the GUI thread was blocked"
    failed = juan.conversations.messages("maria123")[0]
    assert f"no reply from {HOST}:{port} within {TIMEOUT_S:g} s" in failed.error
    assert "not sent" in juan.conversation_text()
    # Clear words on screen, and the buttons that make no sense now are disabled.
    qtbot.waitUntil(lambda: not juan.reachable, timeout=WAIT_MS)
    assert "The server does not answer" in juan.notice.text()
    assert juan.notice.isVisible()
    assert "does not answer" in juan.connection_label.text()
    retype(qtbot, juan.message_edit, "otra")
    assert not juan.send_button.isEnabled()
    assert not juan.users_button.isEnabled()
    assert juan.disconnect_button.isEnabled()

    # The server is gone for good: DISCONNECT still ends the session here, at once.
    server.kill()
    click(qtbot, juan.disconnect_button)
    qtbot.waitUntil(lambda: juan.alias is None, timeout=WAIT_MS)
    assert "could not be told" in juan.notice.text()
    assert juan.connect_button.isEnabled()
    assert not juan.disconnect_button.isEnabled()
    assert "Not connected" in juan.connection_label.text()

    # The server comes back (presence is not kept over a restart): CONNECT works again, and when
    # it restarts while we are connected, the refresh notices that we were dropped.
    server = server_factory(*FAST, "--port", str(port))
    connect(qtbot, juan, "juan123")
    qtbot.waitUntil(lambda: juan.reachable and not juan.notice.isVisible(), timeout=WAIT_MS)
    server.stop()
    server = server_factory(*FAST, "--port", str(port))
    qtbot.waitUntil(lambda: juan.alias is None, timeout=WAIT_MS)
    assert "no longer counts you as connected" in juan.notice.text()
    assert juan.connect_button.isEnabled()
    connect(qtbot, juan, "juan123")


def test_register_dialog_validates(qtbot: QtBot, server: ServerProcess, windows: WindowFactory) -> None:
    window = windows(server.port)
    dialog = window.open_register_dialog()
    qtbot.waitUntil(dialog.isVisible)
    assert dialog.birth_date.calendarPopup()
    assert not dialog.ok_button.isEnabled()  # nothing typed yet
    assert "the full name is empty" in dialog.error_label.text()

    type_text(qtbot, dialog.full_name, "Ana Gómez")
    type_text(qtbot, dialog.alias, "ana 1")
    assert not dialog.ok_button.isEnabled()
    assert "the alias cannot contain spaces" in dialog.error_label.text()
    retype(qtbot, dialog.alias, "ana1")
    assert dialog.ok_button.isEnabled()
    assert dialog.error_label.text() == ""

    # The future cannot be picked: the date picker stops at today.
    today = QDate.currentDate()
    dialog.birth_date.setDate(today.addDays(1))
    assert dialog.birth_date.date() == today
    assert dialog.birth_date.maximumDate() == today
    dialog.birth_date.setDate(QDate(1987, 6, 5))
    assert dialog.values() == ("Ana Gómez", "ana1", "05/06/1987")
    click(qtbot, dialog.ok_button)
    wait_line(qtbot, window.server_log, "s> REGISTER OK")

    # The same alias again: the reason in words, not a number.
    register(qtbot, window, "ana1", expect="REGISTER FAIL: alias already taken")
    assert window.notice.text() == "REGISTER ana1 failed: alias already taken"

    # A dialog with a fixed "today": a date after it is reported, not sent.
    fixed = type(dialog)(window, today=QDate(2020, 1, 1))
    qtbot.addWidget(fixed)
    assert fixed.birth_date.maximumDate() == QDate(2020, 1, 1)


def test_errors_in_words_and_buttons_that_make_sense(
    qtbot: QtBot, server: ServerProcess, windows: WindowFactory
) -> None:
    window = windows(server.port)
    # Disconnected: only what makes sense is enabled.
    assert window.connect_button.isEnabled()
    assert window.register_button.isEnabled()
    assert not window.disconnect_button.isEnabled()
    assert not window.users_button.isEnabled()
    retype(qtbot, window.dest_edit, "x")
    retype(qtbot, window.message_edit, "hola")
    assert not window.send_button.isEnabled()
    for widget in (window.sendattach_button, window.browse_button, window.attach_edit):
        assert widget.isVisible()
        assert not widget.isEnabled()
        assert "session protocol" in widget.toolTip()
        assert widget.toolTip() == ATTACH_TOOLTIP

    click(qtbot, window.connect_button)
    dialog = window.alias_dialog
    assert dialog is not None
    retype(qtbot, dialog.alias, "no body")
    assert not dialog.ok_button.isEnabled()
    retype(qtbot, dialog.alias, "nobody")
    click(qtbot, dialog.ok_button)
    wait_line(qtbot, window.server_log, "s> CONNECT FAIL: no such user")
    assert window.notice.text() == "CONNECT nobody failed: no such user — REGISTER it first"
    assert window.alias is None
    assert window.connect_button.isEnabled()

    register(qtbot, window, "pepe")
    connect(qtbot, window, "pepe")
    assert not window.connect_button.isEnabled()
    assert window.disconnect_button.isEnabled()
    assert not window.settings_button.isEnabled()
    send(qtbot, window, "ghost", "hola")
    qtbot.waitUntil(lambda: _statuses(window, "ghost") == [Status.FAILED], timeout=WAIT_MS)
    assert "sender or recipient does not exist" in window.conversation_text()
    assert window.notice.text().startswith("Message to ghost not sent: sender or recipient does not exist")

    # A second window cannot connect as pepe too, and is offered to take the session over.
    other = windows(server.port)
    connect_attempt(qtbot, other, "pepe")
    wait_line(qtbot, other.server_log, "s> CONNECT FAIL: user already connected")
    box = other.takeover_box
    assert box is not None
    qtbot.waitUntil(box.isVisible)
    box.accept()
    qtbot.waitUntil(lambda: other.alias == "pepe", timeout=WAIT_MS)
    assert log_lines(other.client_log)[-2:] == ["c> DISCONNECT pepe", "c> CONNECT pepe"]

    # UNREGISTER of the connected user ends the connection.
    click(qtbot, other.unregister_button)
    unregister = other.alias_dialog
    assert unregister is not None
    assert unregister.value() == "pepe"
    click(qtbot, unregister.ok_button)
    qtbot.waitUntil(lambda: other.alias is None, timeout=WAIT_MS)
    assert "s> UNREGISTER OK" in log_lines(other.server_log)

    # The first window, still connected as pepe in its own eyes, is told once, not at every refresh.
    qtbot.waitUntil(lambda: "cannot be listed" in window.notice.text(), timeout=WAIT_MS)
    assert "request refused (no such user, or server error)" in window.notice.text()
    qtbot.wait(4 * REFRESH_MS)  # a few more refreshes, failing the same way
    assert sum("CONNECTED USERS FAIL" in line for line in log_lines(window.server_log)) == 1


def connect_attempt(qtbot: QtBot, window: MainWindow, alias: str) -> None:
    click(qtbot, window.connect_button)
    dialog = window.alias_dialog
    assert dialog is not None
    retype(qtbot, dialog.alias, alias)
    click(qtbot, dialog.ok_button)


@pytest.mark.parametrize(("operation", "code"), sorted(k for k in MESSAGES if k[1] != 0))
def test_every_failure_code_has_words(operation: str, code: int) -> None:
    text = failure_text(operation, code)
    assert text.startswith(MESSAGES[(operation, code)])
    assert str(code) not in text.split()


def test_settings_are_remembered(
    qtbot: QtBot, server: ServerProcess, windows: WindowFactory, tmp_path: Path
) -> None:
    path = tmp_path / "remembered.ini"
    first = windows(server.port, settings_file=path)
    register(qtbot, first, "lola")
    connect(qtbot, first, "lola")
    disconnect(qtbot, first)

    dialog = first.open_settings_dialog()
    qtbot.waitUntil(dialog.isVisible)
    retype(qtbot, dialog.ws_url, "ftp://nope")
    assert not dialog.ok_button.isEnabled()  # the normaliser URL must be http(s)
    retype(qtbot, dialog.ws_url, "http://127.0.0.1:5999/?wsdl")
    retype(qtbot, dialog.server, "localhost")
    dialog.port.setValue(7123)
    click(qtbot, dialog.ok_button)
    qtbot.waitUntil(lambda: "localhost:7123" in first.connection_label.text())
    first.shutdown()

    # A new window with no flags: everything as it was left.
    stored = QSettings(str(path), QSettings.Format.IniFormat)
    assert stored.value("server/host") == "localhost"
    second = MainWindow(stored, listen_host=HOST, timeout_s=TIMEOUT_S)
    qtbot.addWidget(second)
    try:
        assert (second.settings.server, second.settings.port) == ("localhost", 7123)
        assert second.settings.ws_url == "http://127.0.0.1:5999/?wsdl"
        assert second.open_connect_dialog().value() == "lola"
        shown = second.open_settings_dialog()
        assert shown.values() == ("localhost", 7123, "http://127.0.0.1:5999/?wsdl")
    finally:
        second.shutdown()


def test_flags_win_over_remembered_settings(qtbot: QtBot, windows: WindowFactory, tmp_path: Path) -> None:
    path = tmp_path / "flags.ini"
    QSettings(str(path), QSettings.Format.IniFormat).setValue("server/host", "example.invalid")
    window = windows(7001, settings_file=path, server=None, ws_url=NO_WS)
    assert (window.settings.server, window.settings.port) == ("example.invalid", 7001)
