"""The kill loop of `dmds bench chaos`: SIGKILL the server again and again under load from both
protocols, restart it on the same data dir, then prove that nothing acknowledged was lost or stored
twice, that everything arrived in order, and that the receipts the protocols promise came.

The load
--------
Five recipients, one of each kind: a session user online throughout (a reconnecting client), a
session user offline until the end, a session user that logs in and out at random, a classic user
online throughout (CONNECTed again after every restart) and a classic user offline until the end.
One session sender and one classic sender write to each of them, so every pair of protocols is
covered. Senders number their texts (`alias#n`); each sender writes to one recipient only.

What counts as acknowledged, and what the contracts allow
---------------------------------------------------------
- Session (session.md §7): a `send` is acknowledged by `Accepted`, sent only after the commit. The
  client keeps every unanswered send and writes it again, with the same key, on the next connection
  (`dmds.client.session`), so every send ends acknowledged, with the id of the one message stored.
- Classic (classic.md): a SEND is acknowledged by reply code 0 and its id. A SEND refused before its
  connection was accepted, or answered with an error code, stored nothing: it is sent again with the
  same text. A SEND whose connection broke before the reply may or may not be stored, and classic has
  no key that would make a resend safe: it is *in doubt*, never sent again (the next SEND carries the
  next number), and may be delivered once or not at all, never twice.
- Recipients: a message whose delivery was not recorded before a crash (classic: the push written;
  session: the `ack` committed) is pushed again after the restart with the same id (architecture.md,
  "A crash between a push and the commit ... can deliver a message twice, never zero times";
  session.md: "it must de-duplicate by message_id"). The checker drops those repeats by id, as any
  client must, and counts them as `redelivered`. A *duplicate* is one sent message stored under two
  ids: never allowed, nor is a loss (an acknowledged message missing), a gap (a stored id never
  delivered), a message out of order, or an id carrying another text than the one acknowledged.
- Receipts: a classic sender must get `SEND_MESS_ACK` for every delivered message (stored until
  pushed; a crash just after a push repeats it, so duplicates are counted, not failed). A session
  sender's `delivered` leaves the outbox once queued on its connection (session.md §7, "Receipts are
  not acknowledged"), so a kill can lose it: the missing ones must show `delivered_at` in History.
  Read receipts are not exercised.

After the last restart the load goes on for a moment, the senders stop, every recipient is brought
online and a *fence* message is sent to each: pushes go out in commit order, so once a recipient has
the fence it has everything stored before it, and ids 1 to the fence's must all have arrived.
"""

from __future__ import annotations

from dmds.bench.killloop.check import MUST_BE_ZERO, Verdict, check, receipts_complete
from dmds.bench.killloop.classic_users import ClassicRecipient, ClassicSender, ClassicUser
from dmds.bench.killloop.ledger import Ledger, RecipientLog, SenderLog, text_of
from dmds.bench.killloop.loop import KillLoopConfig, cancel_and_close, fence_and_drain, kill_loop
from dmds.bench.killloop.server import (
    DRAIN_CAP_S,
    DRAIN_STALL_S,
    HOST,
    KILL_SERVER_ARGS,
    ChaosServer,
    ServerExited,
    wait_progressing,
    wait_until,
)
from dmds.bench.killloop.session_users import SessionRecipient, SessionSender, SessionUser

__all__ = [
    "DRAIN_CAP_S",
    "DRAIN_STALL_S",
    "HOST",
    "KILL_SERVER_ARGS",
    "MUST_BE_ZERO",
    "ChaosServer",
    "ClassicRecipient",
    "ClassicSender",
    "ClassicUser",
    "KillLoopConfig",
    "Ledger",
    "RecipientLog",
    "SenderLog",
    "ServerExited",
    "SessionRecipient",
    "SessionSender",
    "SessionUser",
    "Verdict",
    "cancel_and_close",
    "check",
    "fence_and_drain",
    "kill_loop",
    "receipts_complete",
    "text_of",
    "wait_progressing",
    "wait_until",
]
