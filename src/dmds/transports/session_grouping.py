"""How session pushes are put into frames: version 2 sends consecutive Message pushes as one
Messages frame, cut so that each stays well within the peer's frame limit."""

from __future__ import annotations

from collections.abc import Iterator

from dmds.protocols.session import frames as f


def grouped(out: list[f.Frame], budget: int) -> list[f.Frame]:
    """Version 2: consecutive Message pushes as Messages frames, each well within a frame (`budget`
    bytes)."""
    grouped: list[f.Frame] = []
    run: list[f.Message] = []
    for frame in out:
        if isinstance(frame, f.Message):
            run.append(frame)
            continue
        if run:
            grouped.extend(pages(run, budget))
            run = []
        grouped.append(frame)
    if run:
        grouped.extend(pages(run, budget))
    return grouped


def pages(run: list[f.Message], budget: int) -> Iterator[f.Frame]:
    """`run` as Messages frames of at most `budget` bytes each (a lone message as itself)."""
    for group in _groups(run, budget):
        yield f.Messages(messages=group) if len(group) > 1 else group[0]


def _groups(run: list[f.Message], budget: int) -> Iterator[list[f.Message]]:
    """`run` cut into groups of at most `budget` bytes each, counting a string at 4 bytes a
    character, its most in UTF-8 (a single message over it is a group of its own)."""
    if len(run) > _COUNT_AT_ONCE and not [m for m in run if m.attachment is not None]:
        # The whole run counted at once (a drain's page most often fits in one group): a third
        # of the loop below.
        strings = len("".join([m.text for m in run])) + len("".join([m.sender for m in run]))
        if _MESSAGE_OVERHEAD * len(run) + 4 * strings <= budget:
            yield run
            return
    group: list[f.Message] = []
    size = 0
    for frame in run:
        cost = _MESSAGE_OVERHEAD + 4 * (len(frame.text) + len(frame.sender))
        if (att := frame.attachment) is not None:
            cost += _MESSAGE_OVERHEAD + 4 * (len(att.name) + len(att.media_type))
        if group and size + cost > budget:
            yield group
            group, size = [], 0
        group.append(frame)
        size += cost
    if group:
        yield group


#: Bytes of a Message push (or of its attachment) besides its strings, at most: keys, ids, a time.
_MESSAGE_OVERHEAD = 96
#: Runs longer than this are counted at once (for a few messages the loop is cheaper).
_COUNT_AT_ONCE = 8
