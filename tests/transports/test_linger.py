"""The lingering close's clock: which bound ends it, with time passed in."""

from __future__ import annotations

from dmds.transports.linger import Linger


def test_a_client_that_keeps_sending_is_cut_off_at_linger_s() -> None:
    linger = Linger(now=100.0, linger_s=30.0, idle_s=5.0)
    for t in range(101, 130):
        linger.received(65536, float(t))
        assert not linger.expired(float(t) + 0.5)
    assert linger.deadline == 130.0
    assert linger.expired(130.0)
    assert linger.cut_off(130.0)  # still sending: logged as cut off
    assert linger.dropped == 29 * 65536


def test_a_silent_client_is_closed_after_idle_s() -> None:
    linger = Linger(now=100.0, linger_s=30.0, idle_s=5.0)
    linger.received(10, 102.0)
    assert not linger.expired(106.9)
    assert linger.expired(107.0)
    assert not linger.cut_off(107.0)  # it had stopped: an ordinary end
