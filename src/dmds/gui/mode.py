"""What the main window asks of the protocol it speaks: the "mode". The window is protocol-neutral;
`dmds.gui.classic_mode.ClassicMode` and `dmds.gui.session_mode.SessionMode` are the two answers,
each owning its protocol's worker, its words, its dialogs and the events only it has.

A mode holds its window weakly: the window holds the mode, and a reference cycle between them would
be freed by Python's cyclic GC in whichever thread it runs, which Qt objects do not survive.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar, TypeVar

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog

from dmds.gui.classic_worker import ClassicWorker
from dmds.gui.dialogs import AliasDialog, LoginDialog
from dmds.gui.events import OperationDone, WorkerEvent
from dmds.gui.session_worker import SessionWorker
from dmds.protocols.session.codes import ErrorCode

if TYPE_CHECKING:
    from dmds.gui.window import MainWindow

__all__ = ["Failure", "WindowMode", "shown"]

_D = TypeVar("_D", bound=QDialog)

#: A failure in words: (the reason the server log gives, the words of the notice).
Failure = tuple[str, str]


def shown(dialog: _D) -> _D:
    """`dialog`, opened (window-modal, not blocking) and deleted once closed."""
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.open()
    return dialog


class WindowMode(ABC):
    """One protocol, as the window sees it."""

    #: the operations the CONNECT and DISCONNECT buttons do, as the logs name them
    op_connect: str
    op_disconnect: str
    #: how the status bar and the notices say "connected" ("logged in")
    state_word: str
    #: how the server log says the server ended the connection
    ended_word: str
    #: REGISTER asks a password
    register_password: bool
    #: files can be attached (the attached-file row is usable)
    attachments: bool
    #: SEND stays available while the server does not answer (the message waits to go)
    sends_while_unreachable: bool
    worker: ClassicWorker | SessionWorker

    def __init__(self, window: MainWindow) -> None:
        self._window_ref = weakref.ref(window)

    @property
    def window(self) -> MainWindow:
        window = self._window_ref()
        if window is None:
            raise RuntimeError("the window is gone")
        return window

    #: this protocol's tooltips, by the window's widget attribute
    TOOLTIPS: ClassVar[dict[str, str]] = {}
    #: what the attachment row says while it is empty
    ATTACH_PLACEHOLDER: ClassVar[str] = ""

    def label(self) -> None:
        """Put this protocol's words on the window's buttons, rows and headings."""
        window = self.window
        for name, tip in self.TOOLTIPS.items():
            getattr(window, name).setToolTip(tip)
        window.attach_edit.setPlaceholderText(self.ATTACH_PLACEHOLDER)

    @abstractmethod
    def status(self, alias: str | None, reachable: bool, quitting: bool, server: str) -> tuple[str, str]:
        """The status line's text and colour, for the `alias` connected to `server` (host:port)."""

    @abstractmethod
    def register(self, full_name: str, alias: str, birth_date: str, password: str) -> None: ...

    @abstractmethod
    def open_unregister_dialog(self) -> AliasDialog | LoginDialog: ...

    @abstractmethod
    def open_connect_dialog(self) -> AliasDialog | LoginDialog: ...

    @abstractmethod
    def end_session(self) -> None:
        """DISCONNECT or LOG OUT the connected user (the window has logged it)."""

    @abstractmethod
    def failure(self, operation: str, code: int | None, error_code: ErrorCode | None, error: str) -> Failure:
        """A failed `operation` in words, from what the worker reported: the classic protocol's
        result `code`, the session protocol's `error_code`, or `error` alone."""

    @abstractmethod
    def operation_failed(self, done: OperationDone) -> None:
        """After the failure of `done` is on screen: anything more to offer."""

    @abstractmethod
    def logged_in(self) -> None:
        """The window has shown that the user is connected."""

    @abstractmethod
    def mark_read(self, peer: str) -> None:
        """The conversation with `peer` is on screen: its messages are read."""

    @abstractmethod
    def on_event(self, event: WorkerEvent) -> bool:
        """Handle an event only this protocol has; False if it is not one."""

    @abstractmethod
    def send_attachment(self) -> None:
        """SENDATTACH: the attached file, with the message text, to Dest (where there are attachments)."""

    @abstractmethod
    def save_attachment(self, attachment_id: int) -> None:
        """Fetch an attachment and save it where the person says (where there are attachments)."""

    @abstractmethod
    def limits_changed(self) -> None:
        """The server told its limits (`MainWindow.max_attachment_bytes`)."""
