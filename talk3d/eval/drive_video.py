"""Cross-speaker lip sync against a real reference: the driving speaker's own mouth.

A driving clip that has video carries its ground truth: the speaker's tracked mouth. The
avatar is rendered with the clip's audio at a fixed head pose (mean training pose, eyes open,
resting torso), its mouth is tracked in the renders, and the two openings are compared:

* correlation at the best lag within +-:data:`MAX_LAG` frames (and that lag);
* closure recall: of the speaker's closures (runs of frames whose opening lies in the bottom
  :data:`CLOSED_FRACTION` of the speaker's own p10..p90 range: lips together on p/b/m and in
  pauses), the share during which the avatar's mouth also closes (bottom of *its* range, taken
  from its training clip's tracked mouth), within +-:data:`MAX_LAG` frames;
* closure precision: the same the other way round, of the avatar's closures the share during
  which the speaker's lips are closed (a mouth that never opens has recall 1 and a low
  precision, and a small range);
* dynamic range: the rendered opening's p10..p90 span over the training clip's.

Openings are the inner-lip gap over the eye-corner distance (scale free), so two faces of
different size and framing compare directly.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from talk3d.eval import metrics
from talk3d.eval.suites import nan_to_none, render_fixed_pose
from talk3d.eval.tracking import detect_sequence

MAX_LAG = 2
"""Frames of audio-to-mouth offset allowed either way."""
CLOSED_FRACTION = 0.25
"""A mouth is closed in the bottom quarter of its own p10..p90 opening range."""


def opening_range(opening: np.ndarray) -> tuple[float, float]:
    """``(p10, p90)`` of an opening series (NaN ignored)."""
    ok = np.asarray(opening, np.float64)
    ok = ok[np.isfinite(ok)]
    if ok.size == 0:
        return math.nan, math.nan
    return float(np.percentile(ok, 10)), float(np.percentile(ok, 90))


def closed_frames(opening: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(F,)`` bool: ``opening`` in the bottom :data:`CLOSED_FRACTION` of ``reference``'s range."""
    lo, hi = opening_range(reference)
    return np.nan_to_num(np.asarray(opening, np.float64), nan=np.inf) <= lo + CLOSED_FRACTION * (hi - lo)


def closure_runs(closed: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the runs of True in ``closed (F,)`` (``stop`` exclusive)."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], closed.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def closure_recall(speaker_closed: np.ndarray, avatar_closed: np.ndarray, tolerance: int = MAX_LAG) -> float:
    """Share of the speaker's closure runs during which (+-``tolerance`` frames) the avatar's
    mouth is closed at least once; NaN when the speaker never closes."""
    runs = closure_runs(speaker_closed)
    if not runs:
        return math.nan
    n = len(avatar_closed)
    hits = [bool(avatar_closed[max(0, a - tolerance):min(n, b + tolerance)].any()) for a, b in runs]
    return float(np.mean(hits))


def check_driving_clip(clip: Path) -> None:
    """Refuse, in one line, a driving clip that is missing or lacks a video or an audio stream."""
    from talk3d.errors import UserError
    from talk3d.render.probe import probe

    if not clip.is_file():
        raise UserError(f"driving clip '{clip}' does not exist; give an existing video file to --drive-video")
    try:
        info = probe(clip)
    except ValueError:
        raise UserError(f"'{clip}' is not a video ffmpeg can read; give a talking-head clip to --drive-video") from None
    if info.video_codec is None:
        raise UserError(f"'{clip}' has no video stream: --drive-video needs the speaker's face (use --audio for "
                        f"audio alone)")
    if info.audio_codec is None:
        raise UserError(f"'{clip}' has no audio stream: --drive-video drives the avatar with the clip's sound")


def speaker_opening(clip: str | Path, fps: float, count: int) -> tuple[np.ndarray, float]:
    """The driving speaker's tracked opening at the render's frame times ``(count,)`` (NaN where
    no face; the clip's own frame nearest each render frame) and the share of frames tracked."""
    from talk3d.render.probe import probe, read_frames

    src_fps = probe(clip).fps or fps
    need = int(math.ceil(count * src_fps / fps)) + 1
    lm, ok = detect_sequence(itertools.islice(read_frames(clip), need))
    opening = np.where(ok, metrics.mouth_opening(np.nan_to_num(lm)), np.nan) if len(ok) else np.zeros(0)
    pick = np.floor((np.arange(count) + 0.5) / fps * src_fps).astype(int)
    out = np.full(count, np.nan)  # render frames past the clip's last video frame have no reference
    inside = pick < len(opening)
    out[inside] = opening[pick[inside]]
    return out, float(ok.mean()) if len(ok) else 0.0


def training_opening(driver: Any) -> np.ndarray:
    """The avatar's own mouth opening over its training frames (tracked in prep)."""
    from talk3d.dataset import TalkingHeadDataset

    ds = TalkingHeadDataset(driver.dataset_dir)
    train = np.asarray(ds.manifest.train_frames)
    return metrics.mouth_opening(np.asarray(ds.landmarks)[train]).astype(np.float64)


def video_driven(driver: Any, clip: str | Path, max_seconds: float, batch_size: int) -> tuple[dict, dict]:
    """Drive the avatar with ``clip``'s audio and compare its mouth with the speaker's.

    Returns:
        figures (JSON-able) and arrays ``{"speaker", "avatar"}`` ``(F,)`` openings for the plot.
    """
    seq = driver.driving_sequence(clip, max_seconds)
    n = len(seq.blink)
    speaker, tracked = speaker_opening(clip, driver.fps, n)
    rgb = render_fixed_pose(driver, seq.features, np.arange(n), batch_size, f"driven by {Path(clip).name}",
                            seq.phones)
    lm, ok = detect_sequence(rgb)
    avatar = np.where(ok, metrics.mouth_opening(np.nan_to_num(lm)), np.nan).astype(np.float64)
    own = training_opening(driver)
    corr, lag = metrics.best_lag_correlation(avatar, speaker, MAX_LAG)
    speaker_closed, avatar_closed = closed_frames(speaker, speaker), closed_frames(avatar, own)
    (a_lo, a_hi), (o_lo, o_hi), (s_lo, s_hi) = opening_range(avatar), opening_range(own), opening_range(speaker)
    figures = {
        "clip": str(clip), "frames": n, "speaker_tracked": tracked, "render_tracked": float(ok.mean()) if len(ok) else 0.0,
        "opening_corr": nan_to_none(corr), "opening_corr_lag_frames": int(lag),
        # closures need the render's mouth: with it mostly untracked they are unknown, not missed
        "closure_recall": nan_to_none(closure_recall(speaker_closed, avatar_closed)) if ok.mean() >= 0.5 else None,
        "closure_precision": nan_to_none(closure_recall(avatar_closed, speaker_closed)) if ok.mean() >= 0.5 else None,
        "speaker_closures": len(closure_runs(speaker_closed)),
        "range_vs_training": nan_to_none((a_hi - a_lo) / (o_hi - o_lo)) if o_hi > o_lo else None,
        "range_vs_speaker": nan_to_none((a_hi - a_lo) / (s_hi - s_lo)) if s_hi > s_lo else None,
    }
    return figures, {"speaker": speaker, "avatar": avatar}
