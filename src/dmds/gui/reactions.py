"""How the main window shows what its worker reports: an operation done or failed, the user
connected or no longer, a message sent or refused, the connected users listed, a message arrived,
the normaliser up or down. Events only one protocol has go to the window's mode instead.

These are functions of the window rather than an object it holds, so that nothing but the window
holds the window (see `dmds.gui.mode` for why a reference cycle with it must not exist).
"""

from __future__ import annotations

from functools import singledispatch
from typing import TYPE_CHECKING

from dmds.client.classic import OK
from dmds.gui.events import (
    ConnectionChanged,
    MessageArrived,
    NormaliserChanged,
    OperationDone,
    SendDone,
    UsersListed,
    WorkerEvent,
)

if TYPE_CHECKING:
    from dmds.gui.window import MainWindow

__all__ = ["react"]


@singledispatch
def react(event: WorkerEvent, window: MainWindow) -> None:
    """Show `event` in `window` (here, one only the window's mode knows)."""
    window.mode.on_event(event)


@react.register(OperationDone)
def _operation_done(done: OperationDone, window: MainWindow) -> None:
    window.finish_operation(done.operation)
    mode = window.mode
    if done.code == OK:
        window.log_server(f"{done.operation} OK")
        window.clear_notice()
        _operation_succeeded(done, window)
    else:
        reason, words = mode.failure(done.operation, done.code, done.error_code, done.error)
        window.log_server(f"{done.operation} FAIL: {reason}")
        window.show_notice(f"{done.operation} {done.alias} failed: {words}")
        mode.operation_failed(done)
    if window.quitting and done.operation == mode.op_disconnect:
        window.close_when_done()
    window.update_actions()


def _operation_succeeded(done: OperationDone, window: MainWindow) -> None:
    if done.operation == "REGISTER":
        window.say(f"Registered {done.alias}; {window.mode.op_connect} to use it.")
        window.settings.last_alias = done.alias
        window.save_settings()
    elif done.operation == "UNREGISTER":
        window.say(f"Unregistered {done.alias}.")
    elif done.operation == window.mode.op_connect:
        window.settings.last_alias = done.alias
        window.save_settings()


@react.register(ConnectionChanged)
def _connection_changed(change: ConnectionChanged, window: MainWindow) -> None:
    window.alias = window.chat.me = change.alias
    mode = window.mode
    if change.alias is not None:
        window.reachable = True
        window.say(f"{mode.state_word.capitalize()} as {change.alias}.")
    else:
        window.refresh_timer.stop()
        window.users_in_flight = False
        window.set_connected_users([])
        if change.reason:
            window.log_server(f"{mode.ended_word}: {change.reason}")
            window.show_notice(
                f"No longer {mode.state_word}: {change.reason}. {mode.op_connect} again when you wish."
            )
        else:
            window.say(f"{mode.ended_word.capitalize()}.")
        window.reachable = True
        if window.quitting:
            window.close_when_done()
    window.update_actions()
    window.update_status()
    window.chat.refresh_contacts()
    if change.alias is not None:
        mode.logged_in()


@react.register(SendDone)
def _send_done(done: SendDone, window: MainWindow) -> None:
    if done.code == OK:
        window.conversations.accepted(done.local_id, done.message_id, done.text, done.attachment)
        window.log_server(f"SEND OK - MESSAGE {done.message_id}")
    else:
        reason, words = window.mode.failure("SEND", done.code, done.error_code, done.error)
        window.conversations.failed(done.local_id, words)
        window.log_server(f"SEND FAIL: {reason}")
        if window.reachable:  # otherwise the notice says the server does not answer, which is why
            window.show_notice(f"Message to {done.dest} not sent: {words}")
    window.chat.changed(done.dest)


@react.register(UsersListed)
def _users_listed(listed: UsersListed, window: MainWindow) -> None:
    window.users_in_flight = False
    if listed.code == OK:
        window.poll_failure = ""
        window.set_connected_users(list(listed.aliases))
        if listed.manual:
            joined = ", ".join(listed.aliases)
            window.log_server(f"CONNECTED USERS ({len(listed.aliases)} users connected) OK - {joined}")
        return
    reason, words = window.mode.failure("CONNECTEDUSERS", listed.code, None, listed.error)
    if listed.manual:
        window.log_server(f"CONNECTED USERS FAIL: {reason}")
        window.show_notice(f"CONNECTED USERS failed: {reason}")
    elif listed.code is not None and reason != window.poll_failure:
        # The refresh repeats every few seconds: say a failure once, not at every refresh. (When
        # the server does not answer at all, the reachability notice says so instead.)
        window.poll_failure = reason
        window.log_server(f"CONNECTED USERS FAIL: {reason}")
        window.show_notice(f"The connected users cannot be listed: {words}")


@react.register(MessageArrived)
def _message_arrived(pushed: MessageArrived, window: MainWindow) -> None:
    attached = pushed.attachment
    extra = f" [attachment {attached.name}, {attached.size} bytes]" if attached else ""
    window.log_server(f"MESSAGE {pushed.message_id} FROM {pushed.sender}: {pushed.text}{extra}")
    if not window.chat.incoming(pushed):
        window.say(f"New message from {pushed.sender}.")


@react.register(NormaliserChanged)
def _normaliser_changed(change: NormaliserChanged, window: MainWindow) -> None:
    if change.available:
        window.status_line.normaliser_up(window.settings.ws_url)
    else:
        window.status_line.normaliser_down(change.detail)
        window.log_client(f"normaliser unavailable ({change.detail}); sending text as typed")
