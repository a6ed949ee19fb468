"""Screenshots of the desktop client for the README, grabbed from the real widgets.

Always run (the grabs must work offscreen); the PNGs are written to docs/images only when
DMDS_SCREENSHOTS=1:  DMDS_SCREENSHOTS=1 .venv/bin/pytest tests/gui/test_screenshots.py
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PySide6.QtCore import QDate, QPoint
from PySide6.QtGui import QColor, QPainter, QPixmap
from pytestqt.qtbot import QtBot

from dmds.gui.conversations import Status
from dmds.gui.window import MainWindow
from dmds.soap.service import SoapServer
from tests.conftest import ServerProcess
from tests.gui.conftest import WindowFactory
from tests.gui.helpers import (
    WAIT_MS,
    click,
    connect,
    disconnect,
    log_in,
    open_conversation,
    register,
    register_with_password,
    retype,
    send,
    type_text,
)

pytestmark = pytest.mark.timeout(60)

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
SIZE = (1040, 700)


def _save(pixmap: QPixmap, name: str) -> None:
    assert not pixmap.isNull()
    assert pixmap.width() > 100
    if os.environ.get("DMDS_SCREENSHOTS") == "1":
        IMAGES.mkdir(parents=True, exist_ok=True)
        assert pixmap.save(str(IMAGES / name))


def _delivered(window: MainWindow, peer: str) -> bool:
    statuses = [m.status for m in window.conversations.messages(peer) if m.status is not Status.RECEIVED]
    return bool(statuses) and all(status is Status.DELIVERED for status in statuses)


def test_screenshots(qtbot: QtBot, server: ServerProcess, soap: SoapServer, windows: WindowFactory) -> None:
    juan = windows(server.port, ws_url=soap.wsdl_url)
    maria = windows(server.port, ws_url=soap.wsdl_url)
    ruth = windows(server.port, ws_url=soap.wsdl_url)
    for window in (juan, maria, ruth):
        window.resize(*SIZE)
    _save(juan.grab(), "gui-main.png")  # as it opens: not connected

    dialog = juan.open_register_dialog()
    qtbot.waitUntil(dialog.isVisible)
    type_text(qtbot, dialog.full_name, "Juan Pérez")
    type_text(qtbot, dialog.alias, "juan123")
    dialog.birth_date.setDate(QDate(2000, 2, 1))
    _save(_side_by_side(dialog.grab(), dialog.birth_date.calendarWidget().grab()), "gui-register.png")
    dialog.reject()

    register(qtbot, juan, "juan123", "Juan Pérez")
    register(qtbot, maria, "maria123", "María López", QDate(2001, 4, 3))
    register(qtbot, ruth, "ruth123", "Ruth Gil", QDate(1998, 11, 23))
    for window, alias in ((juan, "juan123"), (maria, "maria123"), (ruth, "ruth123")):
        connect(qtbot, window, alias)
    qtbot.waitUntil(lambda: len(juan.connected_aliases) == 3, timeout=WAIT_MS)

    send(qtbot, ruth, "juan123", "¿Comemos mañana?")
    send(qtbot, juan, "maria123", "Hola   soy Juan")
    qtbot.waitUntil(lambda: _delivered(juan, "maria123"), timeout=WAIT_MS)
    open_conversation(qtbot, maria, "juan123")
    send(qtbot, maria, "juan123", "¡Hola Juan! ¿Qué tal el examen?")
    qtbot.waitUntil(lambda: len(juan.conversations.messages("maria123")) == 2, timeout=WAIT_MS)
    send(qtbot, juan, "maria123", "Muy bien, mañana te cuento")
    qtbot.waitUntil(lambda: _delivered(juan, "maria123"), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: _delivered(maria, "juan123"), timeout=WAIT_MS)
    disconnect(qtbot, ruth)
    qtbot.waitUntil(lambda: len(juan.connected_aliases) == 2, timeout=WAIT_MS)
    send(qtbot, maria, "ruth123", "Ruth, ¿vienes el sábado?")  # queued: Ruth is away
    qtbot.waitUntil(lambda: maria.conversations.messages("ruth123")[0].status is Status.SENT, timeout=WAIT_MS)
    open_conversation(qtbot, maria, "juan123")
    open_conversation(qtbot, juan, "maria123")
    juan.message_edit.setText("¿A qué hora?")
    _save(juan.grab(), "gui-conversation.png")

    _save(_side_by_side(juan.grab(), maria.grab()), "gui-two-clients.png")


def _sent_statuses(window: MainWindow, peer: str) -> list[Status]:
    return [m.status for m in window.conversations.messages(peer) if m.status is not Status.RECEIVED]


def test_session_screenshot(
    qtbot: QtBot, server: ServerProcess, soap: SoapServer, windows: WindowFactory, tmp_path: Path
) -> None:
    """Session mode: a conversation with a received attachment, a read and a delivered message."""
    juan = windows(server.session_port, ws_url=soap.wsdl_url, session=True)
    maria = windows(server.session_port, ws_url=soap.wsdl_url, session=True)
    ruth = windows(server.session_port, ws_url=soap.wsdl_url, session=True)
    juan.resize(*SIZE)
    for window, alias, name in (
        (juan, "juan123", "Juan Pérez"),
        (maria, "maria123", "María López"),
        (ruth, "ruth123", "Ruth Gil"),
    ):
        register_with_password(qtbot, window, alias, name)
        log_in(qtbot, window, alias)
    qtbot.waitUntil(lambda: len(juan.connected_aliases) == 3, timeout=WAIT_MS)

    # María sends Juan her notes; his window opens the conversation, so both are read at once.
    notes = tmp_path / "apuntes-tema-3.pdf"
    notes.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 96)
    retype(qtbot, maria.dest_edit, "juan123")
    retype(qtbot, maria.attach_edit, str(notes))
    retype(qtbot, maria.message_edit, "Hola Juan,   te paso los apuntes del tema 3")
    click(qtbot, maria.sendattach_button)
    qtbot.waitUntil(lambda: _sent_statuses(maria, "juan123") == [Status.READ], timeout=WAIT_MS)
    send(qtbot, juan, "maria123", "¡Gracias! Los miro esta tarde")
    qtbot.waitUntil(lambda: _sent_statuses(juan, "maria123") == [Status.READ], timeout=WAIT_MS)

    # Then María looks at Ruth's conversation: Juan's next message is delivered, not read.
    send(qtbot, ruth, "maria123", "¿Vienes el sábado?")
    open_conversation(qtbot, maria, "ruth123")
    send(qtbot, juan, "maria123", "¿Quedamos mañana a las 10 en la biblioteca?")
    qtbot.waitUntil(
        lambda: _sent_statuses(juan, "maria123") == [Status.READ, Status.DELIVERED], timeout=WAIT_MS
    )
    qtbot.waitUntil(lambda: len(juan.connected_aliases) == 3, timeout=WAIT_MS)
    juan.message_edit.setText("Te mando el horario")
    juan.attach_edit.setText("/home/juan/horario.pdf")
    juan.clear_notice()
    _save(juan.grab(), "gui-session.png")


def _side_by_side(left: QPixmap, right: QPixmap, gap: int = 16) -> QPixmap:
    both = QPixmap(left.width() + gap + right.width(), max(left.height(), right.height()))
    both.fill(QColor("#9aa3b0"))
    painter = QPainter(both)
    painter.drawPixmap(QPoint(0, 0), left)
    painter.drawPixmap(QPoint(left.width() + gap, 0), right)
    painter.end()
    return both
