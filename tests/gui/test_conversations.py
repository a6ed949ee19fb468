"""Conversations without Qt: grouping per peer, unread counts, and matching receipts to sent messages."""

from __future__ import annotations

from datetime import datetime

from dmds.gui.conversations import AttachedFile, Conversations, Direction, Status, human_size

NOW = datetime(2024, 5, 6, 7, 8, 9)


def test_messages_are_grouped_per_peer_most_recent_first() -> None:
    conv = Conversations()
    conv.add_incoming("ana", 1, "hola", NOW, read=False)
    out = conv.add_outgoing("luis", "buenas", NOW)
    conv.add_incoming("ana", 2, "¿estás?", NOW, read=False)
    assert conv.peers() == ["ana", "luis"]
    assert [m.text for m in conv.messages("ana")] == ["hola", "¿estás?"]
    assert conv.unread("ana") == 2
    assert conv.unread("luis") == 0
    conv.mark_read("ana")
    assert conv.unread("ana") == 0
    assert out.direction is Direction.OUT
    assert out.status is Status.SENDING
    assert conv.messages("nobody") == []


def test_receipt_marks_the_accepted_message() -> None:
    conv = Conversations()
    message = conv.add_outgoing("ana", "hola  hola", NOW)
    conv.accepted(message.local_id, 7, "hola hola")
    assert (message.status, message.message_id, message.text) == (Status.SENT, 7, "hola hola")
    assert conv.receipt(99) is None  # not ours (and no SEND waiting): ignored
    assert conv.receipt(7) is message
    assert message.status is Status.DELIVERED
    assert conv.receipt(7) is None  # each message is marked once
    assert conv.pending_receipts() == 0


def test_same_id_for_two_recipients_prefers_the_connected_one_then_the_oldest() -> None:
    conv = Conversations()
    to_ana = conv.add_outgoing("ana", "1", NOW)
    to_luis = conv.add_outgoing("luis", "2", NOW)
    to_eva = conv.add_outgoing("eva", "3", NOW)
    for message in (to_ana, to_luis, to_eva):
        conv.accepted(message.local_id, 3, message.text)  # every recipient's third message
    # Luis is connected, Ana is not: the receipt is Luis's.
    assert conv.receipt(3, connected=["luis", "me"]) is to_luis
    # Nobody we know of is connected: the oldest.
    assert conv.receipt(3, connected=[]) is to_ana
    assert conv.receipt(3) is to_eva
    assert conv.pending_receipts() == 0


def test_a_receipt_that_overtakes_its_send_reply_is_kept_until_the_reply() -> None:
    conv = Conversations()
    message = conv.add_outgoing("ana", "hola", NOW)
    assert conv.receipt(1) is None  # the reply is still on its way
    conv.accepted(message.local_id, 1, "hola")
    assert message.status is Status.DELIVERED
    assert conv.pending_receipts() == 0


def test_receipts_of_earlier_sessions_are_dropped_once_no_send_waits() -> None:
    conv = Conversations()
    first = conv.add_outgoing("ana", "uno", NOW)
    assert conv.receipt(5) is None  # held while the SEND waits
    conv.failed(first.local_id, "server unreachable")
    assert first.status is Status.FAILED
    assert first.error == "server unreachable"
    second = conv.add_outgoing("ana", "dos", NOW)
    conv.accepted(second.local_id, 5, "dos")
    assert second.status is Status.SENT  # the old receipt 5 was not taken for this one


def test_session_receipts_match_recipient_and_id_and_never_go_back() -> None:
    conv = Conversations()
    to_ana = conv.add_outgoing("ana", "1", NOW)
    to_luis = conv.add_outgoing("luis", "2", NOW)
    conv.accepted(to_ana.local_id, 4, "1")
    conv.accepted(to_luis.local_id, 4, "2")  # the same id, in another mailbox
    assert conv.session_receipt("luis", 4, read=False) is to_luis
    assert (to_ana.status, to_luis.status) == (Status.SENT, Status.DELIVERED)
    assert conv.session_receipt("luis", 4, read=True) is to_luis
    assert to_luis.status is Status.READ
    assert conv.session_receipt("ana", 4, read=True) is to_ana  # read implies delivered
    assert to_ana.status is Status.READ
    assert conv.session_receipt("ana", 4, read=False) is None  # late, changes nothing
    assert to_ana.status is Status.READ
    assert conv.session_receipt("eva", 4, read=False) is None  # not ours
    assert conv.pending_receipts() == 0


def test_a_session_receipt_that_overtakes_its_accepted_is_kept_until_then() -> None:
    conv = Conversations()
    message = conv.add_outgoing("ana", "hola", NOW)
    assert conv.session_receipt("ana", 1, read=False) is None
    assert conv.session_receipt("ana", 1, read=True) is None
    conv.accepted(message.local_id, 1, "hola")
    assert message.status is Status.READ
    # Once no send waits, what matched nothing is forgotten.
    assert conv.session_receipt("ana", 2, read=False) is None
    later = conv.add_outgoing("ana", "otra", NOW)
    conv.accepted(later.local_id, 2, "otra")
    assert later.status is Status.SENT


def test_mark_read_reports_each_incoming_message_once() -> None:
    conv = Conversations()
    conv.add_incoming("ana", 1, "hola", NOW, read=True)
    conv.add_incoming("ana", 2, "¿estás?", NOW, read=False)
    conv.add_outgoing("ana", "sí", NOW)
    assert conv.mark_read("ana") == [1, 2]
    assert conv.mark_read("ana") == []
    conv.add_incoming("ana", 3, "vale", NOW, read=False)
    assert conv.unread("ana") == 1
    assert conv.mark_read("ana") == [3]
    assert conv.mark_read("nobody") == []


def test_attachments_are_found_by_id() -> None:
    conv = Conversations()
    photo = AttachedFile(7, "foto.jpg", 4096, "image/jpeg")
    conv.add_incoming("ana", 1, "", NOW, read=False, attachment=photo)
    pending = conv.add_outgoing("luis", "toma", NOW, attachment=AttachedFile(0, "a.txt", 3))
    assert conv.attachment(7) == photo
    assert conv.attachment(8) is None
    conv.accepted(pending.local_id, 1, "toma", AttachedFile(8, "a.txt", 3, "text/plain"))
    assert conv.attachment(8) == AttachedFile(8, "a.txt", 3, "text/plain")


def test_human_sizes() -> None:
    assert [human_size(n) for n in (0, 1, 812, 1024, 4072, 65536, 70_000, 10 * 2**20, 3 * 2**30)] == [
        "0 bytes",
        "1 byte",
        "812 bytes",
        "1 KiB",
        "4 KiB",
        "64 KiB",
        "68.4 KiB",
        "10 MiB",
        "3 GiB",
    ]
