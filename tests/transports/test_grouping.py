"""session_grouping: how a run of Message pushes is cut into Messages frames."""

from __future__ import annotations

import msgspec

from dmds.protocols.session import frames as f
from dmds.transports.session_grouping import pages


def _run(n: int, text: str = "hello", attachment_at: int = -1) -> list[f.Message]:
    att = f.Attachment(7, "a.png", "image/png", 10)
    return [
        f.Message("ana", i, f"{text} {i}", 1.0, att if i == attachment_at else None) for i in range(1, n + 1)
    ]


def _ids(frames: list[f.Frame]) -> list[list[int]]:
    return [
        [m.message_id for m in frame.messages] if isinstance(frame, f.Messages) else [frame.message_id]
        for frame in frames
        if isinstance(frame, f.Messages | f.Message)
    ]


def test_a_run_that_fits_is_one_frame_and_one_that_does_not_is_cut_within_the_budget() -> None:
    assert _ids(list(pages(_run(100), 1 << 20))) == [list(range(1, 101))]
    assert list(pages([], 1 << 20)) == []
    lone = list(pages(_run(1), 1 << 20))
    assert len(lone) == 1
    assert isinstance(lone[0], f.Message)
    cut = list(pages(_run(100, text="x" * 100), 10_000))
    assert [i for ids in _ids(cut) for i in ids] == list(range(1, 101))
    assert len(cut) > 1
    for frame in cut:  # each well within the budget once encoded
        assert isinstance(frame, f.Messages)
        assert len(msgspec.msgpack.encode(frame)) <= 10_000


def test_a_run_with_an_attachment_is_counted_message_by_message() -> None:
    run = _run(50, text="y" * 100, attachment_at=10)
    cut = list(pages(run, 10_000))
    assert [i for ids in _ids(cut) for i in ids] == list(range(1, 51))
    assert len(cut) > 1
    assert _ids(list(pages(run, 1 << 20))) == [list(range(1, 51))]
