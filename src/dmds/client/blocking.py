"""A blocking client of the session protocol, for programs without asyncio.

::

    with Client("127.0.0.1", 7001) as client:
        client.login("juan", "secret password")
        message_id = client.send("maria", "hola")
        for message in client.messages(timeout=5):
            print(message.sender, message.text)

`Client` runs a `SessionClient` (`dmds.client.session`) on an event loop of its own, in a daemon
thread, and waits for each call's result (at most `timeout_s`). Its events (messages, receipts,
presence changes, connection state) are kept in a thread-safe queue: `next_event()` takes any,
`receive()` and `messages()` take only messages and drop the other events on their way. Messages are
acknowledged when they reach that queue. Errors are those of `dmds.client.session`.
"""

from __future__ import annotations

import asyncio
import queue
import ssl as _ssl
import threading
import time
from collections.abc import Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, Final, TypeVar

from dmds.client.session import DEFAULT_PORT, Event, HistoryPage, Message, SessionClient

__all__ = ["DEFAULT_TIMEOUT_S", "Client"]

#: Longest wait for one call (uploads and fetches of large files may need more: see `timeout_s`).
DEFAULT_TIMEOUT_S: Final = 30.0

T = TypeVar("T")


class Client:
    """A session-protocol client whose methods block until the server answered."""

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        reconnect: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        """Connect (OSError if the server cannot be reached); see `SessionClient.connect`."""
        self.timeout_s = timeout_s
        self._events: queue.Queue[Event] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="dmds-session-client", daemon=True
        )
        self._thread.start()
        self._closed = False
        try:
            self.session: SessionClient = self._run(
                SessionClient.connect(
                    host,
                    port,
                    ssl=ssl,
                    server_hostname=server_hostname,
                    reconnect=reconnect,
                    on_event=self._events.put,
                )
            )
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout_s)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {self.timeout_s:g} s") from None

    # -- requests -----------------------------------------------------------------------------------

    def register(self, alias: str, full_name: str, birth_date: str, password: str) -> None:
        self._run(self.session.register(alias, full_name, birth_date, password))

    def login(self, alias: str, password: str) -> str:
        """Log in; returns the session token."""
        return self._run(self.session.login(alias, password))

    def logout(self) -> None:
        self._run(self.session.logout())

    def send(self, to: str, text: str, *, attachment: int = 0) -> int:
        """Send; returns the message id (in the recipient's mailbox) once the server committed it."""
        return self._run(self.session.send(to, text, attachment=attachment)).message_id

    def mark_read(self, message_ids: Iterable[int]) -> None:
        self._run(self.session.mark_read(list(message_ids)))

    def subscribe(self) -> list[str]:
        """Who is online; presence changes then come as events."""
        return self._run(self.session.subscribe())

    def history(self, peer: str, before: float = 0.0, limit: int = 50) -> HistoryPage:
        return self._run(self.session.history(peer, before, limit))

    def upload(self, name: str, media_type: str, data: bytes) -> int:
        return self._run(self.session.upload(name, media_type, data))

    def fetch(self, attachment_id: int) -> bytes:
        return self._run(self.session.fetch(attachment_id))

    # -- events -------------------------------------------------------------------------------------

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting at most `timeout` seconds (None: forever); None if none came."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def receive(self, timeout: float | None = None) -> Message | None:
        """The next message (other events are dropped), or None after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            event = self.next_event(remaining)
            if event is None or isinstance(event, Message):
                return event

    def messages(self, timeout: float) -> Iterator[Message]:
        """Messages as they come, until none came for `timeout` seconds."""
        while (message := self.receive(timeout)) is not None:
            yield message

    # -- closing ------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and stop the background thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self.session.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(self.timeout_s)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
