"""Drive a MainWindow as a person would: click its buttons, fill its dialogs, wait for what it shows."""

from __future__ import annotations

from PySide6.QtCore import QDate, QEvent, Qt
from PySide6.QtGui import QKeyEvent, QTextCursor
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QAbstractButton, QApplication, QLineEdit, QPlainTextEdit, QTextBrowser
from pytestqt.qtbot import QtBot

from dmds.gui.window import MainWindow

WAIT_MS = 10_000
#: The password of the session-mode users of the tests.
PASSWORD = "correct horse battery"


def click(qtbot: QtBot, button: QAbstractButton) -> None:
    assert button.isEnabled(), f"{button.text()} is disabled"
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def type_text(qtbot: QtBot, field: QLineEdit, text: str) -> None:
    """Type `text` key by key (QTest knows ASCII keys only: other characters go as key events)."""
    for ch in text:
        if ch.isascii():
            QTest.keyClicks(field, ch)
        else:
            for kind in (QEvent.Type.KeyPress, QEvent.Type.KeyRelease):
                QApplication.sendEvent(field, QKeyEvent(kind, 0, Qt.KeyboardModifier.NoModifier, ch))


def retype(qtbot: QtBot, field: QLineEdit, text: str) -> None:
    field.clear()
    type_text(qtbot, field, text)


def log_lines(log: QPlainTextEdit) -> list[str]:
    return log.toPlainText().splitlines()


def wait_line(qtbot: QtBot, log: QPlainTextEdit, line: str, timeout: int = WAIT_MS) -> None:
    qtbot.waitUntil(lambda: line in log_lines(log), timeout=timeout)


def register(
    qtbot: QtBot,
    window: MainWindow,
    alias: str,
    full_name: str = "Juan Pérez",
    birth: QDate | None = None,
    expect: str = "REGISTER OK",
) -> None:
    before = len(log_lines(window.server_log))
    click(qtbot, window.register_button)
    dialog = window.register_dialog
    assert dialog is not None
    qtbot.waitUntil(dialog.isVisible)
    type_text(qtbot, dialog.full_name, full_name)
    retype(qtbot, dialog.alias, alias)
    dialog.birth_date.setDate(birth or QDate(2000, 2, 1))
    click(qtbot, dialog.ok_button)
    qtbot.waitUntil(lambda: f"s> {expect}" in log_lines(window.server_log)[before:], timeout=WAIT_MS)


def connect(qtbot: QtBot, window: MainWindow, alias: str) -> None:
    click(qtbot, window.connect_button)
    dialog = window.alias_dialog
    assert dialog is not None
    qtbot.waitUntil(dialog.isVisible)
    retype(qtbot, dialog.alias, alias)
    QTest.keyClick(dialog.alias, Qt.Key.Key_Return)  # Enter confirms, as OK does
    qtbot.waitUntil(lambda: window.alias == alias, timeout=WAIT_MS)


def disconnect(qtbot: QtBot, window: MainWindow) -> None:
    click(qtbot, window.disconnect_button)
    qtbot.waitUntil(lambda: window.alias is None, timeout=WAIT_MS)


def send(qtbot: QtBot, window: MainWindow, dest: str, text: str) -> None:
    """Type the destination and the text, then press Enter in the message field."""
    retype(qtbot, window.dest_edit, dest)
    popup = window.dest_edit.completer().popup()
    if (
        popup is not None and popup.isVisible()
    ):  # the completer offers the aliases it knows: dismiss it, as a person would
        QTest.keyClick(popup, Qt.Key.Key_Escape)
    retype(qtbot, window.message_edit, text)
    assert window.send_button.isEnabled()
    QTest.keyClick(window.message_edit, Qt.Key.Key_Return)


def contact_names(window: MainWindow) -> list[str]:
    return [
        str(window.contacts.item(row).data(Qt.ItemDataRole.UserRole))
        for row in range(window.contacts.count())
    ]


def open_conversation(qtbot: QtBot, window: MainWindow, peer: str) -> None:
    qtbot.waitUntil(lambda: peer in contact_names(window), timeout=WAIT_MS)
    window.contacts.setCurrentRow(contact_names(window).index(peer))
    assert window.dest_edit.text() == peer


# -- session mode ------------------------------------------------------------------------------------


def register_with_password(
    qtbot: QtBot,
    window: MainWindow,
    alias: str,
    full_name: str = "Juan Pérez",
    *,
    password: str = PASSWORD,
    expect: str = "REGISTER OK",
) -> None:
    """REGISTER in session mode: the dialog asks for the password twice."""
    before = len(log_lines(window.server_log))
    click(qtbot, window.register_button)
    dialog = window.register_dialog
    assert dialog is not None
    qtbot.waitUntil(dialog.isVisible)
    assert dialog.password.isVisible()
    type_text(qtbot, dialog.full_name, full_name)
    retype(qtbot, dialog.alias, alias)
    dialog.birth_date.setDate(QDate(2000, 2, 1))
    type_text(qtbot, dialog.password, password)
    type_text(qtbot, dialog.confirmation, password)
    click(qtbot, dialog.ok_button)
    qtbot.waitUntil(lambda: f"s> {expect}" in log_lines(window.server_log)[before:], timeout=WAIT_MS)


def log_in_attempt(qtbot: QtBot, window: MainWindow, alias: str, password: str = PASSWORD) -> None:
    """LOG IN: fill the alias and password dialog and press Enter in the password field."""
    click(qtbot, window.connect_button)
    dialog = window.login_dialog
    assert dialog is not None
    qtbot.waitUntil(dialog.isVisible)
    retype(qtbot, dialog.alias, alias)
    type_text(qtbot, dialog.password, password)
    QTest.keyClick(dialog.password, Qt.Key.Key_Return)


def log_in(qtbot: QtBot, window: MainWindow, alias: str, password: str = PASSWORD) -> None:
    log_in_attempt(qtbot, window, alias, password)
    qtbot.waitUntil(lambda: window.alias == alias, timeout=WAIT_MS)


def log_out(qtbot: QtBot, window: MainWindow) -> None:
    click(qtbot, window.disconnect_button)
    qtbot.waitUntil(lambda: window.alias is None, timeout=WAIT_MS)


def link_targets(view: QTextBrowser) -> list[str]:
    """The hrefs of the links shown in `view`, in order."""
    targets: list[str] = []
    block = view.document().begin()
    while block.isValid():
        iterator = block.begin()
        while not iterator.atEnd():
            href = iterator.fragment().charFormat().anchorHref()
            if href and href not in targets:
                targets.append(href)
            iterator += 1
        block = block.next()
    return targets


def click_link(qtbot: QtBot, view: QTextBrowser, href: str) -> None:
    """Click, with the mouse, the link to `href` shown in `view`."""
    block = view.document().begin()
    while block.isValid():
        iterator = block.begin()
        while not iterator.atEnd():
            fragment = iterator.fragment()
            if fragment.charFormat().anchorHref() == href:
                cursor = QTextCursor(view.document())
                cursor.setPosition(fragment.position() + min(1, fragment.length() - 1))
                view.setTextCursor(cursor)
                view.ensureCursorVisible()
                where = view.cursorRect(cursor).center()
                QTest.mouseClick(
                    view.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, where
                )
                return
            iterator += 1
        block = block.next()
    raise AssertionError(f"no link to {href} in {link_targets(view)}")
