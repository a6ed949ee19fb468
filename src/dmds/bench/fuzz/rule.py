"""The rule every fuzz target is held to: the targets, their small limits, and `RuleBroken`."""

from __future__ import annotations

from typing import Final

#: The targets `run_fuzz` runs by default, in order.
TARGETS: Final = ("classic-server", "classic-client", "session-server", "session-client", "soap")
#: Not run by default: a target broken on purpose, so a test can prove that crashes get reported.
SELF_CHECK: Final = "self-check"

# Small limits by default let the fuzzer reach the limit checks with short inputs.
CLASSIC_MAX_FIELD: Final = 32
CLASSIC_MAX_TEXT: Final = 64
# Just above the Welcome the client oracle starts with (144 bytes).
SESSION_SMALL_FRAME: Final = 160

MAX_LEN: Final = {
    "classic-server": 2048,
    "classic-client": 2048,
    # Deep MessagePack nesting needs room: a nested array costs one byte per level.
    "session-server": 16384,
    "session-client": 16384,
    "soap": 16384,
    SELF_CHECK: 64,
}


class RuleBroken(AssertionError):
    """A target did something the rule does not allow. The fuzzer counts it as a crash."""


def in_pieces(data: bytes, size: int) -> list[bytes]:
    """`data` in pieces of `size` bytes. A size of 0 means one piece."""
    if size <= 0 or len(data) <= size:
        return [data]
    return [data[i : i + size] for i in range(0, len(data), size)]
