"""The main window speaking the classic protocol: CONNECT with an alias alone, the connected users
polled every few seconds, a delivery receipt naming only the message id, no attachments, and an
offer to take over an alias the server still counts as connected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from PySide6.QtWidgets import QMessageBox

from dmds.client.classic import describe
from dmds.client.normalise import TextNormaliser
from dmds.gui.classic_worker import ClassicWorker
from dmds.gui.dialogs import AliasDialog, LoginDialog
from dmds.gui.events import OperationDone, ReceiptArrived, ServerReachability, WorkerEvent
from dmds.gui.mode import Failure, WindowMode, shown
from dmds.protocols.session.codes import ErrorCode

if TYPE_CHECKING:
    from dmds.gui.window import MainWindow

__all__ = ["ATTACH_TOOLTIP", "ClassicMode", "failure_text"]

ATTACH_TOOLTIP: Final = "Attachments come with the session protocol; the classic protocol has none."

#: What to do about some failures, after the reason in words.
_HINTS: Final[dict[tuple[str, int], str]] = {
    ("CONNECT", 1): "REGISTER it first",
    ("UNREGISTER", 1): "check the alias",
    ("SEND", 1): "check the destination alias",
    ("CONNECTEDUSERS", 1): "CONNECT again",
}


def failure_text(operation: str, code: int) -> str:
    """A failed result `code` of `operation` in words (with what to do, when there is a rule)."""
    text = describe(operation, code)
    hint = _HINTS.get((operation, code))
    return f"{text} — {hint}" if hint else text


class ClassicMode(WindowMode):
    """The classic protocol, with its `ClassicWorker`."""

    TOOLTIPS: ClassVar[dict[str, str]] = {
        "register_button": "Register a new user (full name, alias, birth date)",
        "unregister_button": "Remove a user and its stored messages",
        "connect_button": "Connect as a user, to send and receive messages",
        "disconnect_button": "Disconnect the connected user",
        "users_button": "Ask the server who is connected now (also refreshed by itself)",
    }
    ATTACH_PLACEHOLDER: ClassVar[str] = "attachments come with the session protocol"

    op_connect = "CONNECT"
    op_disconnect = "DISCONNECT"
    state_word = "connected"
    ended_word = "DISCONNECTED"
    register_password = False
    attachments = False
    sends_while_unreachable = False
    worker: ClassicWorker

    def __init__(
        self,
        window: MainWindow,
        *,
        listen_host: str,
        timeout_s: float,
        normaliser: TextNormaliser | None,
    ) -> None:
        super().__init__(window)
        settings = window.settings
        self.worker = ClassicWorker(
            settings.server,
            settings.port,
            settings.ws_url,
            listen_host=listen_host,
            timeout_s=timeout_s,
            normaliser=normaliser,
            parent=window,
        )

    def label(self) -> None:
        super().label()
        window = self.window
        for widget in (window.attach_edit, window.browse_button, window.sendattach_button):
            widget.setToolTip(ATTACH_TOOLTIP)
        window.users_label.setText("Connected users (connect to see them)")

    def status(self, alias: str | None, reachable: bool, quitting: bool, server: str) -> tuple[str, str]:
        if quitting:
            return "Disconnecting…", "#555"
        if alias is None:
            return f"○ Not connected · server {server}", "#555"
        if not reachable:
            return f"⚠ {alias}: the server at {server} does not answer", "#b00020"
        return f"● Connected as {alias} · server {server}", "#1b7a2f"

    def register(self, full_name: str, alias: str, birth_date: str, password: str) -> None:
        self.worker.register(full_name, alias, birth_date)

    def open_unregister_dialog(self) -> AliasDialog | LoginDialog:
        window = self.window
        dialog = AliasDialog(
            "Unregister a user",
            "The user is removed from the service, with the messages stored for it.",
            window.alias or window.settings.last_alias,
            window,
        )
        dialog.accepted.connect(lambda: self._unregister(dialog.value()))
        window.alias_dialog = dialog
        return shown(dialog)

    def _unregister(self, alias: str) -> None:
        self.window.start_operation("UNREGISTER", f"UNREGISTER {alias}")
        self.worker.unregister(alias)

    def open_connect_dialog(self) -> AliasDialog | LoginDialog:
        window = self.window
        dialog = AliasDialog(
            "Connect", f"Connect to {window.server_text} as:", window.settings.last_alias, window
        )
        dialog.accepted.connect(lambda: self.connect_user(dialog.value()))
        window.alias_dialog = dialog
        return shown(dialog)

    def connect_user(self, alias: str, *, take_over: bool = False) -> None:
        """CONNECT (with `take_over`, DISCONNECT the alias first)."""
        window = self.window
        if take_over:
            window.log_client(f"DISCONNECT {alias}")
        window.start_operation("CONNECT", f"CONNECT {alias}")
        self.worker.connect_as(alias, take_over=take_over)

    def end_session(self) -> None:
        self.worker.disconnect_session()

    def failure(self, operation: str, code: int | None, error_code: ErrorCode | None, error: str) -> Failure:
        if code is None:
            return error, error
        return describe(operation, code), failure_text(operation, code)

    def operation_failed(self, done: OperationDone) -> None:
        if (done.operation, done.code) == ("CONNECT", 2):
            self._offer_takeover(done.alias)

    def _offer_takeover(self, alias: str) -> None:
        window = self.window
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Already connected",
            f"The server says {alias} is already connected: by another client, or by one that ended "
            "without disconnecting.\n\nDisconnect that session and connect here?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            window,
        )
        box.accepted.connect(lambda: self.connect_user(alias, take_over=True))
        window.takeover_box = box
        shown(box)

    def logged_in(self) -> None:
        window = self.window
        window.refresh_timer.start()
        window.refresh_users()

    def mark_read(self, peer: str) -> None:
        self.window.conversations.mark_read(peer)

    def send_attachment(self) -> None:
        """Nothing: the classic protocol has no attachments (the row is disabled)."""

    def save_attachment(self, attachment_id: int) -> None:
        """Nothing: the classic protocol has no attachments."""

    def limits_changed(self) -> None:
        """Nothing: the classic server announces no limits."""

    def on_event(self, event: WorkerEvent) -> bool:
        if isinstance(event, ReceiptArrived):
            self._receipt_arrived(event)
        elif isinstance(event, ServerReachability):
            self._reachability_changed(event)
        else:
            return False
        return True

    def _receipt_arrived(self, receipt: ReceiptArrived) -> None:
        window = self.window
        window.log_server(f"SEND MESSAGE {receipt.message_id} OK")
        message = window.conversations.receipt(receipt.message_id, window.connected_aliases)
        if message is not None:
            window.chat.changed(message.peer)

    def _reachability_changed(self, change: ServerReachability) -> None:
        window = self.window
        window.reachable = change.reachable
        if change.reachable:
            window.log_server("the server answers again")
            window.clear_notice()
            window.say("The server answers again.")
        else:
            window.log_server(f"no answer: {change.detail}")
            seconds = window.refresh_timer.interval() / 1000
            retry = f" Retrying every {seconds:g} s; DISCONNECT to stop." if window.alias else ""
            window.show_notice(f"The server does not answer: {change.detail}.{retry}")
        window.update_actions()
        window.update_status()
