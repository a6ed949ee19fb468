"""The checker of the kill loop and the flood finds what it must: a test that cannot fail is no proof."""

from __future__ import annotations

from dmds.bench.killloop import Ledger, RecipientLog, SenderLog, Verdict, check, text_of


def ledger(protocol: str = "session", messages: int = 5) -> Ledger:
    """A clean run: `messages` texts acknowledged with ids 1..n, delivered in order, receipts in."""
    sender = SenderLog("s", protocol, "r", issued=messages)
    sender.acked = {n: n for n in range(1, messages + 1)}
    sender.receipts.update(range(1, messages + 1))
    recipient = RecipientLog("r", "session", "online")
    recipient.arrivals = [(n, "s", text_of("s", n)) for n in range(1, messages + 1)]
    return Ledger([sender], [recipient])


def verdict(run: Ledger, fence: int = 6) -> Verdict:
    """The check once the recipient has its fence (the last message, sent after the load)."""
    run.recipients[0].arrivals.append((fence, "fence", "fence"))
    return check(run, {"r": fence})


def test_a_clean_run_passes() -> None:
    result = verdict(ledger())
    assert result.ok, result.problems
    assert result.counts["acknowledged"] == result.counts["delivered"] == 5
    assert result.counts["losses"] == result.counts["duplicates"] == 0


def test_a_repeat_with_the_same_id_is_allowed_and_counted() -> None:
    run = ledger()
    run.recipients[0].arrivals.insert(3, (2, "s", text_of("s", 2)))
    result = verdict(run)
    assert result.ok, result.problems
    assert result.counts["redelivered"] == 1


def test_a_drain_cut_short_is_reported_as_such() -> None:
    result = check(ledger(), {"r": 6})  # the fence never came
    assert result.counts["undrained"] == 1
    assert not result.ok


def test_a_missing_acknowledged_message_is_a_loss_and_a_gap() -> None:
    run = ledger()
    del run.recipients[0].arrivals[2]
    result = verdict(run)
    assert not result.ok
    assert result.counts["losses"] == 1
    assert result.counts["gaps"] == 1


def test_a_message_stored_twice_is_a_duplicate() -> None:
    run = ledger()
    run.recipients[0].arrivals.append((6, "s", text_of("s", 2)))
    run.senders[0].receipts[6] += 1
    result = verdict(run, fence=7)
    assert result.counts["duplicates"] == 1
    assert not result.ok


def test_order_and_content_are_checked() -> None:
    run = ledger()
    arrivals = run.recipients[0].arrivals
    arrivals[1], arrivals[2] = arrivals[2], arrivals[1]
    assert verdict(run).counts["out_of_order"] == 1

    run = ledger()
    run.recipients[0].arrivals.append((3, "s", text_of("s", 4)))  # id 3 again, another text
    assert verdict(run).counts["corrupt"] == 1

    run = ledger()
    run.senders[0].acked[5] = 4  # acknowledged under another id than it was delivered with
    assert verdict(run).counts["corrupt"] == 1

    run = ledger()
    run.recipients[0].arrivals.append((6, "s", text_of("s", 99)))  # never sent
    assert verdict(run, fence=7).counts["corrupt"] == 1


def test_receipts() -> None:
    run = ledger("classic")
    del run.senders[0].receipts[3]
    result = verdict(run)
    assert result.counts["receipts_missing_classic"] == 1  # classic receipts are stored until pushed
    assert not result.ok

    run = ledger("session")
    del run.senders[0].receipts[3]
    result = verdict(run)
    assert result.counts["receipts_missing_session"] == 1  # may go with a dropped connection...
    assert result.ok
    assert not check(run, {"r": 6}, undelivered_in_history=1).ok  # ...if History shows it delivered

    run = ledger()
    run.senders[0].receipts[9] += 1
    assert verdict(run).counts["receipts_spurious"] == 1


def test_classic_sends_in_doubt_may_arrive_once_not_twice() -> None:
    def in_doubt_run(times: int) -> Ledger:
        run = ledger("classic")
        sender = run.senders[0]
        sender.issued = 7
        sender.in_doubt = {6, 7}
        for mid in range(6, 6 + times):  # text 6 was stored `times` times
            run.recipients[0].arrivals.append((mid, "s", text_of("s", 6)))
            sender.receipts[mid] += 1
        return run

    result = verdict(in_doubt_run(1), fence=7)
    assert result.ok, result.problems
    assert result.counts["in_doubt_delivered"] == 1
    assert verdict(in_doubt_run(2), fence=8).counts["duplicates"] == 1
