"""Classic-protocol workloads: REGISTER rate, SEND end to end through real push listeners, a queue drain.

`dmds bench register`: N client processes register new users back to back, one connection per
request, against the trivial baseline (`dmds.bench.baseline`) and then dmds in each sync mode, side
by side in each repetition; the ratio to that repetition's baseline is the figure.

`dmds bench send --protocol classic`: sender/recipient pairs, each user with a real push listener
(the server dials back, one connection per item, classic.md). Every sender sends its messages one
after another, one connection per SEND as the protocol is; the run ends when every message reached
its recipient's listener and every delivery receipt reached its sender's. Latency is from the start
of a SEND to the arrival of its push.

`dmds bench queue --protocol classic`: messages stored for an offline recipient by several sender
processes, then the recipient CONNECTs and the drain is timed up to the last push.

Every run checks what it measures: no error code, every message once, in order, with its text, and
every receipt (dmds sends one for every delivered message, stored or not: classic.md, Semantics).
The generator runs in forked processes, each an uvloop loop speaking the protocol over
asyncio.Protocol, so that its cost stays small next to the server's; both CPUs are reported.
"""

from __future__ import annotations

from dmds.bench.classic.offline_queue import run_queue
from dmds.bench.classic.register import BASELINE, drive_register, run_register
from dmds.bench.classic.send import run_send

__all__ = ["BASELINE", "drive_register", "run_queue", "run_register", "run_send"]
