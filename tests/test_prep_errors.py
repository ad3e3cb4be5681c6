"""Bad input to `talk3d prep`: one-line UserError, and no partial output folder left behind."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest

from talk3d.errors import UserError
from talk3d.media import ffmpeg_exe
from talk3d.video import FrameReader, probe_video
from talk3d_prep.pipeline import PrepConfig, run_prep
from tests.test_prep_clips import astronaut_clip, astronaut_region, make_clip, write_tone

CFG = PrepConfig(size=64)


def _fails(video: Path, out: Path, match: str, config: PrepConfig = CFG) -> str:
    with pytest.raises(UserError, match=match) as exc:
        run_prep(video, out, config)
    msg = str(exc.value)
    assert "\n" not in msg
    assert not out.exists(), "a failed prep must not leave a new output folder behind"
    return msg


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def test_not_a_media_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n" * 50)
    _fails(bad, tmp_path / "out", "not a readable video")
    _fails(tmp_path / "missing.mp4", tmp_path / "out", "does not exist")


def test_no_video_stream(tmp_path: Path) -> None:
    _fails(write_tone(tmp_path / "speech.wav", 4.0), tmp_path / "out", "no video stream")


def test_no_audio_without_audio_option(tmp_path: Path) -> None:
    clip, _, _ = astronaut_clip(tmp_path / "mute.mp4", n=80, audio=False, static=True)
    _fails(clip, tmp_path / "out", "no audio track; add one with --audio")
    _fails(clip, tmp_path / "out", "audio file .* does not exist",
           PrepConfig(size=64, audio=tmp_path / "nope.wav"))


def test_too_short(tmp_path: Path) -> None:
    clip, _, _ = astronaut_clip(tmp_path / "short.mp4", n=50, static=True)
    _fails(clip, tmp_path / "out", r"2\.0 s long; prep needs at least 3 s")


def test_truncated_file(tmp_path: Path) -> None:
    clip, _, _ = astronaut_clip(tmp_path / "full.mp4", n=100, static=True)
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # header (faststart) survives, half the frames are gone
    _fails(cut, tmp_path / "out", "truncated|corrupt")
    # a file cut inside its header is rejected before any work
    cut.write_bytes(data[:2000])
    _fails(cut, tmp_path / "out", "not a readable video|truncated|corrupt")


def test_no_face_in_too_many_frames_names_the_ranges(tmp_path: Path) -> None:
    base = astronaut_region()
    blank = np.full_like(base, 120)
    frames = [base] * 60 + [blank] * 20  # frames 60-79 have no face
    clip = make_clip(tmp_path / "gone.mp4", frames)
    msg = _fails(clip, tmp_path / "out", "no face found in")
    assert "60-79" in msg and "20 of 80" in msg
    # an existing empty folder is left empty (not deleted, not littered)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no face found in"):
        run_prep(clip, empty, CFG)
    assert empty.is_dir() and not any(empty.iterdir())


def test_existing_folder_is_not_overwritten(tmp_path: Path) -> None:
    clip, _, _ = astronaut_clip(tmp_path / "a.mp4", n=80, static=True)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    with pytest.raises(UserError, match="not a talk3d dataset"):
        run_prep(clip, out, CFG)
    with pytest.raises(UserError, match="not a talk3d dataset"):
        run_prep(clip, out, CFG, force=True)  # --force never deletes a foreign folder
    assert (out / "thesis.txt").read_text() == "precious"
    with pytest.raises(UserError, match="is a file"):
        run_prep(clip, out / "thesis.txt", CFG)


def test_rotation_metadata_is_applied(tmp_path: Path) -> None:
    base = astronaut_region()[:, :200]  # 240 high, 200 wide: rotation swaps the sides
    clip = make_clip(tmp_path / "upright.mp4", [base] * 5, audio=False)
    rotated = tmp_path / "rot.mp4"
    _ffmpeg("-display_rotation", "90", "-i", str(clip), "-c", "copy", str(rotated))
    info = probe_video(rotated)
    assert info.rotation == 90.0 and (info.width, info.height) == (240, 200)
    frame = next(iter(FrameReader(info, 25.0))).astype(np.float32)
    ccw = np.rot90(base, 1).astype(np.float32)  # display rotation is counter-clockwise
    assert np.abs(frame - ccw).mean() < 6.0
    assert np.abs(frame - np.rot90(base, -1)).mean() > 20.0


def test_huge_resolution_is_downscaled(tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=2560x1440:rate=25", "-t", "0.2", "-c:v", "libx264",
            "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(big))
    info = probe_video(big)
    assert (info.width, info.height) == (1280, 720) and info.downscaled
    frames = list(FrameReader(info, 25.0))
    assert len(frames) == 5 and frames[0].shape == (720, 1280, 3)


def test_several_faces_warns_and_tracks_the_largest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import cv2

    face = astronaut_region()
    small = cv2.resize(face, (160, 160), interpolation=cv2.INTER_AREA)
    canvas = np.full((240, 420, 3), 90, np.uint8)
    canvas[:, :240] = face
    canvas[40:200, 250:410] = small
    clip = make_clip(tmp_path / "two.mp4", [canvas] * 76)
    with caplog.at_level(logging.WARNING, logger="talk3d"):
        m = run_prep(clip, tmp_path / "out", CFG)
    assert any("more than one face" in r.getMessage() and "tracking the largest" in r.getMessage()
               for r in caplog.records)
    assert m.stats["frames_with_several_faces"] > 0
    x0, _, side = m.crop_box
    assert x0 + side / 2 < 240  # the crop is centred on the large face (left), not the small one
