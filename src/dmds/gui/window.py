"""The desktop client's main window (`dmds gui`): the original "Messenger" window, and more.

Like the original: the REGISTER, UNREGISTER, CONNECT, DISCONNECT and CONNECTED USERS buttons, a
destination and a message with SEND, the attached-file row with SENDATTACH, the client's log
(what it did) beside the server's log (what the server said), and QUIT.

More than the original: a conversation per contact (contacts on the left, the conversation on the
right, newest at the bottom, a ✓ on a sent message once its delivery receipt came), the connected
users refreshed by themselves while connected, a status bar saying who you are and whether the
server answers, Enter to send, buttons enabled only when their action makes sense, every result
code in words, remembered settings with a dialog to change them, and a clean DISCONNECT on QUIT
or when the window is closed.

All network work happens in `SessionWorker`'s thread; the window only reacts to its events.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Final

from PySide6.QtCore import QByteArray, QSettings, QStringListModel, Qt, QTimer
from PySide6.QtGui import QCloseEvent, QFont
from PySide6.QtWidgets import (
    QCompleter,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from dmds.cli.shell import TextNormaliser
from dmds.client.classic import DEFAULT_TIMEOUT_S, OK, describe
from dmds.gui.conversations import ChatMessage, Conversations, Direction, Status
from dmds.gui.dialogs import AliasDialog, RegisterDialog, SettingsDialog
from dmds.gui.settings import GuiSettings
from dmds.gui.worker import (
    ConnectionChanged,
    MessageArrived,
    NormaliserChanged,
    OperationDone,
    ReceiptArrived,
    SendDone,
    ServerReachability,
    SessionWorker,
    UsersListed,
)

__all__ = ["ATTACH_TOOLTIP", "CONNECTED_USERS_REFRESH_MS", "MainWindow", "failure_text"]

#: While connected, CONNECTEDUSERS is asked this often (milliseconds) to keep the list current.
CONNECTED_USERS_REFRESH_MS: Final = 3000
#: How long the status bar shows a passing message (milliseconds).
STATUS_MS: Final = 8000
#: Log lines kept per log.
LOG_LINES: Final = 5000
#: At most this long (seconds) the window waits, as it closes, for the network thread to end.
CLOSE_TIMEOUT_S: Final = 1.0
GEOMETRY_KEY: Final = "window/geometry"
ATTACH_TOOLTIP: Final = "Attachments come with the session protocol; the classic protocol has none."
DELIVERED_MARK: Final = "✓"

#: What to do about some failures, after the reason in words.
_HINTS: Final[dict[tuple[str, int], str]] = {
    ("CONNECT", 1): "REGISTER it first",
    ("UNREGISTER", 1): "check the alias",
    ("SEND", 1): "check the destination alias",
    ("CONNECTEDUSERS", 1): "CONNECT again",
}

_STYLE: Final = """
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


def failure_text(operation: str, code: int) -> str:
    """A failed result `code` of `operation` in words (with what to do, when there is a rule)."""
    text = describe(operation, code)
    hint = _HINTS.get((operation, code))
    return f"{text} — {hint}" if hint else text


def _action_button(text: str) -> QPushButton:
    button = QPushButton(text)
    button.setObjectName("action")
    return button


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


class MainWindow(QMainWindow):
    """One user's window: its own worker thread, session, conversations and logs."""

    def __init__(
        self,
        settings: QSettings,
        *,
        server: str | None = None,
        port: int | None = None,
        ws_url: str | None = None,
        listen_host: str = "0.0.0.0",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        refresh_ms: int = CONNECTED_USERS_REFRESH_MS,
        normaliser: TextNormaliser | None = None,
    ) -> None:
        super().__init__()
        self._store = settings
        self.settings = GuiSettings.load(settings)
        # Flags given on the command line win over (and replace) what was remembered.
        if server is not None:
            self.settings.server = server
        if port is not None:
            self.settings.port = port
        if ws_url is not None:
            self.settings.ws_url = ws_url
        self.settings.save(settings)
        self._timeout_s = timeout_s
        self.worker = SessionWorker(
            self.settings.server,
            self.settings.port,
            self.settings.ws_url,
            listen_host=listen_host,
            timeout_s=timeout_s,
            normaliser=normaliser,
            parent=self,
        )
        self.worker.report.connect(self._on_event)

        self.conversations = Conversations()
        self.alias: str | None = None  # the connected alias, as the worker last reported it
        self.reachable = True
        self.connected_aliases: list[str] = []
        self._busy: set[str] = set()
        self._users_in_flight = False
        self._poll_failure = ""  # the last failure of the automatic refresh, said once
        self._current_peer: str | None = None
        self._quitting = False
        self._close_now = False
        self.register_dialog: RegisterDialog | None = None
        self.alias_dialog: AliasDialog | None = None
        self.settings_dialog: SettingsDialog | None = None
        self.takeover_box: QMessageBox | None = None

        self.refresh_timer = QTimer(self)
        self.refresh_timer.setInterval(refresh_ms)
        self.refresh_timer.timeout.connect(self._refresh_users)

        self._build()
        geometry = settings.value(GEOMETRY_KEY)
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        self._update_actions()
        self._update_status()

    # -- layout -------------------------------------------------------------------------------------

    def _build(self) -> None:
        self.setWindowTitle("dmds Messenger")
        self.setStyleSheet(_STYLE)
        self.resize(1060, 720)

        self.register_button = _action_button("REGISTER")
        self.unregister_button = _action_button("UNREGISTER")
        self.connect_button = _action_button("CONNECT")
        self.disconnect_button = _action_button("DISCONNECT")
        self.users_button = _action_button("CONNECTED USERS")
        self.settings_button = _action_button("SETTINGS…")
        self.register_button.setToolTip("Register a new user (full name, alias, birth date)")
        self.unregister_button.setToolTip("Remove a user and its stored messages")
        self.connect_button.setToolTip("Connect as a user, to send and receive messages")
        self.disconnect_button.setToolTip("Disconnect the connected user")
        self.users_button.setToolTip("Ask the server who is connected now (also refreshed by itself)")
        self.settings_button.setToolTip("Server, port and normaliser URL (while not connected)")
        actions = QHBoxLayout()
        for button in (
            self.register_button,
            self.unregister_button,
            self.connect_button,
            self.disconnect_button,
            self.users_button,
            self.settings_button,
        ):
            actions.addWidget(button)
        self.register_button.clicked.connect(self.open_register_dialog)
        self.unregister_button.clicked.connect(self.open_unregister_dialog)
        self.connect_button.clicked.connect(self.open_connect_dialog)
        self.disconnect_button.clicked.connect(self.disconnect_user)
        self.users_button.clicked.connect(lambda: self._refresh_users(manual=True))
        self.settings_button.clicked.connect(self.open_settings_dialog)

        self.notice = QLabel()
        self.notice.setObjectName("notice")
        self.notice.setWordWrap(True)
        self.notice.hide()

        # Left: contacts (one conversation each) and the connected users.
        self.contacts = QListWidget()
        self.contacts.currentItemChanged.connect(self._contact_chosen)
        self.users_label = QLabel("Connected users (connect to see them)")
        self.users_label.setObjectName("heading")
        self.users_list = QListWidget()
        self.users_list.itemActivated.connect(self._user_chosen)
        self.users_list.itemDoubleClicked.connect(self._user_chosen)
        self.users_list.setToolTip("Double-click a user to open the conversation")
        contacts_heading = QLabel("Conversations")
        contacts_heading.setObjectName("heading")
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(contacts_heading)
        left_layout.addWidget(self.contacts, 3)
        left_layout.addWidget(self.users_label)
        left_layout.addWidget(self.users_list, 2)

        # Right: the conversation on screen.
        self.conversation_title = QLabel("No conversation")
        self.conversation_title.setObjectName("heading")
        self.conversation_view = QTextBrowser()
        self.conversation_view.setObjectName("conversation")
        self.conversation_view.setOpenLinks(False)
        self.conversation_view.setPlaceholderText(
            "Choose a conversation on the left, double-click a connected user, or type an alias in Dest."
        )
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.conversation_title)
        right_layout.addWidget(self.conversation_view)

        chat = QSplitter(Qt.Orientation.Horizontal)
        chat.addWidget(left)
        chat.addWidget(right)
        chat.setStretchFactor(0, 1)
        chat.setStretchFactor(1, 3)
        chat.setSizes([260, 780])

        # The original's rows: destination and message; attached file.
        self.dest_edit = QLineEdit()
        self.dest_edit.setPlaceholderText("alias")
        self.dest_model = QStringListModel(self)
        completer = QCompleter(self.dest_model, self)
        completer.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.dest_edit.setCompleter(completer)
        self.message_edit = QLineEdit()
        self.message_edit.setPlaceholderText("message (Enter sends)")
        self.send_button = _action_button("SEND")
        self.dest_edit.textChanged.connect(self._update_actions)
        self.message_edit.textChanged.connect(self._update_actions)
        self.dest_edit.returnPressed.connect(self.message_edit.setFocus)
        self.message_edit.returnPressed.connect(self.send_message)
        self.send_button.clicked.connect(self.send_message)
        send_row = QHBoxLayout()
        send_row.addWidget(QLabel("Dest:"))
        send_row.addWidget(self.dest_edit, 1)
        send_row.addWidget(QLabel("Message:"))
        send_row.addWidget(self.message_edit, 3)
        send_row.addWidget(self.send_button)

        self.attach_edit = QLineEdit()
        self.attach_edit.setPlaceholderText("attachments come with the session protocol")
        self.browse_button = QPushButton("Browse")
        self.sendattach_button = _action_button("SENDATTACH")
        attach_row = QHBoxLayout()
        attach_row.addWidget(QLabel("Attached File:"))
        attach_row.addWidget(self.attach_edit, 1)
        attach_row.addWidget(self.browse_button)
        attach_row.addWidget(self.sendattach_button)
        for widget in (self.attach_edit, self.browse_button, self.sendattach_button):
            widget.setEnabled(False)
            widget.setToolTip(ATTACH_TOOLTIP)

        # The original's two logs.
        self.client_log = _log_view()
        self.server_log = _log_view()
        logs = QSplitter(Qt.Orientation.Horizontal)
        logs.addWidget(_grouped("Client: what this window did", self.client_log))
        logs.addWidget(_grouped("Server: what the server said", self.server_log))

        middle = QWidget()
        middle_layout = QVBoxLayout(middle)
        middle_layout.setContentsMargins(0, 0, 0, 0)
        middle_layout.addWidget(chat, 1)
        middle_layout.addLayout(send_row)
        middle_layout.addLayout(attach_row)
        body = QSplitter(Qt.Orientation.Vertical)
        body.addWidget(middle)
        body.addWidget(logs)
        body.setStretchFactor(0, 3)
        body.setStretchFactor(1, 1)
        body.setSizes([480, 160])

        self.quit_button = QPushButton("QUIT")
        self.quit_button.setObjectName("quit")
        self.quit_button.setToolTip("Disconnect and close the window")
        self.quit_button.clicked.connect(self.close)
        quit_row = QHBoxLayout()
        quit_row.addStretch(1)
        quit_row.addWidget(self.quit_button)
        quit_row.addStretch(1)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(actions)
        layout.addWidget(self.notice)
        layout.addWidget(body, 1)
        layout.addLayout(quit_row)
        self.setCentralWidget(central)

        self.connection_label = QLabel()
        self.normaliser_label = QLabel("Normaliser: not used yet")
        self.statusBar().addPermanentWidget(self.connection_label, 1)
        self.statusBar().addPermanentWidget(self.normaliser_label)

    # -- state shown ---------------------------------------------------------------------------------

    @property
    def server_text(self) -> str:
        return f"{self.settings.server}:{self.settings.port}"

    def _update_actions(self) -> None:
        connected = self.alias is not None
        idle = not self._quitting
        usable = connected and self.reachable and idle
        self.register_button.setEnabled(idle and "REGISTER" not in self._busy)
        self.unregister_button.setEnabled(idle and "UNREGISTER" not in self._busy)
        self.connect_button.setEnabled(idle and not connected and "CONNECT" not in self._busy)
        self.disconnect_button.setEnabled(idle and connected and "DISCONNECT" not in self._busy)
        self.users_button.setEnabled(usable)
        self.settings_button.setEnabled(idle and not connected and "CONNECT" not in self._busy)
        self.send_button.setEnabled(
            usable and bool(self.dest_edit.text().strip()) and bool(self.message_edit.text().strip())
        )
        self.message_edit.setEnabled(idle)
        self.dest_edit.setEnabled(idle)

    def _update_status(self) -> None:
        if self._quitting:
            text, colour = "Disconnecting…", "#555"
        elif self.alias is None:
            text, colour = f"○ Not connected · server {self.server_text}", "#555"
        elif not self.reachable:
            text, colour = f"⚠ {self.alias}: the server at {self.server_text} does not answer", "#b00020"
        else:
            text, colour = f"● Connected as {self.alias} · server {self.server_text}", "#1b7a2f"
        self.connection_label.setText(text)
        self.connection_label.setStyleSheet(f"color: {colour};")
        self.setWindowTitle(f"dmds Messenger — {self.alias}" if self.alias else "dmds Messenger")

    def show_notice(self, text: str) -> None:
        """A problem that stays on screen until the next one or the next success."""
        self.notice.setText(text)
        self.notice.show()
        self.statusBar().showMessage(text, STATUS_MS)

    def clear_notice(self) -> None:
        self.notice.clear()
        self.notice.hide()

    def say(self, text: str) -> None:
        self.statusBar().showMessage(text, STATUS_MS)

    def log_client(self, line: str) -> None:
        self.client_log.appendPlainText(f"c> {line}")

    def log_server(self, line: str) -> None:
        self.server_log.appendPlainText(f"s> {line}")

    # -- dialogs and actions -------------------------------------------------------------------------

    def open_register_dialog(self) -> RegisterDialog:
        dialog = RegisterDialog(self)
        dialog.accepted.connect(lambda: self._register(*dialog.values()))
        self.register_dialog = dialog
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def _register(self, full_name: str, alias: str, birth_date: str) -> None:
        self.log_client(f"REGISTER {alias}")
        self._busy.add("REGISTER")
        self._update_actions()
        self.worker.register(full_name, alias, birth_date)

    def open_unregister_dialog(self) -> AliasDialog:
        dialog = AliasDialog(
            "Unregister a user",
            "The user is removed from the service, with the messages stored for it.",
            self.alias or self.settings.last_alias,
            self,
        )
        dialog.accepted.connect(lambda: self._unregister(dialog.value()))
        self.alias_dialog = dialog
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def _unregister(self, alias: str) -> None:
        self.log_client(f"UNREGISTER {alias}")
        self._busy.add("UNREGISTER")
        self._update_actions()
        self.worker.unregister(alias)

    def open_connect_dialog(self) -> AliasDialog:
        dialog = AliasDialog(
            "Connect",
            f"Connect to {self.server_text} as:",
            self.settings.last_alias,
            self,
        )
        dialog.accepted.connect(lambda: self.connect_user(dialog.value()))
        self.alias_dialog = dialog
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def connect_user(self, alias: str, *, take_over: bool = False) -> None:
        if take_over:
            self.log_client(f"DISCONNECT {alias}")
        self.log_client(f"CONNECT {alias}")
        self._busy.add("CONNECT")
        self._update_actions()
        self.worker.connect_as(alias, take_over=take_over)

    def disconnect_user(self) -> None:
        if self.alias is None:
            return
        self.log_client(f"DISCONNECT {self.alias}")
        self._busy.add("DISCONNECT")
        self._update_actions()
        self.worker.disconnect_session()

    def open_settings_dialog(self) -> SettingsDialog:
        dialog = SettingsDialog(self.settings.server, self.settings.port, self.settings.ws_url, self)
        dialog.accepted.connect(lambda: self.apply_settings(*dialog.values()))
        self.settings_dialog = dialog
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def apply_settings(self, server: str, port: int, ws_url: str) -> None:
        """Use (and remember) another server, port and normaliser URL; only while not connected."""
        if self.alias is not None:
            self.show_notice("Settings can be changed only while not connected.")
            return
        self.settings.server, self.settings.port, self.settings.ws_url = server, port, ws_url
        self.settings.save(self._store)
        self.worker.configure(server, port, ws_url)
        self.normaliser_label.setText("Normaliser: not used yet")
        self.normaliser_label.setStyleSheet("")
        self.say(f"Settings saved: server {self.server_text}, normaliser {ws_url}")
        self._update_status()

    def send_message(self) -> None:
        dest, text = self.dest_edit.text().strip(), self.message_edit.text()
        if not self.send_button.isEnabled() or not dest or not text.strip():
            return
        message = self.conversations.add_outgoing(dest, text, datetime.now())
        self.log_client(f"SEND {dest} {text}")
        self.message_edit.clear()
        self._show_conversation(dest)
        self.worker.send(message.local_id, dest, text)

    def _refresh_users(self, *, manual: bool = False) -> None:
        if self.alias is None or (self._users_in_flight and not manual):
            return
        if manual:
            self.log_client("CONNECTEDUSERS")
        self._users_in_flight = True
        self.worker.connected_users(manual=manual)

    # -- events from the worker ----------------------------------------------------------------------

    def _on_event(self, event: object) -> None:
        if isinstance(event, OperationDone):
            self._operation_done(event)
        elif isinstance(event, ConnectionChanged):
            self._connection_changed(event)
        elif isinstance(event, SendDone):
            self._send_done(event)
        elif isinstance(event, UsersListed):
            self._users_listed(event)
        elif isinstance(event, MessageArrived):
            self._message_arrived(event)
        elif isinstance(event, ReceiptArrived):
            self._receipt_arrived(event)
        elif isinstance(event, NormaliserChanged):
            self._normaliser_changed(event)
        elif isinstance(event, ServerReachability):
            self._reachability_changed(event)

    def _operation_done(self, done: OperationDone) -> None:
        self._busy.discard(done.operation)
        if done.code == OK:
            self.log_server(f"{done.operation} OK")
            self.clear_notice()
            self._operation_succeeded(done)
        elif done.code is None:
            self.log_server(f"{done.operation} FAIL: {done.error}")
            self.show_notice(f"{done.operation} {done.alias} failed: {done.error}")
        else:
            self.log_server(f"{done.operation} FAIL: {describe(done.operation, done.code)}")
            self.show_notice(
                f"{done.operation} {done.alias} failed: {failure_text(done.operation, done.code)}"
            )
            if (done.operation, done.code) == ("CONNECT", 2):
                self._offer_takeover(done.alias)
        if self._quitting and done.operation == "DISCONNECT":
            self._close_when_done()
        self._update_actions()

    def _operation_succeeded(self, done: OperationDone) -> None:
        if done.operation == "REGISTER":
            self.say(f"Registered {done.alias}; CONNECT to use it.")
            self.settings.last_alias = done.alias
            self.settings.save(self._store)
        elif done.operation == "UNREGISTER":
            self.say(f"Unregistered {done.alias}.")
        elif done.operation == "CONNECT":
            self.settings.last_alias = done.alias
            self.settings.save(self._store)

    def _offer_takeover(self, alias: str) -> None:
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Already connected",
            f"The server says {alias} is already connected: by another client, or by one that ended "
            "without disconnecting.\n\nDisconnect that session and connect here?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self,
        )
        box.accepted.connect(lambda: self.connect_user(alias, take_over=True))
        self.takeover_box = box
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def _connection_changed(self, change: ConnectionChanged) -> None:
        self.alias = change.alias
        if change.alias is not None:
            self.reachable = True
            self.say(f"Connected as {change.alias}.")
            self.refresh_timer.start()
            self._refresh_users()
        else:
            self.refresh_timer.stop()
            self._users_in_flight = False
            self._set_connected_users([])
            if change.reason:
                self.log_server(f"DISCONNECTED: {change.reason}")
                self.show_notice(f"No longer connected: {change.reason}. CONNECT again when you wish.")
            else:
                self.say("Disconnected.")
            self.reachable = True
            if self._quitting:
                self._close_when_done()
        self._update_actions()
        self._update_status()
        self._refresh_contacts()

    def _send_done(self, done: SendDone) -> None:
        if done.code == OK:
            self.conversations.accepted(done.local_id, done.message_id, done.text)
            self.log_server(f"SEND OK - MESSAGE {done.message_id}")
        else:
            error = done.error if done.code is None else failure_text("SEND", done.code)
            self.conversations.failed(done.local_id, error)
            reason = done.error if done.code is None else describe("SEND", done.code)
            self.log_server(f"SEND FAIL: {reason}")
            if self.reachable:  # otherwise the notice says the server does not answer, which is why
                self.show_notice(f"Message to {done.dest} not sent: {error}")
        self._conversation_changed(done.dest)

    def _users_listed(self, listed: UsersListed) -> None:
        self._users_in_flight = False
        if listed.code == OK:
            self._poll_failure = ""
            self._set_connected_users(list(listed.aliases))
            if listed.manual:
                joined = ", ".join(listed.aliases)
                self.log_server(f"CONNECTED USERS ({len(listed.aliases)} users connected) OK - {joined}")
            return
        reason = listed.error if listed.code is None else describe("CONNECTEDUSERS", listed.code)
        if listed.manual:
            self.log_server(f"CONNECTED USERS FAIL: {reason}")
            self.show_notice(f"CONNECTED USERS failed: {reason}")
        elif listed.code is not None and reason != self._poll_failure:
            # The refresh repeats every few seconds: say a failure once, not at every refresh. (When
            # the server does not answer at all, the reachability notice says so instead.)
            self._poll_failure = reason
            self.log_server(f"CONNECTED USERS FAIL: {reason}")
            self.show_notice(
                f"The connected users cannot be listed: {failure_text('CONNECTEDUSERS', listed.code)}"
            )

    def _set_connected_users(self, aliases: list[str]) -> None:
        if aliases == self.connected_aliases and self.users_list.count() == len(aliases):
            return  # the usual refresh: nothing changed, nothing to redraw
        self.connected_aliases = aliases
        self.users_list.clear()
        for alias in aliases:
            item = QListWidgetItem(f"{alias}  (you)" if alias == self.alias else alias)
            item.setData(Qt.ItemDataRole.UserRole, alias)
            self.users_list.addItem(item)
        if self.alias is None:
            self.users_label.setText("Connected users (connect to see them)")
        else:
            self.users_label.setText(f"Connected users: {len(aliases)}")
        self._refresh_contacts()
        self._render_conversation()  # its title says whether the peer is connected

    def _message_arrived(self, pushed: MessageArrived) -> None:
        self.log_server(f"MESSAGE {pushed.message_id} FROM {pushed.sender}: {pushed.text}")
        if self._current_peer is None:
            self._current_peer = pushed.sender
            if not self.dest_edit.text():
                self.dest_edit.setText(pushed.sender)
        on_screen = pushed.sender == self._current_peer
        self.conversations.add_incoming(
            pushed.sender, pushed.message_id, pushed.text, datetime.now(), read=on_screen
        )
        if pushed.sender != self._current_peer:
            self.say(f"New message from {pushed.sender}.")
        self._conversation_changed(pushed.sender)

    def _receipt_arrived(self, receipt: ReceiptArrived) -> None:
        self.log_server(f"SEND MESSAGE {receipt.message_id} OK")
        message = self.conversations.receipt(receipt.message_id, self.connected_aliases)
        if message is not None:
            self._conversation_changed(message.peer)

    def _normaliser_changed(self, change: NormaliserChanged) -> None:
        if change.available:
            self.normaliser_label.setText("Normaliser: ok")
            self.normaliser_label.setStyleSheet("color: #1b7a2f;")
            self.normaliser_label.setToolTip(self.settings.ws_url)
        else:
            self.normaliser_label.setText("⚠ Normaliser unavailable: text sent as typed")
            self.normaliser_label.setStyleSheet("color: #b00020;")
            self.normaliser_label.setToolTip(change.detail)
            self.log_client(f"normaliser unavailable ({change.detail}); sending text as typed")

    def _reachability_changed(self, change: ServerReachability) -> None:
        self.reachable = change.reachable
        if change.reachable:
            self.log_server("the server answers again")
            self.clear_notice()
            self.say("The server answers again.")
        else:
            self.log_server(f"no answer: {change.detail}")
            seconds = self.refresh_timer.interval() / 1000
            retry = f" Retrying every {seconds:g} s; DISCONNECT to stop." if self.alias else ""
            self.show_notice(f"The server does not answer: {change.detail}.{retry}")
        self._update_actions()
        self._update_status()

    # -- contacts and the conversation -------------------------------------------------------------------

    def _conversation_changed(self, peer: str) -> None:
        self._refresh_contacts()
        if peer == self._current_peer:
            self._render_conversation()

    def _show_conversation(self, peer: str) -> None:
        self.conversations.open(peer)
        self._current_peer = peer
        self._refresh_contacts()
        self._render_conversation()

    def _refresh_contacts(self) -> None:
        known = set(self.conversations.peers()) | set(self.connected_aliases)
        self.dest_model.setStringList(sorted(known - {self.alias} if self.alias else known))
        self.contacts.blockSignals(True)
        try:
            self.contacts.clear()
            for peer in self.conversations.peers():
                unread = self.conversations.unread(peer)
                online = "●" if peer in self.connected_aliases else "○"
                item = QListWidgetItem(f"{online} {peer}" + (f"  ({unread} new)" if unread else ""))
                item.setData(Qt.ItemDataRole.UserRole, peer)
                item.setToolTip("connected" if peer in self.connected_aliases else "not connected")
                if unread:
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.contacts.addItem(item)
                if peer == self._current_peer:
                    self.contacts.setCurrentItem(item)
        finally:
            self.contacts.blockSignals(False)

    def _contact_chosen(self, current: QListWidgetItem | None, previous: QListWidgetItem | None) -> None:
        if current is None:
            return
        peer = str(current.data(Qt.ItemDataRole.UserRole))
        self._current_peer = peer
        self.dest_edit.setText(peer)
        self.conversations.mark_read(peer)
        self._render_conversation()
        QTimer.singleShot(0, self._refresh_contacts)  # not while Qt is inside the list's signal
        self.message_edit.setFocus()

    def _user_chosen(self, item: QListWidgetItem) -> None:
        peer = str(item.data(Qt.ItemDataRole.UserRole))
        if peer != self.alias:
            self.dest_edit.setText(peer)
            self._show_conversation(peer)
            self.message_edit.setFocus()

    def conversation_text(self) -> str:
        """The conversation on screen as plain text (what a person reads)."""
        return self.conversation_view.toPlainText()

    def _render_conversation(self) -> None:
        peer = self._current_peer
        if peer is None:
            self.conversation_title.setText("No conversation")
            self.conversation_view.clear()
            return
        self.conversations.mark_read(peer)
        state = "connected" if peer in self.connected_aliases else "not connected"
        self.conversation_title.setText(f"Conversation with {peer} ({state})")
        rows = [_message_html(message) for message in self.conversations.messages(peer)]
        self.conversation_view.setHtml("".join(rows) or "<p style='color:#888'>No messages yet.</p>")
        bar = self.conversation_view.verticalScrollBar()
        bar.setValue(bar.maximum())

    # -- the end --------------------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        """QUIT or the window's close button: DISCONNECT first (without blocking), then close."""
        if self._close_now or self.alias is None or not self.worker.alive:
            self._finish()
            event.accept()
            return
        event.ignore()
        if self._quitting:
            return
        self._quitting = True
        self.log_client(f"DISCONNECT {self.alias}")
        self.worker.disconnect_session()
        QTimer.singleShot(int((self._timeout_s + 1) * 1000), self._close_when_done)
        self._update_actions()
        self._update_status()

    def _close_when_done(self) -> None:
        if not self._close_now:
            self._close_now = True
            # Not from inside a close event (a nested close() is ignored): from the event loop.
            QTimer.singleShot(0, self.close)

    def _finish(self) -> None:
        self.refresh_timer.stop()
        self.settings.save(self._store)
        self._store.setValue(GEOMETRY_KEY, self.saveGeometry())
        self._store.sync()
        # After the DISCONNECT of closeEvent (done, failed or timed out) there is nothing more to tell
        # the server; otherwise a CONNECT may have just succeeded: DISCONNECT it, briefly.
        self.worker.stop(disconnect=not self._quitting, timeout_s=CLOSE_TIMEOUT_S)

    def shutdown(self) -> None:
        """Close at once: DISCONNECT if connected (waiting for it, briefly), stop the worker, close."""
        self.refresh_timer.stop()
        self.worker.stop(disconnect=True, timeout_s=min(self._timeout_s, 3.0))
        self._close_now = True
        self.close()


def _message_html(message: ChatMessage) -> str:
    when = message.time.strftime("%H:%M:%S")
    number = f"#{message.message_id}" if message.message_id is not None else ""
    text = html.escape(message.text).replace("\n", "<br>")
    if message.direction is Direction.IN:
        header = f"<b>{html.escape(message.peer)}</b> · {number} · {when}"
        cells = f"<td bgcolor='#ffffff' style='padding:6px'>{header}<br>{text}</td><td width='25%'></td>"
    else:
        if message.status is Status.DELIVERED:
            state = f"<span style='color:#1b7a2f'><b>{DELIVERED_MARK}</b> delivered</span>"
        elif message.status is Status.SENT:
            state = "<span style='color:#666'>sent, not delivered yet</span>"
        elif message.status is Status.FAILED:
            state = f"<span style='color:#b00020'>✗ not sent: {html.escape(message.error)}</span>"
        else:
            state = "<span style='color:#666'>sending…</span>"
        parts = " · ".join(part for part in ("<b>You</b>", number, when, state) if part)
        cells = f"<td width='25%'></td><td bgcolor='#dcf0ff' style='padding:6px'>{parts}<br>{text}</td>"
    return f"<table width='100%' cellspacing='4' cellpadding='6'><tr>{cells}</tr></table>"
