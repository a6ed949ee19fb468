"""The main window speaking the session protocol: LOG IN and UNREGISTER with a password, presence
pushed by the server (nothing polled), read marks told to the server, receipts naming their
recipient (✓ delivered, ✓✓ read), attachments sent with SENDATTACH and saved from the conversation,
and the connection coming back by itself ("reconnecting…"). Passwords go to the worker only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final

from PySide6.QtCore import QStandardPaths
from PySide6.QtWidgets import QFileDialog

from dmds.client.normalise import TextNormaliser
from dmds.client.session import describe_error
from dmds.gui.conversations import AttachedFile, human_size
from dmds.gui.dialogs import AliasDialog, LoginDialog
from dmds.gui.events import (
    AttachmentSaved,
    LinkChanged,
    OperationDone,
    PresenceUpdate,
    ReceiptArrived,
    ServerLimits,
    WorkerEvent,
)
from dmds.gui.mode import Failure, WindowMode, shown
from dmds.gui.session_worker import SessionWorker, too_big
from dmds.protocols.session.codes import ErrorCode

if TYPE_CHECKING:
    from dmds.gui.window import MainWindow

__all__ = ["SessionMode", "session_failure_text"]

#: What to do about some refusals, after the reason in words.
_HINTS: Final[dict[tuple[str, ErrorCode], str]] = {
    ("LOG IN", ErrorCode.BAD_CREDENTIALS): (
        "check both (a user registered over the classic protocol has no password and cannot log in)"
    ),
    ("UNREGISTER", ErrorCode.BAD_CREDENTIALS): "check the alias and the password",
    ("REGISTER", ErrorCode.ALIAS_TAKEN): "choose another alias",
    ("SEND", ErrorCode.UNKNOWN_USER): "check the destination alias",
    ("SEND", ErrorCode.NOT_LOGGED_IN): "LOG IN again",
    ("LOG IN", ErrorCode.BAD_TOKEN): "LOG IN again with the password",
}


def session_failure_text(operation: str, code: ErrorCode, text: str = "") -> str:
    """A session-protocol refusal of `operation` in words: `text` (the library's words for the
    server's Error, from `dmds.client.session.ERROR_TEXT`), with what to do when there is a rule."""
    text = text or describe_error(code)
    hint = _HINTS.get((operation, code))
    return f"{text} — {hint}" if hint else text


class SessionMode(WindowMode):
    """The session protocol, with its `SessionWorker`."""

    TOOLTIPS: ClassVar[dict[str, str]] = {
        "register_button": "Register a new user (full name, alias, birth date, password)",
        "unregister_button": "Delete an account and its messages (asks its password)",
        "connect_button": "Log in with an alias and its password",
        "disconnect_button": "Log out (the session ends on the server)",
        "users_button": "Who is online now (the server tells this window as it changes)",
        "attach_edit": "The file SENDATTACH sends to Dest, with the message text",
        "browse_button": "Choose the file to send",
    }
    ATTACH_PLACEHOLDER: ClassVar[str] = "a file to send with the message (Browse… picks one)"

    op_connect = "LOG IN"
    op_disconnect = "LOG OUT"
    state_word = "logged in"
    ended_word = "LOGGED OUT"
    register_password = True
    attachments = True
    # A message typed while the connection is coming back waits in the client library and goes
    # once it is back (never twice).
    sends_while_unreachable = True
    worker: SessionWorker

    def __init__(self, window: MainWindow, *, timeout_s: float, normaliser: TextNormaliser | None) -> None:
        super().__init__(window)
        settings = window.settings
        self.worker = SessionWorker(
            settings.server,
            settings.session_port,
            settings.ws_url,
            timeout_s=timeout_s,
            normaliser=normaliser,
            parent=window,
        )

    def label(self) -> None:
        super().label()
        window = self.window
        self.limits_changed()
        window.users_label.setText("Connected users (log in to see them)")

    def limits_changed(self) -> None:
        limit = self.window.max_attachment_bytes
        shown_limit = f" (at most {human_size(limit)})" if limit else ""
        self.window.sendattach_button.setToolTip(
            f"Send the attached file{shown_limit} to Dest, with the message text"
        )

    def status(self, alias: str | None, reachable: bool, quitting: bool, server: str) -> tuple[str, str]:
        where = f"session server {server}"
        if quitting:
            return "Logging out…", "#555"
        if alias is None:
            return f"○ Not logged in · {where}", "#555"
        if not reachable:
            return f"⚠ {alias}: connection lost · reconnecting… · {where}", "#b00020"
        return f"● Logged in as {alias} · connected · {where}", "#1b7a2f"

    # -- the account ------------------------------------------------------------------------------

    def register(self, full_name: str, alias: str, birth_date: str, password: str) -> None:
        self.worker.register(full_name, alias, birth_date, password)

    def _open_login_dialog(
        self,
        title: str,
        intro: str,
        alias: str,
        then: Callable[[str, str], None],
        *,
        fixed_alias: bool = False,
    ) -> LoginDialog:
        window = self.window
        dialog = LoginDialog(title, intro, alias, window, fixed_alias=fixed_alias)
        dialog.accepted.connect(lambda: then(*dialog.values()))
        window.login_dialog = dialog
        return shown(dialog)

    def open_unregister_dialog(self) -> AliasDialog | LoginDialog:
        window = self.window
        return self._open_login_dialog(
            "Unregister (delete the account)",
            "The account is deleted, with the messages stored for it. Its password confirms it.",
            window.alias or window.settings.last_alias,
            self._unregister,
            fixed_alias=window.alias is not None,
        )

    def _unregister(self, alias: str, password: str) -> None:
        self.window.start_operation("UNREGISTER", f"UNREGISTER {alias}")
        self.worker.unregister(alias, password)

    def open_connect_dialog(self) -> AliasDialog | LoginDialog:
        window = self.window
        return self._open_login_dialog(
            "Log in", f"Log in to {window.server_text} as:", window.settings.last_alias, self.log_in
        )

    def log_in(self, alias: str, password: str) -> None:
        """LOG IN with the password (which is not logged, nor kept)."""
        self.window.start_operation("LOG IN", f"LOG IN {alias}")
        self.worker.log_in(alias, password)

    def end_session(self) -> None:
        self.worker.log_out()

    def failure(self, operation: str, code: int | None, error_code: ErrorCode | None, error: str) -> Failure:
        return error, error if error_code is None else session_failure_text(operation, error_code, error)

    def operation_failed(self, done: OperationDone) -> None:
        """Nothing more: the notice says it all."""

    def logged_in(self) -> None:
        # Messages pushed right after the login may have come before its report: the conversation
        # on screen marks them read now.
        self.window.chat.render()

    def mark_read(self, peer: str) -> None:
        window = self.window
        if window.alias is None:
            return  # not yet: once the login is reported (see logged_in)
        fresh = window.conversations.mark_read(peer)
        if fresh:
            window.log_client(f"READ {', '.join(map(str, fresh))} FROM {peer}")
            self.worker.mark_read(fresh)

    # -- attachments ------------------------------------------------------------------------------

    def send_attachment(self) -> None:
        window = self.window
        if not window.sendattach_button.isEnabled():
            return
        dest, text = window.dest_edit.text().strip(), window.message_edit.text()
        typed = window.attach_edit.text().strip()
        path = Path(typed).expanduser()
        try:
            size = path.stat().st_size if path.is_file() else -1
        except OSError:
            size = -1
        if size < 0:
            window.show_notice(f"Cannot attach {typed}: not a file that can be read")
            return
        limit = window.max_attachment_bytes
        if limit and size > limit:
            window.show_notice(f"Not sent: {too_big(path.name, size, limit)}")
            return
        pending = AttachedFile(0, path.name, size)
        message = window.conversations.add_outgoing(dest, text, datetime.now(), attachment=pending)
        window.log_client(f"SENDATTACH {dest} {path.name} {text}".rstrip())
        window.message_edit.clear()
        window.attach_edit.clear()
        window.chat.show(dest)
        self.worker.send(message.local_id, dest, text, str(path))

    def save_attachment(self, attachment_id: int) -> None:
        window = self.window
        attached = window.conversations.attachment(attachment_id)
        if attached is None:
            return
        if window.alias is None:
            window.show_notice(f"{self.op_connect} to fetch {attached.name}.")
            return
        choose = window.choose_save_path or self._ask_save_path
        path = choose(attached.name)
        if not path:
            return
        window.log_client(f"FETCH {attachment_id} ({attached.name}) -> {path}")
        self.worker.save_attachment(attachment_id, path)

    def _ask_save_path(self, name: str) -> str:
        folder = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.DownloadLocation)
        suggested = str(Path(folder) / Path(name).name) if folder else Path(name).name
        path, _ = QFileDialog.getSaveFileName(self.window, f"Save {name}", suggested)
        return path

    # -- events only the session protocol has -----------------------------------------------------

    def on_event(self, event: WorkerEvent) -> bool:
        if isinstance(event, ReceiptArrived):
            self._receipt_arrived(event)
        elif isinstance(event, PresenceUpdate):
            self._presence_update(event)
        elif isinstance(event, LinkChanged):
            self._link_changed(event)
        elif isinstance(event, ServerLimits):
            self.window.max_attachment_bytes = event.max_attachment_bytes
            self.limits_changed()
        elif isinstance(event, AttachmentSaved):
            self._attachment_saved(event)
        else:
            return False
        return True

    def _receipt_arrived(self, receipt: ReceiptArrived) -> None:
        window = self.window
        how = "READ BY" if receipt.read else "DELIVERED TO"
        window.log_server(f"SEND MESSAGE {receipt.message_id} {how} {receipt.to}")
        message = window.conversations.session_receipt(
            receipt.to or "", receipt.message_id, read=receipt.read
        )
        if message is not None:
            window.chat.changed(message.peer)

    def _presence_update(self, update: PresenceUpdate) -> None:
        window = self.window
        if window.alias is None:
            return
        if update.alias:
            window.log_server(f"{'ONLINE' if update.online else 'OFFLINE'} {update.alias}")
        window.set_connected_users(list(update.aliases))

    def _link_changed(self, change: LinkChanged) -> None:
        window = self.window
        if window.alias is None:
            return
        window.reachable = change.up
        if change.up:
            window.log_server("connected again (session resumed)")
            window.clear_notice()
            window.say("Connected again.")
        else:
            window.log_server(f"connection lost ({change.detail}); reconnecting")
            window.show_notice(
                f"The connection to the server was lost ({change.detail}); reconnecting… Messages sent"
                " meanwhile go once it is back."
            )
        window.update_actions()
        window.update_status()

    def _attachment_saved(self, saved: AttachmentSaved) -> None:
        window = self.window
        attached = window.conversations.attachment(saved.attachment_id)
        name = attached.name if attached is not None else f"attachment {saved.attachment_id}"
        if saved.error:
            window.log_server(f"FETCH {saved.attachment_id} FAIL: {saved.error}")
            window.show_notice(f"{name} not saved: {saved.error}")
        else:
            window.log_server(f"FETCH {saved.attachment_id} OK - {saved.size} bytes saved to {saved.path}")
            window.say(f"Saved {name} ({human_size(saved.size)}) to {saved.path}")
