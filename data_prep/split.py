"""Which frames a dataset holds out: the clip's last part, or its most turned head poses.

``--holdout tail`` (default) keeps the last ``val_fraction`` of the frames for validation.
``--holdout turned`` holds out the frames whose head yaw lies furthest from the clip's median,
on each side where the clip turns, so the avatar is measured against real frames at angles it
never saw: contiguous runs of at least ``min_seconds``, and a margin of frames around each run
that is neither trained nor evaluated (neighbouring frames are nearly the same picture).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talk3d.dataset import runs_of
from talk3d.errors import UserError

MIN_TURN_DEG = 5.0
"""A side of the clip counts as turned when the yaw leaves the median by more than this."""


@dataclass
class Split:
    """A dataset's held-out frames (see :class:`talk3d.dataset.Manifest`)."""

    train_end: int
    """Frames from here on are held out (``num_frames`` when only ``val_runs`` are)."""
    val_runs: list[list[int]]
    """Held-out ``[start, stop)`` runs besides the tail."""
    margin_runs: list[list[int]]
    """``[start, stop)`` runs neither trained on nor evaluated."""


def tail_split(num_frames: int, val_fraction: float) -> Split:
    """The last ``val_fraction`` of the frames (at least one) held out."""
    train_end = num_frames - max(1, int(round(num_frames * val_fraction)))
    if train_end < 1:
        raise UserError(f"the video gives only {num_frames} frames, too few to hold out a validation part")
    return Split(train_end, [], [])


def turned_split(yaw: np.ndarray, fps: float, fraction: float = 0.15, min_seconds: float = 0.5,
                 margin_seconds: float = 0.2) -> Split:
    """Hold out the most turned frames.

    The yaw is smoothed over ``min_seconds`` first. Each side of the median yaw that the clip
    turns to (by more than :data:`MIN_TURN_DEG`) gets an equal share of ``fraction`` of the
    frames: its most turned ones, if turned by more than that too. Runs shorter than
    ``min_seconds`` grow around their middle; runs closer than two margins merge; each run gets
    a margin of ``margin_seconds`` (at least 2 frames) on both sides.

    Args:
        yaw: ``(N,)`` head yaw per frame, degrees (any zero; the median is subtracted).
    Raises:
        UserError: the head does not turn, or too few frames would remain for training.
    """
    yaw = np.asarray(yaw, dtype=np.float64)
    n = yaw.size
    min_len = max(2, int(np.ceil(min_seconds * fps - 1e-9)))
    margin = max(2, int(round(margin_seconds * fps)))
    dev = yaw - np.median(yaw)  # smoothed over min_seconds: a tracking glitch is not a turn
    smooth = np.convolve(np.pad(dev, min_len // 2, mode="edge"), np.ones(min_len) / min_len, mode="valid")[:n]
    sides = [s for s in (1.0, -1.0) if (s * smooth).max() > MIN_TURN_DEG]
    if not sides:
        raise UserError(f"the head turns by at most {np.abs(smooth).max():.1f} degrees from its median in this "
                        f"video: --holdout turned needs a clip in which the head turns (> {MIN_TURN_DEG:g} degrees); "
                        f"use the default --holdout tail")
    share = max(1, int(round(fraction * n / len(sides))))
    held = np.zeros(n, bool)
    for s in sides:  # the side's most turned frames, and only frames that are turned
        d = s * smooth
        order = np.argsort(-d, kind="stable")[:share]
        held[order[d[order] > MIN_TURN_DEG]] = True
    _fill_gaps(held, 2 * margin)  # a training island this small would be all margin
    for a, b in runs_of(held):
        if b - a < min_len:  # grow around the middle to the minimum length
            lo = int(np.clip((a + b) // 2 - min_len // 2, 0, max(0, n - min_len)))
            held[lo:lo + min_len] = True
    _fill_gaps(held, 2 * margin)
    val_runs = runs_of(held)
    near = np.zeros(n, bool)
    for a, b in val_runs:
        near[max(0, a - margin):min(n, b + margin)] = True
    margin_runs = runs_of(near & ~held)
    if (~near).sum() < max(2, n // 2):
        raise UserError(f"holding out the turned frames would leave only {(~near).sum()} of {n} frames for "
                        f"training; give a longer video or use --holdout tail")
    return Split(n, val_runs, margin_runs)


def _fill_gaps(held: np.ndarray, longest: int) -> None:
    """Hold out (in place) the gaps of at most ``longest`` frames between held-out runs."""
    n = held.size
    for a, b in runs_of(~held):
        if a > 0 and b < n and b - a <= longest:
            held[a:b] = True
