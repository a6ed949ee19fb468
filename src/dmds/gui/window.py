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

With the session protocol (`Mode.SESSION`: the settings dialog, or ``dmds gui --session``) the same
window logs in with a password; `dmds.gui.session_mode` says what else changes.

The window itself is protocol-neutral: what differs goes through its mode (`dmds.gui.mode`;
`classic_mode` and `session_mode`), which owns the worker whose thread does all network work; the
window only shows its events (`dmds.gui.reactions`). Its parts are built in `dmds.gui.panels`;
its Settings dialog is applied by `dmds.gui.settings_change`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Final

from PySide6.QtCore import QByteArray, QSettings, QTimer, QUrl
from PySide6.QtGui import QCloseEvent
from PySide6.QtWidgets import (
    QFileDialog,
    QMainWindow,
    QMessageBox,
)

from dmds.client.classic import DEFAULT_TIMEOUT_S
from dmds.client.normalise import TextNormaliser
from dmds.gui.chat import ChatView
from dmds.gui.classic_mode import ClassicMode
from dmds.gui.classic_worker import ClassicWorker
from dmds.gui.conversations import Conversations
from dmds.gui.dialogs import AliasDialog, LoginDialog, RegisterDialog, SettingsDialog
from dmds.gui.events import WorkerEvent
from dmds.gui.message_html import ATTACHMENT_SCHEME
from dmds.gui.mode import WindowMode, shown
from dmds.gui.panels import STYLE, ActionBar, LogPanel, StatusLine, central_widget, notice_label, quit_button
from dmds.gui.reactions import react
from dmds.gui.session_mode import SessionMode
from dmds.gui.session_worker import SessionWorker
from dmds.gui.settings import GuiSettings, Mode
from dmds.gui.settings_change import open_settings_dialog

__all__ = ["CONNECTED_USERS_REFRESH_MS", "MainWindow"]

#: While connected, CONNECTEDUSERS is asked this often (milliseconds) to keep the list current.
CONNECTED_USERS_REFRESH_MS: Final = 3000
#: How long the status bar shows a passing message (milliseconds).
STATUS_MS: Final = 8000
#: At most this long (seconds) the window waits, as it closes, for the network thread to end.
CLOSE_TIMEOUT_S: Final = 1.0
GEOMETRY_KEY: Final = "window/geometry"


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
        self.settings.override(mode=mode, server=server, port=port, ws_url=ws_url)
        self.settings.save(settings)
        self._timeout_s = timeout_s
        self._listen_host = listen_host
        self._custom_normaliser = normaliser
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
        self._busy: set[str] = set()
        #: a CONNECTEDUSERS is asked and not yet answered
        self.users_in_flight = False
        #: the last failure of the automatic refresh, said once
        self.poll_failure = ""
        #: closing: the DISCONNECT is on its way
        self.quitting = False
        self._close_now = False
        self.register_dialog: RegisterDialog | None = None
        self.alias_dialog: AliasDialog | None = None
        self.login_dialog: LoginDialog | None = None
        self.settings_dialog: SettingsDialog | None = None
        self.takeover_box: QMessageBox | None = None

        self.refresh_timer = QTimer(self)
        self.refresh_timer.setInterval(refresh_ms)
        self.refresh_timer.timeout.connect(self.refresh_users)

        self.mode: WindowMode = self._make_mode()
        self._build()
        self._apply_mode()
        geometry = settings.value(GEOMETRY_KEY)
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        self.update_actions()
        self.update_status()

    # -- the protocol ---------------------------------------------------------------------------------

    @property
    def session_mode(self) -> bool:
        """True when the window speaks the session protocol."""
        return self.settings.mode is Mode.SESSION

    @property
    def worker(self) -> ClassicWorker | SessionWorker:
        return self.mode.worker

    def _make_mode(self) -> WindowMode:
        mode: WindowMode
        if self.session_mode:
            mode = SessionMode(self, timeout_s=self._timeout_s, normaliser=self._custom_normaliser)
        else:
            mode = ClassicMode(
                self,
                listen_host=self._listen_host,
                timeout_s=self._timeout_s,
                normaliser=self._custom_normaliser,
            )
        mode.worker.report.connect(self._on_event)
        return mode

    def replace_mode(self) -> None:
        """The protocol changed (only while not connected): a new mode, with a new worker."""
        old = self.mode.worker
        old.report.disconnect(self._on_event)
        old.stop(disconnect=False, timeout_s=CLOSE_TIMEOUT_S)
        old.deleteLater()
        self.mode = self._make_mode()
        self.max_attachment_bytes = 0
        self._busy.clear()
        self.users_in_flight = False
        self.chat.online = []
        self.users_list.clear()
        self._apply_mode()

    def _apply_mode(self) -> None:
        """Label the buttons and the attachment row for the protocol in use."""
        self.connect_button.setText(self.mode.op_connect)
        self.disconnect_button.setText(self.mode.op_disconnect)
        self.mode.label()
        self.chat.mark_read = self.mode.mark_read
        self.update_actions()
        self.update_status()

    # -- layout -------------------------------------------------------------------------------------

    def _build(self) -> None:
        self.setWindowTitle("dmds Messenger")
        self.setStyleSheet(STYLE)
        self.resize(1060, 720)

        bar = ActionBar()
        self.register_button = bar.register_button
        self.unregister_button = bar.unregister_button
        self.connect_button = bar.connect_button
        self.disconnect_button = bar.disconnect_button
        self.users_button = bar.users_button
        self.settings_button = bar.settings_button
        self.register_button.clicked.connect(self.open_register_dialog)
        self.unregister_button.clicked.connect(self.open_unregister_dialog)
        self.connect_button.clicked.connect(self.open_connect_dialog)
        self.disconnect_button.clicked.connect(self.disconnect_user)
        self.users_button.clicked.connect(lambda: self.refresh_users(manual=True))
        self.settings_button.clicked.connect(self.open_settings_dialog)

        self.notice = notice_label()

        self.chat = ChatView(self.conversations, self)
        self.contacts = self.chat.people.contacts
        self.users_label = self.chat.people.users_label
        self.users_list = self.chat.people.users_list
        self.conversation_view = self.chat.conversation.view
        self.conversation_view.anchorClicked.connect(self._anchor_clicked)
        compose = self.chat.compose
        self.dest_edit = compose.dest_edit
        self.message_edit = compose.message_edit
        self.send_button = compose.send_button
        self.attach_edit = compose.attach_edit
        self.browse_button = compose.browse_button
        self.sendattach_button = compose.sendattach_button
        self.dest_edit.textChanged.connect(self.update_actions)
        self.message_edit.textChanged.connect(self.update_actions)
        self.message_edit.returnPressed.connect(self.send_message)
        self.send_button.clicked.connect(self.send_message)
        self.attach_edit.textChanged.connect(self.update_actions)
        self.attach_edit.returnPressed.connect(self.send_attachment)
        self.browse_button.clicked.connect(self.browse_attachment)
        self.sendattach_button.clicked.connect(self.send_attachment)

        logs = LogPanel()
        self.client_log = logs.client_log
        self.server_log = logs.server_log

        self.quit_button = quit_button()
        self.quit_button.clicked.connect(self.close)
        self.setCentralWidget(
            central_widget(bar.layout, self.notice, self.chat.widget, logs.widget, self.quit_button)
        )

        self.status_line = StatusLine(self.statusBar())
        self.connection_label = self.status_line.connection_label
        self.normaliser_label = self.status_line.normaliser_label

    # -- state shown ---------------------------------------------------------------------------------

    @property
    def connected_aliases(self) -> list[str]:
        """Who is connected, as the server last said."""
        return self.chat.online

    @property
    def server_text(self) -> str:
        return f"{self.settings.server}:{self.settings.active_port}"

    def update_actions(self) -> None:
        connected = self.alias is not None
        idle = not self.quitting
        usable = connected and self.reachable and idle
        sendable = connected and idle if self.mode.sends_while_unreachable else usable
        attachments = self.mode.attachments
        has_dest = bool(self.dest_edit.text().strip())
        op_connect, op_disconnect = self.mode.op_connect, self.mode.op_disconnect
        self.register_button.setEnabled(idle and "REGISTER" not in self._busy)
        self.unregister_button.setEnabled(idle and "UNREGISTER" not in self._busy)
        self.connect_button.setEnabled(idle and not connected and op_connect not in self._busy)
        self.disconnect_button.setEnabled(idle and connected and op_disconnect not in self._busy)
        self.users_button.setEnabled(sendable)
        self.settings_button.setEnabled(idle and not connected and op_connect not in self._busy)
        self.send_button.setEnabled(sendable and has_dest and bool(self.message_edit.text().strip()))
        self.message_edit.setEnabled(idle)
        self.dest_edit.setEnabled(idle)
        self.attach_edit.setEnabled(attachments and idle)
        self.browse_button.setEnabled(attachments and idle)
        self.sendattach_button.setEnabled(
            attachments and sendable and has_dest and bool(self.attach_edit.text().strip())
        )

    def update_status(self) -> None:
        self.status_line.show_connection(
            *self.mode.status(self.alias, self.reachable, self.quitting, self.server_text)
        )
        self.setWindowTitle(f"dmds Messenger — {self.alias}" if self.alias else "dmds Messenger")

    def set_connected_users(self, aliases: list[str]) -> None:
        if not self.chat.set_online(aliases):
            return
        if self.alias is None:
            self.users_label.setText(f"Connected users ({self.mode.op_connect.lower()} to see them)")
        else:
            self.users_label.setText(f"Connected users: {len(aliases)}")

    def conversation_text(self) -> str:
        """The conversation on screen as plain text (what a person reads)."""
        return self.conversation_view.toPlainText()

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

    def start_operation(self, operation: str, line: str) -> None:
        """`operation` is asked of the server (`line` says so in the client log): its button waits."""
        self.log_client(line)
        self._busy.add(operation)
        self.update_actions()

    def finish_operation(self, operation: str) -> None:
        """The server answered `operation`: its button is usable again."""
        self._busy.discard(operation)

    def save_settings(self) -> None:
        self.settings.save(self._store)

    # -- dialogs and actions -------------------------------------------------------------------------

    def open_register_dialog(self) -> RegisterDialog:
        dialog = RegisterDialog(self, with_password=self.mode.register_password)
        dialog.accepted.connect(lambda: self._register(*dialog.values(), dialog.password_value()))
        self.register_dialog = dialog
        return shown(dialog)

    def _register(self, full_name: str, alias: str, birth_date: str, password: str = "") -> None:
        self.start_operation("REGISTER", f"REGISTER {alias}")  # the password is never logged
        self.mode.register(full_name, alias, birth_date, password)

    def open_unregister_dialog(self) -> AliasDialog | LoginDialog:
        return self.mode.open_unregister_dialog()

    def open_connect_dialog(self) -> AliasDialog | LoginDialog:
        return self.mode.open_connect_dialog()

    def disconnect_user(self) -> None:
        """DISCONNECT (classic) or LOG OUT (session) the user of this window."""
        if self.alias is None:
            return
        self.start_operation(self.mode.op_disconnect, f"{self.mode.op_disconnect} {self.alias}")
        self.mode.end_session()

    def open_settings_dialog(self) -> SettingsDialog:
        """Settings: another server, ports, normaliser or protocol (only while not connected)."""
        return open_settings_dialog(self)

    def send_message(self) -> None:
        dest, text = self.dest_edit.text().strip(), self.message_edit.text()
        if not self.send_button.isEnabled() or not dest or not text.strip():
            return
        message = self.conversations.add_outgoing(dest, text, datetime.now())
        self.log_client(f"SEND {dest} {text}")
        self.message_edit.clear()
        self.chat.show(dest)
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
        self.mode.send_attachment()

    def _anchor_clicked(self, url: QUrl) -> None:
        if url.scheme() == ATTACHMENT_SCHEME and url.path().isdigit():
            self.save_attachment(int(url.path()))

    def save_attachment(self, attachment_id: int) -> None:
        """Fetch an attachment of the conversation and save it where the person says."""
        self.mode.save_attachment(attachment_id)

    def refresh_users(self, *, manual: bool = False) -> None:
        if self.alias is None or (self.users_in_flight and not manual):
            return
        if manual:
            self.log_client("CONNECTEDUSERS")
        self.users_in_flight = True
        self.worker.connected_users(manual=manual)

    # -- events from the worker ----------------------------------------------------------------------

    def _on_event(self, event: WorkerEvent) -> None:
        sender = self.sender()
        if sender is not None and sender is not self.worker:
            return  # the last words of a worker replaced when the protocol changed
        react(event, self)

    # -- the end --------------------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        """QUIT or the window's close button: DISCONNECT first (without blocking), then close."""
        if self._close_now or self.alias is None or not self.worker.alive:
            self._finish()
            event.accept()
            return
        event.ignore()
        if self.quitting:
            return
        self.quitting = True
        self.log_client(f"{self.mode.op_disconnect} {self.alias}")
        self.mode.end_session()
        QTimer.singleShot(int((self._timeout_s + 1) * 1000), self.close_when_done)
        self.update_actions()
        self.update_status()

    def close_when_done(self) -> None:
        if not self._close_now:
            self._close_now = True
            # Not from inside a close event (a nested close() is ignored): from the event loop.
            QTimer.singleShot(0, self.close)

    def _finish(self) -> None:
        self.refresh_timer.stop()
        self.save_settings()
        self._store.setValue(GEOMETRY_KEY, self.saveGeometry())
        self._store.sync()
        # After the DISCONNECT of closeEvent (done, failed or timed out) there is nothing more to tell
        # the server; otherwise a CONNECT may have just succeeded: DISCONNECT it, briefly.
        self.worker.stop(disconnect=not self.quitting, timeout_s=CLOSE_TIMEOUT_S)

    def shutdown(self) -> None:
        """Close at once: DISCONNECT if connected (waiting for it, briefly), stop the worker, close."""
        self.refresh_timer.stop()
        self.worker.stop(disconnect=True, timeout_s=min(self._timeout_s, 3.0))
        self._close_now = True
        self.close()
