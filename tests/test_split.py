"""Held-out splits: the clip's tail, or its most turned head poses (prep --holdout turned)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from talk3d.dataset import Manifest, runs_of, split_frames
from talk3d.errors import UserError
from talk3d_prep.split import tail_split, turned_split

FPS = 25.0


def turning_yaw(n: int = 500, left: float = 20.0, right: float = 12.0) -> np.ndarray:
    """A head that turns to ``left`` then ``right`` degrees and back, twice, plus tracking noise."""
    t = np.arange(n) / FPS
    wave = np.sin(2 * math.pi * t / 5.0)
    yaw = np.where(wave > 0, left * wave, right * wave) + 3.0
    return yaw + np.random.default_rng(0).normal(0, 0.3, n)


def test_turned_split_holds_out_both_sides_in_long_enough_runs_with_margins():
    yaw = turning_yaw()
    s = turned_split(yaw, FPS)
    n = yaw.size
    train, val = split_frames(n, s.train_end, s.val_runs, s.margin_runs)
    assert 0.12 * n <= val.size <= 0.25 * n
    dev = yaw - np.median(yaw)
    assert (dev[val] > 8).any() and (dev[val] < -8).any()           # both sides
    assert np.abs(dev[val]).min() > np.percentile(np.abs(dev[train]), 50)  # the most turned ones
    for a, b in s.val_runs:
        assert b - a >= math.ceil(0.5 * FPS)
    margin = np.zeros(n, bool)
    for a, b in s.margin_runs:
        margin[a:b] = True
    assert not margin[val].any() and not margin[train].any()
    for a, b in s.val_runs:  # 5 frames (0.2 s) each side, unless at the clip's ends
        assert a == 0 or margin[max(0, a - 5):a].all()
        assert b == n or margin[b:b + 5].all()
    assert np.union1d(np.union1d(train, val), np.flatnonzero(margin)).size == n


def test_turned_split_one_sided_and_still_heads():
    yaw = np.minimum(turning_yaw(left=0.5, right=22.0), 3.0)  # turns one way only
    s = turned_split(yaw, FPS)
    _, val = split_frames(yaw.size, s.train_end, s.val_runs, s.margin_runs)
    assert (yaw[val] - np.median(yaw) < -5).all()
    with pytest.raises(UserError, match="--holdout tail"):
        turned_split(np.random.default_rng(1).normal(0, 0.5, 300), FPS)


def test_tail_split_and_manifest_frames():
    s = tail_split(100, 0.1)
    assert s.train_end == 90 and not s.val_runs
    m = Manifest(num_frames=100, fps=25.0, size=32, intrinsics=np.eye(3).tolist(), train_end=90)
    assert np.array_equal(m.train_frames, np.arange(90)) and np.array_equal(m.val_frames, np.arange(90, 100))
    turned = Manifest(num_frames=100, fps=25.0, size=32, intrinsics=np.eye(3).tolist(), train_end=100,
                      holdout="turned", val_runs=[[10, 25], [70, 85]], margin_runs=[[5, 10], [25, 30], [65, 70]])
    turned.check()
    assert turned.val_frames.size == 30 and turned.train_frames.size == 55
    assert runs_of(turned.val_frames) == [[10, 25], [70, 85]]
    assert runs_of(np.array([False, True, True, False, True])) == [[1, 3], [4, 5]]
    bad = Manifest(num_frames=100, fps=25.0, size=32, intrinsics=np.eye(3).tolist(), train_end=100,
                   val_runs=[[10, 200]])
    with pytest.raises(ValueError, match="val_runs"):
        bad.check()


def test_a_tracking_glitch_is_not_a_turn():
    yaw = np.minimum(turning_yaw(left=0.5, right=22.0), 3.0)
    yaw[100] = 12.0  # one frame's glitch to the other side
    s = turned_split(yaw, FPS)
    _, val = split_frames(yaw.size, s.train_end, s.val_runs, s.margin_runs)
    dev = yaw - np.median(yaw)
    assert (dev[val] < -5).mean() > 0.9


def test_a_larger_turned_share_tests_further_beyond_the_training_range():
    yaw = turning_yaw()
    dev = yaw - np.median(yaw)
    ranges, beyond = [], []
    for fraction in (0.15, 0.3):
        s = turned_split(yaw, FPS, fraction)
        train, val = split_frames(yaw.size, s.train_end, s.val_runs, s.margin_runs)
        assert 0.8 * fraction * yaw.size <= val.size <= 1.6 * fraction * yaw.size
        lo, hi = dev[train].min(), dev[train].max()
        ranges.append(hi - lo)
        beyond.append(float(np.maximum(dev[val] - hi, lo - dev[val]).clip(0).mean()))
    assert ranges[1] < ranges[0] - 2.0 and beyond[1] > beyond[0] + 1.0


def test_holdout_fraction_sets_the_share_of_the_chosen_split():
    from talk3d_prep.pipeline import PrepConfig

    assert PrepConfig(holdout="turned").with_holdout_fraction(0.3).turned_fraction == 0.3
    tail = PrepConfig().with_holdout_fraction(0.2)
    assert (tail.val_fraction, tail.turned_fraction) == (0.2, PrepConfig().turned_fraction)
