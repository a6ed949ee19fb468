"""The parts of the main window, each built on its own: the connection bar, the conversations and
connected users (left), the conversation on screen (right), the rows to write and attach, the two
logs and the status line. They know nothing of the protocol nor of the window: the window wires
their signals and tells them what to show.
"""

from __future__ import annotations

from collections.abc import Collection

from PySide6.QtCore import QObject, QStringListModel, Qt
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (
    QCompleter,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStatusBar,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from dmds.gui.conversations import ChatMessage, Conversations
from dmds.gui.message_html import message_html

__all__ = [
    "LOG_LINES",
    "STYLE",
    "ActionBar",
    "ComposeRows",
    "ConversationPanel",
    "LogPanel",
    "PeoplePanel",
    "StatusLine",
    "central_widget",
    "notice_label",
    "quit_button",
]

#: Log lines kept per log.
LOG_LINES = 5000

STYLE = """
QMainWindow, QDialog { background: #eef1f6; }
QPushButton#action {
    background: #263859; color: white; border: 1px solid #1b2840; border-radius: 3px;
    padding: 7px 14px; font-weight: bold;
}
QPushButton#action:hover { background: #34507f; }
QPushButton#action:disabled { background: #b9c0cc; color: #eef1f6; border-color: #a7afbd; }
QPushButton#quit {
    background: #d32f2f; color: white; border: 1px solid #9a2020; border-radius: 3px; padding: 6px 22px;
}
QPushButton#quit:hover { background: #e53935; }
QLabel#notice { background: #fdecea; color: #8a1c1c; border: 1px solid #f5c2c0; padding: 5px; }
QLabel#heading { font-weight: bold; color: #263859; }
QTextBrowser#conversation { background: #f7f9fc; }
"""


def _action_button(text: str) -> QPushButton:
    button = QPushButton(text)
    button.setObjectName("action")
    return button


def _heading(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("heading")
    return label


def _log_view() -> QPlainTextEdit:
    view = QPlainTextEdit()
    view.setReadOnly(True)
    view.setMaximumBlockCount(LOG_LINES)
    view.setFont(QFont("DejaVu Sans Mono", 9))
    return view


def _grouped(title: str, widget: QWidget) -> QGroupBox:
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.setContentsMargins(4, 4, 4, 4)
    layout.addWidget(widget)
    return box


def _column(*widgets: tuple[QWidget, int]) -> QWidget:
    column = QWidget()
    layout = QVBoxLayout(column)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget, stretch in widgets:
        layout.addWidget(widget, stretch)
    return column


def notice_label() -> QLabel:
    """The notice under the connection bar: a problem, until the next one or the next success."""
    notice = QLabel()
    notice.setObjectName("notice")
    notice.setWordWrap(True)
    notice.hide()
    return notice


def quit_button() -> QPushButton:
    button = QPushButton("QUIT")
    button.setObjectName("quit")
    button.setToolTip("Disconnect and close the window")
    return button


def central_widget(
    actions: QHBoxLayout, notice: QLabel, chat: QWidget, logs: QWidget, quit_button: QPushButton
) -> QWidget:
    """The window's parts in their places: the connection bar and the notice over the chat, the
    logs under it (the two share the height as the person drags), QUIT at the bottom."""
    body = QSplitter(Qt.Orientation.Vertical)
    body.addWidget(chat)
    body.addWidget(logs)
    body.setStretchFactor(0, 3)
    body.setStretchFactor(1, 1)
    body.setSizes([480, 160])
    quit_row = QHBoxLayout()
    quit_row.addStretch(1)
    quit_row.addWidget(quit_button)
    quit_row.addStretch(1)
    central = QWidget()
    layout = QVBoxLayout(central)
    layout.addLayout(actions)
    layout.addWidget(notice)
    layout.addWidget(body, 1)
    layout.addLayout(quit_row)
    return central


class ActionBar:
    """The connection bar: the original's REGISTER, UNREGISTER, CONNECT, DISCONNECT and CONNECTED
    USERS, and SETTINGS… (the protocol in use labels the first five)."""

    def __init__(self) -> None:
        self.register_button = _action_button("REGISTER")
        self.unregister_button = _action_button("UNREGISTER")
        self.connect_button = _action_button("CONNECT")
        self.disconnect_button = _action_button("DISCONNECT")
        self.users_button = _action_button("CONNECTED USERS")
        self.settings_button = _action_button("SETTINGS…")
        self.settings_button.setToolTip("Server, port and normaliser URL (while not connected)")
        self.layout = QHBoxLayout()
        for button in (
            self.register_button,
            self.unregister_button,
            self.connect_button,
            self.disconnect_button,
            self.users_button,
            self.settings_button,
        ):
            self.layout.addWidget(button)


class PeoplePanel:
    """The left of the window: the conversations, one a contact (● connected, its unread count),
    over the connected users (double-click one to write to it)."""

    def __init__(self) -> None:
        self.contacts = QListWidget()
        self.users_label = _heading("Connected users (connect to see them)")
        self.users_list = QListWidget()
        self.users_list.setToolTip("Double-click a user to open the conversation")
        self.widget = _column(
            (_heading("Conversations"), 0), (self.contacts, 3), (self.users_label, 0), (self.users_list, 2)
        )

    def show_users(self, aliases: list[str], me: str | None) -> None:
        self.users_list.clear()
        for alias in aliases:
            item = QListWidgetItem(f"{alias}  (you)" if alias == me else alias)
            item.setData(Qt.ItemDataRole.UserRole, alias)
            self.users_list.addItem(item)

    def show_contacts(
        self, conversations: Conversations, online: Collection[str], current: str | None
    ) -> None:
        """Redraw the conversations, `current` selected, without telling the list's listeners."""
        self.contacts.blockSignals(True)
        try:
            self.contacts.clear()
            for peer in conversations.peers():
                unread = conversations.unread(peer)
                mark = "●" if peer in online else "○"
                item = QListWidgetItem(f"{mark} {peer}" + (f"  ({unread} new)" if unread else ""))
                item.setData(Qt.ItemDataRole.UserRole, peer)
                item.setToolTip("connected" if peer in online else "not connected")
                if unread:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.contacts.addItem(item)
                if peer == current:
                    self.contacts.setCurrentItem(item)
        finally:
            self.contacts.blockSignals(False)


class ConversationPanel:
    """The right of the window: the conversation on screen, newest at the bottom; attachments are
    links (the view does not follow them: the window saves the file)."""

    def __init__(self) -> None:
        self.title = _heading("No conversation")
        self.view = QTextBrowser()
        self.view.setObjectName("conversation")
        self.view.setOpenLinks(False)
        self.view.setPlaceholderText(
            "Choose a conversation on the left, double-click a connected user, or type an alias in Dest."
        )
        self.widget = _column((self.title, 0), (self.view, 0))

    def show_nothing(self) -> None:
        self.title.setText("No conversation")
        self.view.clear()

    def show(self, peer: str, connected: bool, messages: list[ChatMessage]) -> None:
        state = "connected" if connected else "not connected"
        self.title.setText(f"Conversation with {peer} ({state})")
        rows = [message_html(message) for message in messages]
        self.view.setHtml("".join(rows) or "<p style='color:#888'>No messages yet.</p>")
        bar = self.view.verticalScrollBar()
        bar.setValue(bar.maximum())


class ComposeRows:
    """The original's rows under the conversation: Dest and Message with SEND, then the attached
    file with Browse and SENDATTACH."""

    def __init__(self, parent: QObject) -> None:
        self.dest_edit = QLineEdit()
        self.dest_edit.setPlaceholderText("alias")
        #: the aliases Dest completes (the window keeps it current)
        self.dest_model = QStringListModel(parent)
        completer = QCompleter(self.dest_model, parent)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.dest_edit.setCompleter(completer)
        self.message_edit = QLineEdit()
        self.message_edit.setPlaceholderText("message (Enter sends)")
        self.send_button = _action_button("SEND")
        self.dest_edit.returnPressed.connect(self.message_edit.setFocus)
        self.send_row = QHBoxLayout()
        self.send_row.addWidget(QLabel("Dest:"))
        self.send_row.addWidget(self.dest_edit, 1)
        self.send_row.addWidget(QLabel("Message:"))
        self.send_row.addWidget(self.message_edit, 3)
        self.send_row.addWidget(self.send_button)

        self.attach_edit = QLineEdit()
        self.browse_button = QPushButton("Browse")
        self.sendattach_button = _action_button("SENDATTACH")
        self.attach_row = QHBoxLayout()
        self.attach_row.addWidget(QLabel("Attached File:"))
        self.attach_row.addWidget(self.attach_edit, 1)
        self.attach_row.addWidget(self.browse_button)
        self.attach_row.addWidget(self.sendattach_button)


class LogPanel:
    """The original's two logs side by side: what this window did, and what the server said."""

    def __init__(self) -> None:
        self.client_log = _log_view()
        self.server_log = _log_view()
        self.widget = QSplitter(Qt.Orientation.Horizontal)
        self.widget.addWidget(_grouped("Client: what this window did", self.client_log))
        self.widget.addWidget(_grouped("Server: what the server said", self.server_log))


class StatusLine:
    """The status bar's lasting part: who you are and whether the server answers, and whether the
    normaliser does."""

    def __init__(self, bar: QStatusBar) -> None:
        self.connection_label = QLabel()
        self.normaliser_label = QLabel("Normaliser: not used yet")
        bar.addPermanentWidget(self.connection_label, 1)
        bar.addPermanentWidget(self.normaliser_label)

    def show_connection(self, text: str, colour: str) -> None:
        self.connection_label.setText(text)
        self.connection_label.setStyleSheet(f"color: {colour};")

    def normaliser_unknown(self) -> None:
        self.normaliser_label.setText("Normaliser: not used yet")
        self.normaliser_label.setStyleSheet("")

    def normaliser_up(self, url: str) -> None:
        self.normaliser_label.setText("Normaliser: ok")
        self.normaliser_label.setStyleSheet("color: #1b7a2f;")
        self.normaliser_label.setToolTip(url)

    def normaliser_down(self, detail: str) -> None:
        self.normaliser_label.setText("⚠ Normaliser unavailable: text sent as typed")
        self.normaliser_label.setStyleSheet("color: #b00020;")
        self.normaliser_label.setToolTip(detail)
