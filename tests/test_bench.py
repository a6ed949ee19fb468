"""Each benchmark, run tiny: it works and checks what it measures (never a timed assertion)."""

from __future__ import annotations

from dmds.bench import classic, session


def test_register_bench_runs() -> None:
    results = classic.bench_register(clients=2, seconds=0.5, syncs=["normal"])
    assert [r.name for r in results] == ["baseline (uvloop, answers at once)", "dmds serve --sync normal"]
    assert all(r.requests > 0 and r.errors == 0 for r in results)
    assert "ratio" in classic.report(results, 2, 0.5)


def test_session_send_bench_runs() -> None:
    results = session.bench_send(messages=300, window=50, syncs=["full"])
    assert results[0].messages == 300
    assert "msg/s" in session.report(results, 50)
