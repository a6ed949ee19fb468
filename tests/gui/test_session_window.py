"""The desktop client in session mode against a real `dmds serve` on loopback: passwords, presence
pushed by the server, delivered and read receipts, attachments, a session window talking to a
classic one, refusals in words, reconnection after a server restart, and choosing the mode."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from dmds.cli.main import main
from dmds.client.session import ERROR_TEXT
from dmds.gui.classic_mode import ATTACH_TOOLTIP
from dmds.gui.classic_worker import ClassicWorker
from dmds.gui.conversations import Status
from dmds.gui.dialogs import LoginDialog
from dmds.gui.message_html import DELIVERED_MARK, READ_MARK
from dmds.gui.session_mode import session_failure_text
from dmds.gui.session_worker import SessionWorker
from dmds.gui.settings import GuiSettings, Mode, open_settings
from dmds.gui.window import MainWindow
from dmds.protocols.session.codes import ErrorCode
from dmds.soap.service import SoapServer
from tests.conftest import FAST, ServerFactory, ServerProcess
from tests.gui.conftest import TIMEOUT_S, WindowFactory
from tests.gui.helpers import (
    PASSWORD,
    WAIT_MS,
    click,
    click_link,
    connect,
    contact_names,
    log_in,
    log_in_attempt,
    log_lines,
    log_out,
    open_conversation,
    register,
    register_with_password,
    retype,
    send,
    type_text,
    wait_line,
)

pytestmark = pytest.mark.timeout(60)


def _statuses(window: MainWindow, peer: str) -> list[Status]:
    return [message.status for message in window.conversations.messages(peer)]


def _wait_users(qtbot: QtBot, window: MainWindow, aliases: list[str]) -> None:
    qtbot.waitUntil(lambda: sorted(window.connected_aliases) == aliases, timeout=WAIT_MS)


def _session_pair(
    qtbot: QtBot, server: ServerProcess, windows: WindowFactory
) -> tuple[MainWindow, MainWindow]:
    juan = windows(server.session_port, session=True)
    maria = windows(server.session_port, session=True)
    register_with_password(qtbot, juan, "juan123", "Juan Pérez")
    register_with_password(qtbot, maria, "maria123", "María López")
    log_in(qtbot, juan, "juan123")
    log_in(qtbot, maria, "maria123")
    return juan, maria


def test_two_session_windows_exchange_messages_delivered_then_read(
    qtbot: QtBot, server: ServerProcess, soap: SoapServer, windows: WindowFactory
) -> None:
    juan = windows(server.session_port, session=True, ws_url=soap.wsdl_url)
    maria = windows(server.session_port, session=True, ws_url=soap.wsdl_url)
    assert isinstance(juan.worker, SessionWorker)
    assert (juan.connect_button.text(), juan.disconnect_button.text()) == ("LOG IN", "LOG OUT")
    assert "Not logged in" in juan.connection_label.text()
    assert f"127.0.0.1:{server.session_port}" in juan.connection_label.text()
    register_with_password(qtbot, juan, "juan123", "Juan Pérez")
    register_with_password(qtbot, maria, "maria123", "María López")
    log_in(qtbot, juan, "juan123")
    log_in(qtbot, maria, "maria123")
    assert "Logged in as juan123 · connected" in juan.connection_label.text()
    assert juan.disconnect_button.isEnabled()
    assert not juan.connect_button.isEnabled()

    # Presence comes from the server as it changes: nothing is polled.
    for window in (juan, maria):
        _wait_users(qtbot, window, ["juan123", "maria123"])
        assert not window.refresh_timer.isActive()
    wait_line(qtbot, juan.server_log, "s> ONLINE maria123")

    # María is looking at another conversation (a message to nobody, refused in words).
    send(qtbot, maria, "ghost", "¿hola?")
    qtbot.waitUntil(lambda: _statuses(maria, "ghost") == [Status.FAILED], timeout=WAIT_MS)
    assert (
        maria.notice.text() == "Message to ghost not sent: no such user: ghost — check the destination alias"
    )

    # Juan writes: normalised by the SOAP service, accepted, delivered, but not read yet.
    send(qtbot, juan, "maria123", "Hola    soy   Juan")
    qtbot.waitUntil(lambda: _statuses(juan, "maria123") == [Status.DELIVERED], timeout=WAIT_MS)
    sent = juan.conversations.messages("maria123")[0]
    assert (sent.message_id, sent.text) == (1, "Hola soy Juan")
    assert f"{DELIVERED_MARK} delivered" in juan.conversation_text()
    assert "Normaliser: ok" in juan.normaliser_label.text()
    wait_line(qtbot, maria.server_log, "s> MESSAGE 1 FROM juan123: Hola soy Juan")
    qtbot.waitUntil(lambda: "juan123" in contact_names(maria))
    assert maria.conversations.unread("juan123") == 1
    qtbot.wait(300)  # María has not looked: it stays delivered
    assert _statuses(juan, "maria123") == [Status.DELIVERED]

    # María opens the conversation: the message is read, and Juan sees it.
    open_conversation(qtbot, maria, "juan123")
    assert "Hola soy Juan" in maria.conversation_text()
    wait_line(qtbot, maria.client_log, "c> READ 1 FROM juan123")
    qtbot.waitUntil(lambda: _statuses(juan, "maria123") == [Status.READ], timeout=WAIT_MS)
    assert f"{READ_MARK} read" in juan.conversation_text()
    lines = log_lines(juan.server_log)
    delivered = lines.index("s> SEND MESSAGE 1 DELIVERED TO maria123")
    assert (
        lines.index("s> SEND MESSAGE 1 READ BY maria123") > delivered > lines.index("s> SEND OK - MESSAGE 1")
    )

    # She answers from the conversation on screen; Juan has hers on screen too: read at once.
    retype(qtbot, maria.message_edit, "¿qué  tal?")
    click(qtbot, maria.send_button)
    wait_line(qtbot, juan.server_log, "s> MESSAGE 1 FROM maria123: ¿qué tal?")
    qtbot.waitUntil(lambda: _statuses(maria, "juan123")[-1] is Status.READ, timeout=WAIT_MS)
    assert [m.text for m in juan.conversations.messages("maria123")] == ["Hola soy Juan", "¿qué tal?"]
    # The passwords appear nowhere: not in the logs, not in the remembered settings.
    for window in (juan, maria):
        assert PASSWORD not in window.client_log.toPlainText() + window.server_log.toPlainText()
    for path in Path(juan._store.fileName()).parent.glob("*.ini"):
        assert PASSWORD not in path.read_text()


def test_an_attachment_is_sent_and_saved(
    qtbot: QtBot, server_factory: ServerFactory, windows: WindowFactory, tmp_path: Path
) -> None:
    server = server_factory(*FAST, "--max-attachment-bytes", "65536")
    juan, maria = _session_pair(qtbot, server, windows)
    qtbot.waitUntil(lambda: juan.max_attachment_bytes == 65536, timeout=WAIT_MS)
    assert "64 KiB" in juan.sendattach_button.toolTip()

    # Too large for this server: said at once, nothing sent.
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 70_000)
    juan.choose_attachment = lambda: str(big)
    retype(qtbot, juan.dest_edit, "maria123")
    assert not juan.sendattach_button.isEnabled()  # no file yet
    click(qtbot, juan.browse_button)
    assert juan.attach_edit.text() == str(big)
    click(qtbot, juan.sendattach_button)
    assert juan.notice.text() == (
        "Not sent: big.bin is 68.4 KiB: the server accepts attachments of at most 64 KiB"
    )
    assert juan.conversations.messages("maria123") == []

    # A few KB of binary data, with a text.
    data = bytes(range(256)) * 12 + os.urandom(1000)
    photo = tmp_path / "foto playa.jpg"
    photo.write_bytes(data)
    retype(qtbot, juan.attach_edit, str(photo))
    retype(qtbot, juan.message_edit, "te  mando la foto")
    click(qtbot, juan.sendattach_button)
    assert juan.attach_edit.text() == ""
    wait_line(qtbot, juan.client_log, "c> SENDATTACH maria123 foto playa.jpg te  mando la foto")
    qtbot.waitUntil(lambda: _statuses(juan, "maria123") == [Status.READ], timeout=WAIT_MS)
    sent = juan.conversations.messages("maria123")[0]
    assert sent.attachment is not None
    assert (sent.attachment.name, sent.attachment.size) == ("foto playa.jpg", len(data))
    assert sent.attachment.media_type == "image/jpeg"
    assert "foto playa.jpg (4 KiB)" in juan.conversation_text()

    # María sees it as a link in the conversation; clicking it saves the file where she says.
    wait_line(
        qtbot,
        maria.server_log,
        f"s> MESSAGE 1 FROM juan123: te  mando la foto [attachment foto playa.jpg, {len(data)} bytes]",
    )
    got = maria.conversations.messages("juan123")[0]
    assert got.attachment is not None
    href = f"attachment:{got.attachment.attachment_id}"
    qtbot.waitUntil(lambda: "foto playa.jpg" in maria.conversation_text(), timeout=WAIT_MS)
    saved = tmp_path / "saved" / "foto.jpg"
    saved.parent.mkdir()
    asked: list[str] = []

    def choose(name: str) -> str:
        asked.append(name)
        return str(saved)

    maria.choose_save_path = choose
    click_link(qtbot, maria.conversation_view, href)
    qtbot.waitUntil(saved.exists, timeout=WAIT_MS)
    wait_line(
        qtbot,
        maria.server_log,
        f"s> FETCH {got.attachment.attachment_id} OK - {len(data)} bytes saved to {saved}",
    )
    assert asked == ["foto playa.jpg"]
    assert saved.read_bytes() == data

    # The sender may fetch what it sent too; a cancelled save dialog fetches nothing.
    juan.choose_save_path = lambda name: ""
    click_link(qtbot, juan.conversation_view, href)
    assert not any(line.startswith("c> FETCH") for line in log_lines(juan.client_log))
    mine = tmp_path / "mine.jpg"
    juan.choose_save_path = lambda name: str(mine)
    click_link(qtbot, juan.conversation_view, href)
    qtbot.waitUntil(lambda: mine.exists() and mine.read_bytes() == data, timeout=WAIT_MS)
    # A file that cannot be written: said in words.
    juan.choose_save_path = lambda name: str(tmp_path / "no such folder" / "x.jpg")
    click_link(qtbot, juan.conversation_view, href)
    qtbot.waitUntil(lambda: "not saved" in juan.notice.text(), timeout=WAIT_MS)
    assert "foto playa.jpg not saved: cannot write" in juan.notice.text()
    assert "No such file or directory" in juan.notice.text()


def test_presence_follows_logins_and_logouts(
    qtbot: QtBot, server: ServerProcess, windows: WindowFactory
) -> None:
    juan, maria = _session_pair(qtbot, server, windows)
    _wait_users(qtbot, juan, ["juan123", "maria123"])
    send(qtbot, juan, "maria123", "hola")
    qtbot.waitUntil(lambda: "● maria123" in juan.contacts.item(0).text(), timeout=WAIT_MS)

    log_out(qtbot, maria)
    assert "s> LOG OUT OK" in log_lines(maria.server_log)
    assert maria.users_list.count() == 0
    assert maria.connect_button.isEnabled()
    assert not maria.send_button.isEnabled()
    assert "Not logged in" in maria.connection_label.text()
    _wait_users(qtbot, juan, ["juan123"])
    wait_line(qtbot, juan.server_log, "s> OFFLINE maria123")
    assert "○ maria123" in juan.contacts.item(0).text()
    assert juan.users_label.text() == "Connected users: 1"

    log_in(qtbot, maria, "maria123")
    _wait_users(qtbot, juan, ["juan123", "maria123"])
    click(qtbot, maria.users_button)
    wait_line(qtbot, maria.server_log, "s> CONNECTED USERS (2 users connected) OK - juan123, maria123")

    # QUIT logs out cleanly, and the other window sees it.
    click(qtbot, maria.quit_button)
    qtbot.waitUntil(lambda: not maria.isVisible(), timeout=WAIT_MS)
    assert not maria.worker.alive
    assert "c> LOG OUT maria123" in log_lines(maria.client_log)
    _wait_users(qtbot, juan, ["juan123"])


def test_a_session_window_and_a_classic_window_talk(
    qtbot: QtBot, server: ServerProcess, windows: WindowFactory
) -> None:
    juan = windows(server.port)  # classic
    maria = windows(server.session_port, session=True)
    assert isinstance(juan.worker, ClassicWorker)
    register(qtbot, juan, "juan123")
    connect(qtbot, juan, "juan123")
    register_with_password(qtbot, maria, "maria123", "María López")
    log_in(qtbot, maria, "maria123")
    # One presence for both protocols.
    _wait_users(qtbot, maria, ["juan123", "maria123"])
    _wait_users(qtbot, juan, ["juan123", "maria123"])

    send(qtbot, maria, "juan123", "hola   desde la sesión")
    wait_line(qtbot, juan.server_log, "s> MESSAGE 1 FROM maria123: hola   desde la sesión")
    # A classic recipient acknowledges delivery, never reading: ✓ and no more.
    qtbot.waitUntil(lambda: _statuses(maria, "juan123") == [Status.DELIVERED], timeout=WAIT_MS)

    send(qtbot, juan, "maria123", "hola desde el clásico")
    wait_line(qtbot, maria.server_log, "s> MESSAGE 1 FROM juan123: hola desde el clásico")
    qtbot.waitUntil(
        lambda: _statuses(juan, "maria123") == [Status.RECEIVED, Status.DELIVERED], timeout=WAIT_MS
    )
    wait_line(qtbot, juan.server_log, "s> SEND MESSAGE 1 OK")

    # A classic client cannot act for a user with a password.
    other = windows(server.port)
    click(qtbot, other.connect_button)
    dialog = other.alias_dialog
    assert dialog is not None
    retype(qtbot, dialog.alias, "maria123")
    click(qtbot, dialog.ok_button)
    qtbot.waitUntil(lambda: any("CONNECT FAIL" in line for line in log_lines(other.server_log)))
    assert other.alias is None


def test_wrong_password_and_other_refusals_in_words(
    qtbot: QtBot, server: ServerProcess, windows: WindowFactory
) -> None:
    window = windows(server.session_port, session=True)
    register_with_password(qtbot, window, "juan123")

    log_in_attempt(qtbot, window, "juan123", "not the password")
    wait_line(qtbot, window.server_log, "s> LOG IN FAIL: wrong alias or password")
    assert window.notice.text() == (
        "LOG IN juan123 failed: wrong alias or password — check both (a user registered over the "
        "classic protocol has no password and cannot log in)"
    )
    assert window.alias is None
    assert window.connect_button.isEnabled()
    assert "not the password" not in window.client_log.toPlainText()

    # The register dialog checks the confirmation; the server, the length and the alias.
    dialog = window.open_register_dialog()
    qtbot.waitUntil(dialog.isVisible)
    type_text(qtbot, dialog.full_name, "Ana Gómez")
    type_text(qtbot, dialog.alias, "ana1")
    assert "the password is empty" in dialog.error_label.text()
    type_text(qtbot, dialog.password, "short")
    type_text(qtbot, dialog.confirmation, "shorT")
    assert not dialog.ok_button.isEnabled()
    assert "the passwords differ" in dialog.error_label.text()
    retype(qtbot, dialog.confirmation, "short")
    click(qtbot, dialog.ok_button)
    wait_line(qtbot, window.server_log, "s> REGISTER FAIL: invalid value: password shorter than 8 characters")
    register_with_password(qtbot, window, "juan123", expect="REGISTER FAIL: alias already taken")
    assert window.notice.text() == "REGISTER juan123 failed: alias already taken — choose another alias"

    # UNREGISTER deletes the account; its password confirms it.
    log_in(qtbot, window, "juan123")
    click(qtbot, window.unregister_button)
    unregister = window.login_dialog
    assert unregister is not None
    assert (unregister.value(), unregister.alias.isReadOnly()) == ("juan123", True)
    type_text(qtbot, unregister.password, "wrong password")
    click(qtbot, unregister.ok_button)
    wait_line(qtbot, window.server_log, "s> UNREGISTER FAIL: wrong alias or password")
    assert window.alias == "juan123"
    click(qtbot, window.unregister_button)
    unregister = window.login_dialog
    assert unregister is not None
    type_text(qtbot, unregister.password, PASSWORD)
    click(qtbot, unregister.ok_button)
    qtbot.waitUntil(lambda: window.alias is None, timeout=WAIT_MS)
    wait_line(qtbot, window.server_log, "s> UNREGISTER OK")
    log_in_attempt(qtbot, window, "juan123")
    qtbot.waitUntil(lambda: "LOG IN juan123 failed: wrong alias or password" in window.notice.text())

    # Not logged in: UNREGISTER of another account logs in to it on a connection of its own.
    register_with_password(qtbot, window, "pepe123")
    click(qtbot, window.unregister_button)
    unregister = window.login_dialog
    assert unregister is not None
    retype(qtbot, unregister.alias, "pepe123")
    type_text(qtbot, unregister.password, PASSWORD)
    click(qtbot, unregister.ok_button)
    qtbot.waitUntil(lambda: log_lines(window.server_log)[-1] == "s> UNREGISTER OK", timeout=WAIT_MS)
    assert window.alias is None


def test_a_login_elsewhere_takes_the_session_over(
    qtbot: QtBot, server: ServerProcess, windows: WindowFactory
) -> None:
    first = windows(server.session_port, session=True)
    register_with_password(qtbot, first, "juan123")
    log_in(qtbot, first, "juan123")
    second = windows(server.session_port, session=True)
    log_in(qtbot, second, "juan123")
    qtbot.waitUntil(lambda: first.alias is None, timeout=WAIT_MS)
    assert first.notice.text() == (
        "No longer logged in: already logged in: logged in again elsewhere. LOG IN again when you wish."
    )
    assert first.connect_button.isEnabled()
    assert second.alias == "juan123"


def test_an_unreachable_session_server_is_said_in_words(qtbot: QtBot, windows: WindowFactory) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    window = windows(port, session=True)
    log_in_attempt(qtbot, window, "juan123")
    qtbot.waitUntil(lambda: "failed" in window.notice.text(), timeout=WAIT_MS)
    assert window.notice.text() == (
        f"LOG IN juan123 failed: server unreachable (127.0.0.1:{port}: Connection refused)"
    )
    assert window.alias is None
    assert window.connect_button.isEnabled()


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_session_error_code_has_words(code: ErrorCode) -> None:
    text = session_failure_text("LOG IN", code)
    assert text.startswith(ERROR_TEXT[code])
    assert str(int(code)) not in text.split()


def test_the_window_says_reconnecting_then_connected(
    qtbot: QtBot, server_factory: ServerFactory, windows: WindowFactory
) -> None:
    server = server_factory(*FAST)
    ports = ("--port", str(server.port), "--session-port", str(server.session_port))
    juan, maria = _session_pair(qtbot, server, windows)
    log_out(qtbot, maria)

    server.kill()
    qtbot.waitUntil(lambda: "reconnecting…" in juan.connection_label.text(), timeout=WAIT_MS)
    assert not juan.reachable
    assert "reconnecting" in juan.notice.text()
    # A message written meanwhile waits in the client library, and goes once the server is back.
    send(qtbot, juan, "maria123", "¿sigues ahí?")
    assert _statuses(juan, "maria123") == [Status.SENDING]

    server = server_factory(*FAST, *ports)
    qtbot.waitUntil(lambda: "· connected ·" in juan.connection_label.text(), timeout=20_000)
    assert juan.reachable
    assert juan.alias == "juan123"
    assert not juan.notice.isVisible()
    qtbot.waitUntil(lambda: _statuses(juan, "maria123") == [Status.SENT], timeout=WAIT_MS)
    log_in(qtbot, maria, "maria123")
    wait_line(qtbot, maria.server_log, "s> MESSAGE 1 FROM juan123: ¿sigues ahí?")
    qtbot.waitUntil(lambda: _statuses(juan, "maria123") == [Status.READ], timeout=WAIT_MS)
    _wait_users(qtbot, juan, ["juan123", "maria123"])


def test_the_mode_is_chosen_in_the_settings_and_remembered(
    qtbot: QtBot, server: ServerProcess, windows: WindowFactory, tmp_path: Path
) -> None:
    path = tmp_path / "mode.ini"
    window = windows(server.port, settings_file=path)
    assert window.connect_button.text() == "CONNECT"
    assert not window.attach_edit.isEnabled()
    assert window.sendattach_button.toolTip() == ATTACH_TOOLTIP

    dialog = window.open_settings_dialog()
    qtbot.waitUntil(dialog.isVisible)
    assert dialog.classic_button.isChecked()
    assert dialog.session_port.value() == 7001
    click(qtbot, dialog.session_button)
    dialog.session_port.setValue(server.session_port)
    click(qtbot, dialog.ok_button)
    qtbot.waitUntil(lambda: isinstance(window.worker, SessionWorker))
    assert (window.connect_button.text(), window.disconnect_button.text()) == ("LOG IN", "LOG OUT")
    assert window.attach_edit.isEnabled()
    assert window.browse_button.isEnabled()
    assert f"session server 127.0.0.1:{server.session_port}" in window.connection_label.text()
    register_with_password(qtbot, window, "lola123")
    log_in(qtbot, window, "lola123")
    log_out(qtbot, window)
    window.shutdown()

    stored = QSettings(str(path), QSettings.Format.IniFormat)
    assert stored.value("server/mode") == "session"
    again = windows(server.session_port, settings_file=path, server=None)
    assert again.session_mode
    assert again.settings.port == server.port  # the classic port is kept apart
    login = again.open_connect_dialog()
    assert login.value() == "lola123"
    assert isinstance(login, LoginDialog)
    assert login.password.text() == ""  # never remembered
    login.reject()

    # And back to classic.
    back = again.open_settings_dialog()
    click(qtbot, back.classic_button)
    click(qtbot, back.ok_button)
    qtbot.waitUntil(lambda: isinstance(again.worker, ClassicWorker))
    assert again.connect_button.text() == "CONNECT"
    assert not again.attach_edit.isEnabled()
    assert f"127.0.0.1:{server.port}" in again.connection_label.text()
    connect_dialog = again.open_connect_dialog()
    connect_dialog.reject()


def test_gui_session_flag(qtbot: QtBot, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Mode, int, int, str]] = []

    def fake_exec() -> int:  # instead of running the event loop until the window closes
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        assert len(windows) == 1
        window = windows[0]
        settings = window.settings
        seen.append((settings.mode, settings.session_port, settings.port, window.connect_button.text()))
        window.shutdown()
        return 0

    monkeypatch.setattr(QApplication, "exec", staticmethod(fake_exec))
    base = ["gui", "-s", "127.0.0.1", "--ws", "http://127.0.0.1:1/?wsdl"]
    assert main([*base, "--session", "-p", "7011"]) == 0
    assert seen[-1] == (Mode.SESSION, 7011, 7000, "LOG IN")
    assert main(base) == 0  # remembered
    assert seen[-1] == (Mode.SESSION, 7011, 7000, "LOG IN")
    assert main([*base, "--classic", "-p", "7010"]) == 0
    assert seen[-1] == (Mode.CLASSIC, 7011, 7010, "CONNECT")
    remembered = GuiSettings.load(open_settings())
    assert (remembered.mode, remembered.port, remembered.session_port) == (Mode.CLASSIC, 7010, 7011)
    with pytest.raises(SystemExit):
        main(["gui", "--session", "--classic"])


def test_a_server_that_hangs_never_freezes_the_window(
    qtbot: QtBot, server: ServerProcess, windows: WindowFactory
) -> None:
    window = windows(server.session_port, session=True)
    register_with_password(qtbot, window, "juan123")
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        ticks: list[float] = []
        heartbeat = QTimer()
        heartbeat.timeout.connect(lambda: ticks.append(time.monotonic()))
        heartbeat.start(20)
        click(qtbot, window.connect_button)
        dialog = window.login_dialog
        assert dialog is not None
        retype(qtbot, dialog.alias, "juan123")
        type_text(qtbot, dialog.password, PASSWORD)
        started = time.monotonic()
        QTest.keyClick(dialog.password, Qt.Key.Key_Return)
        assert time.monotonic() - started < 0.5
        assert not window.connect_button.isEnabled()  # busy, not frozen
        qtbot.waitUntil(
            lambda: "LOG IN FAIL" in log_lines(window.server_log)[-1], timeout=int(TIMEOUT_S * 1000) + 3000
        )
        heartbeat.stop()
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 20, "the GUI thread was blocked"
    assert max(gaps) < 0.5, "the GUI thread was blocked"
    assert window.notice.text() == (
        f"LOG IN juan123 failed: no answer from 127.0.0.1:{server.session_port} within {TIMEOUT_S:g} s"
    )
    assert window.connect_button.isEnabled()
    log_in(qtbot, window, "juan123")  # on a new connection, once the server answers again
