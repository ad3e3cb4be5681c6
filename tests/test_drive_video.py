"""Cross-speaker lip sync against the driving speaker's own mouth (talk3d.eval.drive_video)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from talk3d.eval import drive_video
from talk3d.eval.driver import Rendered
from talk3d.eval.report import EvalConfig, evaluate
from tests.test_eval_report import EchoDriver
from tests.tiny_data import make_tiny_dataset


def test_closures_runs_and_recall() -> None:
    speaker = np.array([0.3, 0.0, 0.0, 0.3, 0.3, 0.3, 0.01, 0.3, 0.3, 0.3])
    closed = drive_video.closed_frames(speaker, speaker)
    assert drive_video.closure_runs(closed) == [(1, 3), (6, 7)]
    avatar_closed = np.zeros(10, bool)
    assert drive_video.closure_recall(closed, avatar_closed) == 0.0
    avatar_closed[8] = True  # two frames after the second closure: inside the tolerance
    assert drive_video.closure_recall(closed, avatar_closed, tolerance=2) == 0.5
    assert drive_video.closure_recall(closed, avatar_closed, tolerance=1) == 0.0
    assert math.isnan(drive_video.closure_recall(np.zeros(5, bool), avatar_closed[:5]))


class ClipDriver(EchoDriver):
    """Renders the driving clip's own frames (``frozen``: always its most open frame)."""

    def __init__(self, root: Path, clip: Path, frozen: bool = False):
        super().__init__(root)
        from talk3d.render.probe import read_frames

        self.frames = np.stack(list(read_frames(clip)))
        self.frozen = frozen

    def render(self, audio_feats, blink, poses, frame_indices, yaw=0.0, pitch=0.0, batch_size=4, torso=None, phones=None):
        idx = np.asarray(frame_indices)
        for s in range(0, len(idx), batch_size):
            sel = np.minimum(idx[s:s + batch_size], len(self.frames) - 1)
            rgb = self.frames[np.full_like(sel, self.open_frame)] if self.frozen else self.frames[sel]
            depth = np.full((len(sel), 8, 8), 4.0, np.float32)
            yield Rendered(rgb=rgb, depth=depth, person=np.ones(rgb.shape[:3], np.float32))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from talk3d.synthetic import SyntheticConfig, make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "sample", SyntheticConfig(seconds=4.0, size=128)).video


def test_a_mouth_that_copies_the_speaker_scores_high_and_a_frozen_one_fails(tmp_path: Path, clip: Path,
                                                                            monkeypatch) -> None:
    data = make_tiny_dataset(tmp_path / "data", num_frames=20, size=48)
    speaker, tracked = drive_video.speaker_opening(clip, 25.0, 100)
    assert tracked > 0.9 and np.nanstd(speaker) > 0.02
    # the avatar's own range is the speaker's here: the mirror avatar is the speaker
    monkeypatch.setattr(drive_video, "training_opening", lambda driver: speaker)
    mirror, arrays = drive_video.video_driven(ClipDriver(data, clip), clip, 4.0, 8)
    assert mirror["opening_corr"] > 0.95 and mirror["opening_corr_lag_frames"] == 0
    assert mirror["speaker_closures"] >= 2 and mirror["closure_recall"] == mirror["closure_precision"] == 1.0
    assert mirror["range_vs_training"] == pytest.approx(1.0, abs=0.05)
    frozen_driver = ClipDriver(data, clip, frozen=True)
    frozen_driver.open_frame = int(np.nanargmax(speaker))
    frozen, _ = drive_video.video_driven(frozen_driver, clip, 4.0, 8)
    assert frozen["closure_recall"] == 0.0 and (frozen["range_vs_training"] or 0.0) < 0.1
    assert arrays["speaker"].shape == arrays["avatar"].shape == (100,)


def test_eval_reports_driving_clips(tmp_path: Path, clip: Path) -> None:
    data = make_tiny_dataset(tmp_path / "data", num_frames=20, size=128)  # the clip's frames are the "renders"
    run = tmp_path / "run"
    run.mkdir()
    cfg = EvalConfig(drive_videos=[str(clip)], max_val_frames=4, view_frames=1, max_cross_seconds=1.0,
                     speed_frames=1, batch_size=4, vad="energy", video=False)
    report = evaluate(run, cfg, driver=ClipDriver(data, clip))
    row = report["video_driven"][0]
    assert row["frames"] == 25 and row["opening_corr"] is not None
    assert (run / "eval" / "drive.png").stat().st_size > 0
    assert "Driven by other speakers' clips" in (run / "eval" / "report.md").read_text()


def test_a_driving_clip_without_video_or_sound_is_refused_in_one_line(tmp_path: Path, clip: Path) -> None:
    from talk3d.errors import UserError

    wav = clip.parent / "audio.wav"
    with pytest.raises(UserError, match="has no video stream"):
        drive_video.check_driving_clip(wav)
    (tmp_path / "fake.mp4").write_text("not a video")
    with pytest.raises(UserError, match="not a video ffmpeg can read"):
        drive_video.check_driving_clip(tmp_path / "fake.mp4")
    with pytest.raises(UserError, match="does not exist"):
        drive_video.check_driving_clip(tmp_path / "missing.mp4")
    drive_video.check_driving_clip(clip)  # video and sound: accepted
