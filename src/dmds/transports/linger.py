"""Lingering close: the deadlines of a connection that answered bad input and must not reset.

Theory of operation
-------------------
A client that breaks a limit (a classic field past `max_text_bytes`, a session frame past
`max_frame_bytes`) is answered at once, while it is still sending. If the server then closed its
socket, the kernel would answer the bytes still arriving with a reset, and a reset destroys what the
client has not read yet: the error reply. So, as web servers' lingering close does (nginx's
`lingering_time`/`lingering_timeout`, Apache's `lingering_close`), the server half-closes after the
reply and goes on reading and dropping what arrives, until the client closes (EOF), falls silent for
`linger_idle_s` (it has sent everything and is reading the reply), or `linger_s` have passed since
the reply (a client that never stops sending is cut off: the reset is then its own doing). Nothing is
buffered meanwhile, so a lingering connection costs its slot and the reads, not memory; there is no
byte cap, which would cut off exactly the large requests this is for.

`Linger` only keeps the clock arithmetic (time is passed in); each transport drops the bytes, checks
`expired` from its periodic sweep, and closes.
"""

from __future__ import annotations


class Linger:
    """When one lingering connection must be closed: `linger_s` after it began, or `idle_s` after the
    last bytes arrived, whichever comes first."""

    __slots__ = ("dropped", "end", "idle_s", "last")

    def __init__(self, now: float, linger_s: float, idle_s: float) -> None:
        self.end = now + linger_s
        self.idle_s = idle_s
        self.last = now
        #: bytes read and dropped so far (for the log)
        self.dropped = 0

    def received(self, count: int, now: float) -> None:
        self.dropped += count
        self.last = now

    @property
    def deadline(self) -> float:
        return min(self.end, self.last + self.idle_s)

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def cut_off(self, now: float) -> bool:
        """True if the deadline that passed is `linger_s` (the client was still sending), not idleness."""
        return now >= self.end and self.last + self.idle_s > self.end
