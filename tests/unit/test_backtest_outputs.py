"""The backtest's vectorised output helpers give what their plain per-row versions give."""
from __future__ import annotations

import numpy as np
import pytest

import ops.backtest
from ops.backtest import NS_PER_MIN, _last_mids, _sample_ends, iso, iso_many


def test_iso_many_is_iso() -> None:
    rng = np.random.default_rng(2)
    ts = np.concatenate([
        [0, 1, 999_999, 1_000_000, 1_704_067_200_123_456_789, 2**63 - 1, -1, -1_000_001, -(2**62)],
        rng.integers(-(2**62), 2**63 - 1, 500),
    ]).astype(np.int64)
    assert iso_many(ts) == [iso(t) for t in ts.tolist()]
    assert iso_many(np.zeros(0, np.int64)) == []


def sample_ends_by_rows(ts: np.ndarray) -> np.ndarray:
    """The rule, row by row: last index of each time; of each minute when times outnumber minutes."""
    ends = np.flatnonzero(np.append(ts[1:] != ts[:-1], True))
    if len(ends) > int((ts[-1] - ts[0]) // NS_PER_MIN) + 1:
        minute = ts[ends] // NS_PER_MIN
        ends = ends[np.append(minute[1:] != minute[:-1], True)]
    return ends


@pytest.mark.parametrize("scale", [10**6, 10**9, 6 * 10**10, 10**12])
def test_sample_ends_follow_the_rule(scale: int) -> None:
    rng = np.random.default_rng(scale % 97)
    for _ in range(200):
        n = int(rng.integers(1, 300))
        ts = np.sort(int(rng.integers(-(10**18), 10**18)) + rng.integers(0, scale, n))
        ts = np.repeat(ts, int(rng.integers(1, 3)))
        assert _sample_ends(ts).tolist() == sample_ends_by_rows(ts).tolist()


class FakeReplay:
    """The parts of a ColumnarReplay that _last_mids reads; `nsym` marks a rejected tick."""

    def __init__(self, sym: np.ndarray, mid: np.ndarray, nsym: int) -> None:
        self.sym, self.mid, self.nsym = sym, mid, nsym

    @property
    def pos(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.sym == s) for s in range(self.nsym)]


@pytest.mark.parametrize("lookback", [64, 1, 1 << 23])  # 1 << 23: no windows, every coin scans
@pytest.mark.parametrize("concentration", [0.05, 1.0, 20.0])
def test_last_mids_are_each_coins_last_price(concentration: float, lookback: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops.backtest, "LOOKBACK", lookback)
    rng = np.random.default_rng(int(concentration * 100))
    for _ in range(40):
        n, nsym = int(rng.integers(1, 2000)), int(rng.integers(1, 5))
        sym = rng.choice(nsym + 1, n, p=rng.dirichlet(np.full(nsym + 1, concentration))).astype(np.intp)
        replay = FakeReplay(sym, rng.uniform(1, 100, n), nsym)
        ends = np.unique(rng.integers(0, n, int(rng.integers(1, 100))))
        got = _last_mids(replay, ends, list(range(nsym)))  # type: ignore[arg-type]
        for s, col in enumerate(got):
            expected = [replay.mid[np.flatnonzero(sym[:e + 1] == s)[-1]] if (sym[:e + 1] == s).any() else np.nan
                        for e in ends.tolist()]
            assert np.array_equal(col, np.array(expected), equal_nan=True)
