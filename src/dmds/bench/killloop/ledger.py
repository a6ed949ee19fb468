"""What the load sent and what arrived: the texts, a log per sender and recipient, and the ledger of a run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


def text_of(sender: str, n: int) -> str:
    """The n-th text of `sender`: names both, varies in length, not only ASCII."""
    return f"{sender}#{n} " + "ñ" * (n % 17)


def parse_text(text: str) -> tuple[str, int] | None:
    head = text.split(" ", 1)[0]
    sender, _, number = head.rpartition("#")
    return (sender, int(number)) if sender and number.isdigit() else None


@dataclass
class SenderLog:
    alias: str
    protocol: str  # "session" or "classic"
    to: str
    issued: int = 0  # texts 1..issued were sent, or tried
    acked: dict[int, int] = field(default_factory=dict)  # n -> message id, for every acknowledged send
    in_doubt: set[int] = field(default_factory=set)  # classic: no reply; stored or not
    receipts: Counter[int] = field(default_factory=Counter)  # message id -> receipts received
    receipt_keys: dict[int, str] = field(default_factory=dict)  # session: message id -> key of its receipt
    errors: Counter[str] = field(default_factory=Counter)  # unexpected answers
    #: session: texts refused with a store failure and sent again; a refused send stored nothing,
    #: so its resend is a new send that texts already in flight behind it may overtake
    refused: set[int] = field(default_factory=set)


@dataclass
class RecipientLog:
    alias: str
    protocol: str
    mode: str  # "online", "offline" or "flip"
    arrivals: list[tuple[int, str, str]] = field(default_factory=list)  # (message id, sender, text)

    def ids(self) -> set[int]:
        return {mid for mid, _, _ in self.arrivals}


@dataclass
class Ledger:
    """Everything the load did, for the checker; `lives` counts acknowledgements per server life."""

    senders: list[SenderLog]
    recipients: list[RecipientLog]
    lives: list[int] = field(default_factory=lambda: [0])
    #: per life, seconds from each session send to its Accepted (resends included)
    latencies: list[list[float]] = field(default_factory=lambda: [[]])
    reconnections: int = 0  # session clients that got their connection back by themselves
    replaced_clients: int = 0  # session clients that gave up and were replaced
    #: the database is killed too: the store-failure answer (INTERNAL) is then expected, and counted
    database_killed: bool = False
    store_failures: int = 0

    def acked(self, latency_s: float | None = None) -> None:
        self.lives[-1] += 1
        if latency_s is not None:
            self.latencies[-1].append(latency_s)

    def progress(self) -> int:
        """Grows with every message or receipt that arrives."""
        return sum(len(r.arrivals) for r in self.recipients) + sum(s.receipts.total() for s in self.senders)

    def new_life(self) -> None:
        self.lives.append(0)
        self.latencies.append([])
