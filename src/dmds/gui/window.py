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

Session mode
------------
With the session protocol (`Mode.SESSION`: the settings dialog, or ``dmds gui --session``) the same
window logs in with a password: REGISTER asks for one (twice), CONNECT becomes LOG IN (alias and
password), DISCONNECT becomes LOG OUT, UNREGISTER deletes the account (its password confirms it).
The connected users come from the presence subscription, pushed by the server. A conversation on
screen marks its incoming messages read (the server tells their senders), and sent messages show ✓
once delivered and ✓✓ once read. SENDATTACH uploads the file of the attached-file row (Browse picks
it) and sends it with the message text; a received file is a link in the conversation that fetches
it and saves it where the person says. When the connection drops, the client library reconnects and
resumes the session; the status bar says "reconnecting…", then "connected". Passwords go to the
worker and the server only: they are neither logged nor remembered.

All network work happens in the worker's thread (`ClassicWorker` for the classic protocol,
`SessionWorker` for the session protocol); the window only reacts to its events.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final

from PySide6.QtCore import QByteArray, QSettings, QStandardPaths, QStringListModel, Qt, QTimer, QUrl
from PySide6.QtGui import QCloseEvent, QFont
from PySide6.QtWidgets import (
    QCompleter,
    QFileDialog,
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
from dmds.client.session import describe_error
from dmds.gui.classic_worker import ClassicWorker
from dmds.gui.conversations import AttachedFile, ChatMessage, Conversations, Direction, Status, human_size
from dmds.gui.dialogs import AliasDialog, LoginDialog, RegisterDialog, SettingsDialog
from dmds.gui.events import (
    AttachmentSaved,
    ConnectionChanged,
    LinkChanged,
    MessageArrived,
    NormaliserChanged,
    OperationDone,
    PresenceUpdate,
    ReceiptArrived,
    SendDone,
    ServerLimits,
    ServerReachability,
    UsersListed,
)
from dmds.gui.session_worker import SessionWorker, too_big
from dmds.gui.settings import GuiSettings, Mode
from dmds.protocols.session.codes import ErrorCode

__all__ = [
    "ATTACH_TOOLTIP",
    "CONNECTED_USERS_REFRESH_MS",
    "DELIVERED_MARK",
    "READ_MARK",
    "MainWindow",
    "failure_text",
    "session_failure_text",
]

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
READ_MARK: Final = "✓✓"
#: The scheme of the links to received (and sent) files in the conversation: attachment:<id>.
ATTACHMENT_SCHEME: Final = "attachment"

#: What to do about some failures, after the reason in words.
_HINTS: Final[dict[tuple[str, int], str]] = {
    ("CONNECT", 1): "REGISTER it first",
    ("UNREGISTER", 1): "check the alias",
    ("SEND", 1): "check the destination alias",
    ("CONNECTEDUSERS", 1): "CONNECT again",
}

#: Session mode: what to do about some refusals, after the reason in words.
_SESSION_HINTS: Final[dict[tuple[str, ErrorCode], str]] = {
    ("LOG IN", ErrorCode.BAD_CREDENTIALS): (
        "check both (a user registered over the classic protocol has no password and cannot log in)"
    ),
    ("UNREGISTER", ErrorCode.BAD_CREDENTIALS): "check the alias and the password",
    ("REGISTER", ErrorCode.ALIAS_TAKEN): "choose another alias",
    ("SEND", ErrorCode.UNKNOWN_USER): "check the destination alias",
    ("SEND", ErrorCode.NOT_LOGGED_IN): "LOG IN again",
    ("LOG IN", ErrorCode.BAD_TOKEN): "LOG IN again with the password",
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


def session_failure_text(operation: str, code: ErrorCode, text: str = "") -> str:
    """A session-protocol refusal of `operation` in words: `text` (the library's words for the
    server's Error, from `dmds.client.session.ERROR_TEXT`), with what to do when there is a rule."""
    text = text or describe_error(code)
    hint = _SESSION_HINTS.get((operation, code))
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
        mode: Mode | None = None,
    ) -> None:
        """`port` is the port of the protocol in use (`mode`, or the remembered one)."""
        super().__init__()
        self._store = settings
        self.settings = GuiSettings.load(settings)
        # Flags given on the command line win over (and replace) what was remembered.
        if mode is not None:
            self.settings.mode = mode
        if server is not None:
            self.settings.server = server
        if port is not None and self.settings.mode is Mode.SESSION:
            self.settings.session_port = port
        elif port is not None:
            self.settings.port = port
        if ws_url is not None:
            self.settings.ws_url = ws_url
        self.settings.save(settings)
        self._timeout_s = timeout_s
        self._listen_host = listen_host
        self._custom_normaliser = normaliser
        self.worker: ClassicWorker | SessionWorker = self._make_worker()
        #: the server's largest attachment (session mode; 0 until known)
        self.max_attachment_bytes = 0
        # Hooks that replace the file dialogs (tests set them). None: ask with a QFileDialog. (Not
        # bound methods of this window by default: the window would then be in a reference cycle,
        # freed by Python's cyclic GC in whichever thread it runs, which Qt objects do not survive.)
        #: where to save a received file (its name suggested); "" to cancel
        self.choose_save_path: Callable[[str], str] | None = None
        #: which file to attach; "" to cancel
        self.choose_attachment: Callable[[], str] | None = None

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
        self.login_dialog: LoginDialog | None = None
        self.settings_dialog: SettingsDialog | None = None
        self.takeover_box: QMessageBox | None = None

        self.refresh_timer = QTimer(self)
        self.refresh_timer.setInterval(refresh_ms)
        self.refresh_timer.timeout.connect(self._refresh_users)

        self._build()
        self._apply_mode()
        geometry = settings.value(GEOMETRY_KEY)
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        self._update_actions()
        self._update_status()

    # -- the protocol ---------------------------------------------------------------------------------

    @property
    def session_mode(self) -> bool:
        """True when the window speaks the session protocol."""
        return self.settings.mode is Mode.SESSION

    @property
    def op_connect(self) -> str:
        return "LOG IN" if self.session_mode else "CONNECT"

    @property
    def op_disconnect(self) -> str:
        return "LOG OUT" if self.session_mode else "DISCONNECT"

    def _make_worker(self) -> ClassicWorker | SessionWorker:
        worker: ClassicWorker | SessionWorker
        if self.session_mode:
            worker = SessionWorker(
                self.settings.server,
                self.settings.session_port,
                self.settings.ws_url,
                timeout_s=self._timeout_s,
                normaliser=self._custom_normaliser,
                parent=self,
            )
        else:
            worker = ClassicWorker(
                self.settings.server,
                self.settings.port,
                self.settings.ws_url,
                listen_host=self._listen_host,
                timeout_s=self._timeout_s,
                normaliser=self._custom_normaliser,
                parent=self,
            )
        worker.report.connect(self._on_event)
        return worker

    def _session_worker(self) -> SessionWorker | None:
        return self.worker if isinstance(self.worker, SessionWorker) else None

    def _replace_worker(self) -> None:
        """The protocol changed (only while not connected): a new worker for it."""
        old = self.worker
        old.report.disconnect(self._on_event)
        old.stop(disconnect=False, timeout_s=CLOSE_TIMEOUT_S)
        old.deleteLater()
        self.worker = self._make_worker()
        self.max_attachment_bytes = 0
        self._busy.clear()
        self._users_in_flight = False
        self.connected_aliases = []
        self.users_list.clear()
        self._apply_mode()

    def _apply_mode(self) -> None:
        """Label the buttons and the attachment row for the protocol in use."""
        session = self.session_mode
        self.connect_button.setText(self.op_connect)
        self.disconnect_button.setText(self.op_disconnect)
        if session:
            self.register_button.setToolTip("Register a new user (full name, alias, birth date, password)")
            self.unregister_button.setToolTip("Delete an account and its messages (asks its password)")
            self.connect_button.setToolTip("Log in with an alias and its password")
            self.disconnect_button.setToolTip("Log out (the session ends on the server)")
            self.users_button.setToolTip("Who is online now (the server tells this window as it changes)")
            self.attach_edit.setPlaceholderText("a file to send with the message (Browse… picks one)")
            self.attach_edit.setToolTip("The file SENDATTACH sends to Dest, with the message text")
            self.browse_button.setToolTip("Choose the file to send")
            self._update_attach_tooltip()
            self.users_label.setText("Connected users (log in to see them)")
        else:
            self.register_button.setToolTip("Register a new user (full name, alias, birth date)")
            self.unregister_button.setToolTip("Remove a user and its stored messages")
            self.connect_button.setToolTip("Connect as a user, to send and receive messages")
            self.disconnect_button.setToolTip("Disconnect the connected user")
            self.users_button.setToolTip("Ask the server who is connected now (also refreshed by itself)")
            self.attach_edit.setPlaceholderText("attachments come with the session protocol")
            for widget in (self.attach_edit, self.browse_button, self.sendattach_button):
                widget.setToolTip(ATTACH_TOOLTIP)
            self.users_label.setText("Connected users (connect to see them)")
        self._update_actions()
        self._update_status()

    def _update_attach_tooltip(self) -> None:
        limit = f" (at most {human_size(self.max_attachment_bytes)})" if self.max_attachment_bytes else ""
        self.sendattach_button.setToolTip(f"Send the attached file{limit} to Dest, with the message text")

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
        self.conversation_view.anchorClicked.connect(self._anchor_clicked)
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
        self.attach_edit.textChanged.connect(self._update_actions)
        self.attach_edit.returnPressed.connect(self.send_attachment)
        self.browse_button.clicked.connect(self.browse_attachment)
        self.sendattach_button.clicked.connect(self.send_attachment)

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
        return f"{self.settings.server}:{self.settings.active_port}"

    def _update_actions(self) -> None:
        connected = self.alias is not None
        idle = not self._quitting
        usable = connected and self.reachable and idle
        session = self.session_mode
        # Session mode: a message typed while the connection is coming back waits in the client
        # library and goes once it is back (never twice), so SEND stays available.
        sendable = connected and idle if session else usable
        has_dest = bool(self.dest_edit.text().strip())
        self.register_button.setEnabled(idle and "REGISTER" not in self._busy)
        self.unregister_button.setEnabled(idle and "UNREGISTER" not in self._busy)
        self.connect_button.setEnabled(idle and not connected and self.op_connect not in self._busy)
        self.disconnect_button.setEnabled(idle and connected and self.op_disconnect not in self._busy)
        self.users_button.setEnabled(sendable)
        self.settings_button.setEnabled(idle and not connected and self.op_connect not in self._busy)
        self.send_button.setEnabled(sendable and has_dest and bool(self.message_edit.text().strip()))
        self.message_edit.setEnabled(idle)
        self.dest_edit.setEnabled(idle)
        self.attach_edit.setEnabled(session and idle)
        self.browse_button.setEnabled(session and idle)
        self.sendattach_button.setEnabled(
            session and sendable and has_dest and bool(self.attach_edit.text().strip())
        )

    def _update_status(self) -> None:
        if self.session_mode:
            self._update_session_status()
            return
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

    def _update_session_status(self) -> None:
        where = f"session server {self.server_text}"
        if self._quitting:
            text, colour = "Logging out…", "#555"
        elif self.alias is None:
            text, colour = f"○ Not logged in · {where}", "#555"
        elif not self.reachable:
            text, colour = f"⚠ {self.alias}: connection lost · reconnecting… · {where}", "#b00020"
        else:
            text, colour = f"● Logged in as {self.alias} · connected · {where}", "#1b7a2f"
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
        dialog = RegisterDialog(self, with_password=self.session_mode)
        dialog.accepted.connect(lambda: self._register(*dialog.values(), dialog.password_value()))
        self.register_dialog = dialog
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def _register(self, full_name: str, alias: str, birth_date: str, password: str = "") -> None:
        self.log_client(f"REGISTER {alias}")  # the password is never logged
        self._busy.add("REGISTER")
        self._update_actions()
        session = self._session_worker()
        if session is not None:
            session.register(full_name, alias, birth_date, password)
        elif isinstance(self.worker, ClassicWorker):
            self.worker.register(full_name, alias, birth_date)

    def open_unregister_dialog(self) -> AliasDialog | LoginDialog:
        if self.session_mode:
            return self._open_login_dialog(
                "Unregister (delete the account)",
                "The account is deleted, with the messages stored for it. Its password confirms it.",
                self.alias or self.settings.last_alias,
                self._unregister_account,
                fixed_alias=self.alias is not None,
            )
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
        if isinstance(self.worker, ClassicWorker):
            self.worker.unregister(alias)

    def _unregister_account(self, alias: str, password: str) -> None:
        session = self._session_worker()
        if session is None:
            return
        self.log_client(f"UNREGISTER {alias}")
        self._busy.add("UNREGISTER")
        self._update_actions()
        session.unregister(alias, password)

    def _open_login_dialog(
        self,
        title: str,
        intro: str,
        alias: str,
        then: Callable[[str, str], None],
        *,
        fixed_alias: bool = False,
    ) -> LoginDialog:
        dialog = LoginDialog(title, intro, alias, self, fixed_alias=fixed_alias)
        dialog.accepted.connect(lambda: then(*dialog.values()))
        self.login_dialog = dialog
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def open_connect_dialog(self) -> AliasDialog | LoginDialog:
        if self.session_mode:
            return self._open_login_dialog(
                "Log in", f"Log in to {self.server_text} as:", self.settings.last_alias, self.log_in
            )
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
        """Classic CONNECT (with `take_over`, DISCONNECT the alias first)."""
        if not isinstance(self.worker, ClassicWorker):
            return
        if take_over:
            self.log_client(f"DISCONNECT {alias}")
        self.log_client(f"CONNECT {alias}")
        self._busy.add("CONNECT")
        self._update_actions()
        self.worker.connect_as(alias, take_over=take_over)

    def log_in(self, alias: str, password: str) -> None:
        """Session LOG IN with the password (which is not logged, nor kept)."""
        session = self._session_worker()
        if session is None:
            return
        self.log_client(f"LOG IN {alias}")
        self._busy.add("LOG IN")
        self._update_actions()
        session.log_in(alias, password)

    def disconnect_user(self) -> None:
        """DISCONNECT (classic) or LOG OUT (session) the user of this window."""
        if self.alias is None:
            return
        self.log_client(f"{self.op_disconnect} {self.alias}")
        self._busy.add(self.op_disconnect)
        self._update_actions()
        self._end_session()

    def _end_session(self) -> None:
        session = self._session_worker()
        if session is not None:
            session.log_out()
        elif isinstance(self.worker, ClassicWorker):
            self.worker.disconnect_session()

    def open_settings_dialog(self) -> SettingsDialog:
        dialog = SettingsDialog(
            self.settings.server,
            self.settings.port,
            self.settings.ws_url,
            self,
            mode=self.settings.mode,
            session_port=self.settings.session_port,
        )
        dialog.accepted.connect(
            lambda: self.apply_settings(
                *dialog.values(), mode=dialog.mode(), session_port=dialog.session_port_value()
            )
        )
        self.settings_dialog = dialog
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()
        return dialog

    def apply_settings(
        self,
        server: str,
        port: int,
        ws_url: str,
        *,
        mode: Mode | None = None,
        session_port: int | None = None,
    ) -> None:
        """Use (and remember) another server, classic port, normaliser URL and (if given) protocol
        and session port; only while not connected."""
        if self.alias is not None:
            self.show_notice("Settings can be changed only while not connected.")
            return
        previous = self.settings.mode
        self.settings.server, self.settings.port, self.settings.ws_url = server, port, ws_url
        if mode is not None:
            self.settings.mode = mode
        if session_port is not None:
            self.settings.session_port = session_port
        self.settings.save(self._store)
        if self.settings.mode is previous:
            self.worker.configure(server, self.settings.active_port, ws_url)
        else:
            self._replace_worker()
        self.normaliser_label.setText("Normaliser: not used yet")
        self.normaliser_label.setStyleSheet("")
        protocol = f"{self.settings.mode.value} protocol, " if mode is not None else ""
        self.say(f"Settings saved: {protocol}server {self.server_text}, normaliser {ws_url}")
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

    def browse_attachment(self) -> None:
        """Browse: choose the file SENDATTACH sends."""
        path = self.choose_attachment() if self.choose_attachment else self._ask_attachment()
        if path:
            self.attach_edit.setText(path)
            self.message_edit.setFocus()

    def _ask_attachment(self) -> str:
        path, _ = QFileDialog.getOpenFileName(self, "Attach a file")
        return path

    def send_attachment(self) -> None:
        """SENDATTACH (session mode): the attached file, with the message text, to Dest."""
        session = self._session_worker()
        if session is None or not self.sendattach_button.isEnabled():
            return
        dest, text = self.dest_edit.text().strip(), self.message_edit.text()
        typed = self.attach_edit.text().strip()
        path = Path(typed).expanduser()
        try:
            size = path.stat().st_size if path.is_file() else -1
        except OSError:
            size = -1
        if size < 0:
            self.show_notice(f"Cannot attach {typed}: not a file that can be read")
            return
        if self.max_attachment_bytes and size > self.max_attachment_bytes:
            self.show_notice(f"Not sent: {too_big(path.name, size, self.max_attachment_bytes)}")
            return
        pending = AttachedFile(0, path.name, size)
        message = self.conversations.add_outgoing(dest, text, datetime.now(), attachment=pending)
        self.log_client(f"SENDATTACH {dest} {path.name} {text}".rstrip())
        self.message_edit.clear()
        self.attach_edit.clear()
        self._show_conversation(dest)
        session.send(message.local_id, dest, text, str(path))

    def _anchor_clicked(self, url: QUrl) -> None:
        if url.scheme() == ATTACHMENT_SCHEME and url.path().isdigit():
            self.save_attachment(int(url.path()))

    def save_attachment(self, attachment_id: int) -> None:
        """Fetch an attachment of the conversation and save it where the person says."""
        session = self._session_worker()
        attached = self.conversations.attachment(attachment_id)
        if session is None or attached is None:
            return
        if self.alias is None:
            self.show_notice(f"{self.op_connect} to fetch {attached.name}.")
            return
        choose = self.choose_save_path or self._ask_save_path
        path = choose(attached.name)
        if not path:
            return
        self.log_client(f"FETCH {attachment_id} ({attached.name}) -> {path}")
        session.save_attachment(attachment_id, path)

    def _ask_save_path(self, name: str) -> str:
        folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DownloadLocation)
        suggested = str(Path(folder) / Path(name).name) if folder else Path(name).name
        path, _ = QFileDialog.getSaveFileName(self, f"Save {name}", suggested)
        return path

    def _refresh_users(self, *, manual: bool = False) -> None:
        if self.alias is None or (self._users_in_flight and not manual):
            return
        if manual:
            self.log_client("CONNECTEDUSERS")
        self._users_in_flight = True
        self.worker.connected_users(manual=manual)

    # -- events from the worker ----------------------------------------------------------------------

    def _on_event(self, event: object) -> None:
        sender = self.sender()
        if sender is not None and sender is not self.worker:
            return  # the last words of a worker replaced when the protocol changed
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
        elif isinstance(event, PresenceUpdate):
            self._presence_update(event)
        elif isinstance(event, LinkChanged):
            self._link_changed(event)
        elif isinstance(event, ServerLimits):
            self._server_limits(event)
        elif isinstance(event, AttachmentSaved):
            self._attachment_saved(event)

    def _operation_done(self, done: OperationDone) -> None:
        self._busy.discard(done.operation)
        if done.code == OK:
            self.log_server(f"{done.operation} OK")
            self.clear_notice()
            self._operation_succeeded(done)
        elif done.code is None:
            self.log_server(f"{done.operation} FAIL: {done.error}")
            error = (
                done.error
                if done.error_code is None
                else session_failure_text(done.operation, done.error_code, done.error)
            )
            self.show_notice(f"{done.operation} {done.alias} failed: {error}")
        else:
            self.log_server(f"{done.operation} FAIL: {describe(done.operation, done.code)}")
            self.show_notice(
                f"{done.operation} {done.alias} failed: {failure_text(done.operation, done.code)}"
            )
            if (done.operation, done.code) == ("CONNECT", 2):
                self._offer_takeover(done.alias)
        if self._quitting and done.operation == self.op_disconnect:
            self._close_when_done()
        self._update_actions()

    def _operation_succeeded(self, done: OperationDone) -> None:
        if done.operation == "REGISTER":
            self.say(f"Registered {done.alias}; {self.op_connect} to use it.")
            self.settings.last_alias = done.alias
            self.settings.save(self._store)
        elif done.operation == "UNREGISTER":
            self.say(f"Unregistered {done.alias}.")
        elif done.operation == self.op_connect:
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
        session = self.session_mode
        if change.alias is not None:
            self.reachable = True
            self.say(f"{'Logged in' if session else 'Connected'} as {change.alias}.")
            if not session:  # session mode: presence is pushed, nothing to poll
                self.refresh_timer.start()
                self._refresh_users()
        else:
            self.refresh_timer.stop()
            self._users_in_flight = False
            self._set_connected_users([])
            if change.reason:
                self.log_server(f"{'LOGGED OUT' if session else 'DISCONNECTED'}: {change.reason}")
                state = "logged in" if session else "connected"
                self.show_notice(
                    f"No longer {state}: {change.reason}. {self.op_connect} again when you wish."
                )
            else:
                self.say("Logged out." if session else "Disconnected.")
            self.reachable = True
            if self._quitting:
                self._close_when_done()
        self._update_actions()
        self._update_status()
        self._refresh_contacts()
        if session and change.alias is not None:
            # Messages pushed right after the login may have come before this report: the
            # conversation on screen marks them read now.
            self._render_conversation()

    def _send_done(self, done: SendDone) -> None:
        if done.code == OK:
            self.conversations.accepted(done.local_id, done.message_id, done.text, done.attachment)
            self.log_server(f"SEND OK - MESSAGE {done.message_id}")
        else:
            if done.code is not None:
                error = failure_text("SEND", done.code)
            elif done.error_code is not None:
                error = session_failure_text("SEND", done.error_code, done.error)
            else:
                error = done.error
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
            self.users_label.setText(f"Connected users ({self.op_connect.lower()} to see them)")
        else:
            self.users_label.setText(f"Connected users: {len(aliases)}")
        self._refresh_contacts()
        self._render_conversation()  # its title says whether the peer is connected

    def _message_arrived(self, pushed: MessageArrived) -> None:
        attached = pushed.attachment
        extra = f" [attachment {attached.name}, {attached.size} bytes]" if attached else ""
        self.log_server(f"MESSAGE {pushed.message_id} FROM {pushed.sender}: {pushed.text}{extra}")
        if self._current_peer is None:
            self._current_peer = pushed.sender
            if not self.dest_edit.text():
                self.dest_edit.setText(pushed.sender)
        on_screen = pushed.sender == self._current_peer
        self.conversations.add_incoming(
            pushed.sender,
            pushed.message_id,
            pushed.text,
            datetime.now(),
            read=on_screen,
            attachment=attached,
        )
        if pushed.sender != self._current_peer:
            self.say(f"New message from {pushed.sender}.")
        self._conversation_changed(pushed.sender)

    def _receipt_arrived(self, receipt: ReceiptArrived) -> None:
        if receipt.to is None:  # classic: the id alone
            self.log_server(f"SEND MESSAGE {receipt.message_id} OK")
            message = self.conversations.receipt(receipt.message_id, self.connected_aliases)
        else:
            how = "READ BY" if receipt.read else "DELIVERED TO"
            self.log_server(f"SEND MESSAGE {receipt.message_id} {how} {receipt.to}")
            message = self.conversations.session_receipt(receipt.to, receipt.message_id, read=receipt.read)
        if message is not None:
            self._conversation_changed(message.peer)

    def _presence_update(self, update: PresenceUpdate) -> None:
        if self.alias is None:
            return
        if update.alias:
            self.log_server(f"{'ONLINE' if update.online else 'OFFLINE'} {update.alias}")
        self._set_connected_users(list(update.aliases))

    def _link_changed(self, change: LinkChanged) -> None:
        if self.alias is None:
            return
        self.reachable = change.up
        if change.up:
            self.log_server("connected again (session resumed)")
            self.clear_notice()
            self.say("Connected again.")
        else:
            self.log_server(f"connection lost ({change.detail}); reconnecting")
            self.show_notice(
                f"The connection to the server was lost ({change.detail}); reconnecting… Messages sent"
                " meanwhile go once it is back."
            )
        self._update_actions()
        self._update_status()

    def _server_limits(self, limits: ServerLimits) -> None:
        self.max_attachment_bytes = limits.max_attachment_bytes
        if self.session_mode:
            self._update_attach_tooltip()

    def _attachment_saved(self, saved: AttachmentSaved) -> None:
        attached = self.conversations.attachment(saved.attachment_id)
        name = attached.name if attached is not None else f"attachment {saved.attachment_id}"
        if saved.error:
            self.log_server(f"FETCH {saved.attachment_id} FAIL: {saved.error}")
            self.show_notice(f"{name} not saved: {saved.error}")
        else:
            self.log_server(f"FETCH {saved.attachment_id} OK - {saved.size} bytes saved to {saved.path}")
            self.say(f"Saved {name} ({human_size(saved.size)}) to {saved.path}")

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
        self._mark_read(peer)
        state = "connected" if peer in self.connected_aliases else "not connected"
        self.conversation_title.setText(f"Conversation with {peer} ({state})")
        rows = [_message_html(message) for message in self.conversations.messages(peer)]
        self.conversation_view.setHtml("".join(rows) or "<p style='color:#888'>No messages yet.</p>")
        bar = self.conversation_view.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _mark_read(self, peer: str) -> None:
        """The conversation with `peer` is on screen: its messages are read (session mode: the
        server is told, and their senders get read receipts)."""
        session = self._session_worker()
        if session is not None and self.alias is None:
            return  # not yet: once the login is reported (see _connection_changed)
        fresh = self.conversations.mark_read(peer)
        if fresh and session is not None:
            self.log_client(f"READ {', '.join(map(str, fresh))} FROM {peer}")
            session.mark_read(fresh)

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
        self.log_client(f"{self.op_disconnect} {self.alias}")
        self._end_session()
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


def _attachment_html(message: ChatMessage) -> str:
    attached = message.attachment
    if attached is None:
        return ""
    label = f"{html.escape(attached.name)} ({human_size(attached.size)})"
    if attached.attachment_id:
        shown = (
            f"<a href='{ATTACHMENT_SCHEME}:{attached.attachment_id}'><b>{label}</b></a>"
            " <span style='color:#666'>· click to save</span>"
        )
    elif message.status is Status.FAILED:
        shown = f"{label} <span style='color:#666'>· not sent</span>"
    else:
        shown = f"{label} <span style='color:#666'>· uploading…</span>"
    return f"<br><span style='color:#555'>Attachment:</span> {shown}"


def _message_html(message: ChatMessage) -> str:
    when = message.time.strftime("%H:%M:%S")
    number = f"#{message.message_id}" if message.message_id is not None else ""
    text = html.escape(message.text).replace("\n", "<br>") + _attachment_html(message)
    if message.direction is Direction.IN:
        header = f"<b>{html.escape(message.peer)}</b> · {number} · {when}"
        cells = f"<td bgcolor='#ffffff' style='padding:6px'>{header}<br>{text}</td><td width='25%'></td>"
    else:
        if message.status is Status.READ:
            state = f"<span style='color:#1565c0'><b>{READ_MARK}</b> read</span>"
        elif message.status is Status.DELIVERED:
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
