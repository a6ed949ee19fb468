"""The conversations side of the main window: which conversation is on screen, the contacts and
connected users beside it, and the Dest and Message rows under it. It redraws them as messages come
and go and as people connect; the window tells it who is connected and what arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QListWidgetItem, QSplitter, QVBoxLayout, QWidget

from dmds.gui.conversations import Conversations
from dmds.gui.events import MessageArrived
from dmds.gui.panels import ComposeRows, ConversationPanel, PeoplePanel

__all__ = ["ChatView"]


class ChatView:
    """The conversations, the connected users and the conversation on screen, kept in step."""

    def __init__(self, conversations: Conversations, parent: QObject) -> None:
        self.conversations = conversations
        self.people = PeoplePanel()
        self.conversation = ConversationPanel()
        self.compose = ComposeRows(parent)
        #: whose conversation is on screen
        self.current_peer: str | None = None
        #: the connected alias (None: not connected)
        self.me: str | None = None
        #: who is connected, as the server last said
        self.online: list[str] = []
        #: the conversation with a peer is on screen: its messages are read (the protocol says how)
        self.mark_read: Callable[[str], object] = conversations.mark_read

        self.people.contacts.currentItemChanged.connect(self._contact_chosen)
        self.people.users_list.itemActivated.connect(self._user_chosen)
        self.people.users_list.itemDoubleClicked.connect(self._user_chosen)
        chat = QSplitter(Qt.Orientation.Horizontal)
        chat.addWidget(self.people.widget)
        chat.addWidget(self.conversation.widget)
        chat.setStretchFactor(0, 1)
        chat.setStretchFactor(1, 3)
        chat.setSizes([260, 780])
        #: the conversations over the Dest and attached-file rows
        self.widget = QWidget()
        layout = QVBoxLayout(self.widget)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(chat, 1)
        layout.addLayout(self.compose.send_row)
        layout.addLayout(self.compose.attach_row)

    def set_online(self, aliases: list[str]) -> bool:
        """Who is connected now; False if nothing changed (nothing is redrawn then)."""
        if aliases == self.online and self.people.users_list.count() == len(aliases):
            return False  # the usual refresh
        self.online = aliases
        self.people.show_users(aliases, self.me)
        self.refresh_contacts()
        self.render()  # its title says whether the peer is connected
        return True

    def incoming(self, pushed: MessageArrived) -> bool:
        """A message came; True if its conversation is the one on screen."""
        if self.current_peer is None:
            self.current_peer = pushed.sender
            if not self.compose.dest_edit.text():
                self.compose.dest_edit.setText(pushed.sender)
        on_screen = pushed.sender == self.current_peer
        self.conversations.add_incoming(
            pushed.sender,
            pushed.message_id,
            pushed.text,
            datetime.now(),
            read=on_screen,
            attachment=pushed.attachment,
        )
        self.changed(pushed.sender)
        return on_screen

    def changed(self, peer: str) -> None:
        """The conversation with `peer` changed."""
        self.refresh_contacts()
        if peer == self.current_peer:
            self.render()

    def show(self, peer: str) -> None:
        """Put the conversation with `peer` on screen (opening it if new)."""
        self.conversations.open(peer)
        self.current_peer = peer
        self.refresh_contacts()
        self.render()

    def refresh_contacts(self) -> None:
        known = set(self.conversations.peers()) | set(self.online)
        self.compose.dest_model.setStringList(sorted(known - {self.me} if self.me else known))
        self.people.show_contacts(self.conversations, self.online, self.current_peer)

    def _contact_chosen(self, current: QListWidgetItem | None, previous: QListWidgetItem | None) -> None:
        if current is None:
            return
        peer = str(current.data(Qt.ItemDataRole.UserRole))
        self.current_peer = peer
        self.compose.dest_edit.setText(peer)
        self.render()
        QTimer.singleShot(0, self.refresh_contacts)  # not while Qt is inside the list's signal
        self.compose.message_edit.setFocus()

    def _user_chosen(self, item: QListWidgetItem) -> None:
        peer = str(item.data(Qt.ItemDataRole.UserRole))
        if peer != self.me:
            self.compose.dest_edit.setText(peer)
            self.show(peer)
            self.compose.message_edit.setFocus()

    def render(self) -> None:
        """Redraw the conversation on screen (which marks its messages read)."""
        peer = self.current_peer
        if peer is None:
            self.conversation.show_nothing()
            return
        self.mark_read(peer)
        self.conversation.show(peer, peer in self.online, self.conversations.messages(peer))
