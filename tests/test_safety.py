"""Never lose a user's files: one test per finding of the hostile-user review (issue 14).

Data loss first (items 1-4), then silent failures (5-7), one-line errors (8) and hygiene
(9-14). Every test here failed on the commit before the fix.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from talk3d.dataset import validate
from talk3d.errors import CheckpointError, DatasetError, UserError
from talk3d.fit import checkpoint as ck
from talk3d.fit.config import tiny_config
from talk3d.fit.trainer import fit
from talk3d.render.config import RenderConfig
from talk3d.render.driver import render
from talk3d_cli.main import app
from talk3d_prep.pipeline import PrepConfig, run_prep
from tests.render_helpers import write_speech_like
from tests.test_prep_clips import astronaut_region, make_clip, write_tone
from tests.tiny_data import make_tiny_dataset

runner = CliRunner()


def one_line_error(result) -> str:
    """The CLI failed cleanly: non-zero exit, no traceback, exactly one line saying what is wrong."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "Traceback" not in result.output
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content (to show nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, Path]:
    """A tiny dataset and a 2-step run fitted on it (copied by each test that changes them)."""
    root = tmp_path_factory.mktemp("safety")
    data = make_tiny_dataset(root / "data")
    fit(data, root / "run", tiny_config(steps=2))
    return {"data": data, "run": root / "run", "audio": write_speech_like(root / "speech.wav", 0.6)}


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def no_face_clip(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("noface")
    blank = np.full_like(astronaut_region(), 120)
    return make_clip(root / "blank.mp4", [blank] * 80)


# --------------------------------------------------------------------------------------
# 1-4: data loss


def test_1_fit_never_takes_over_a_folder_that_merely_holds_config_json(base, tmp_path):
    out = tmp_path / "P"
    out.mkdir()
    (out / "config.json").write_text('{"my": 1}')
    (out / "poses.npy").write_text("x")
    before = snapshot(out)
    with pytest.raises(UserError, match="not a talk3d run"):
        fit(base["data"], out, tiny_config(steps=1))
    with pytest.raises(UserError, match="not a talk3d run"):
        fit(base["data"], out, tiny_config(steps=1), force=True)
    assert snapshot(out) == before


def test_2_prep_force_removes_only_talk3d_entries(base, tmp_path, no_face_clip):
    # a folder that merely holds a manifest.json is not a dataset: --force refuses, deletes nothing
    w = tmp_path / "W"
    (w / "src").mkdir(parents=True)
    (w / "manifest.json").write_text("{}")
    (w / "src" / "app.js").write_text("1")
    (w / "README").write_text("mine")
    before = snapshot(w)
    with pytest.raises(UserError, match="not a talk3d dataset"):
        run_prep(no_face_clip, w, PrepConfig(size=64), force=True)
    assert snapshot(w) == before
    # in a real dataset, --force lists what prep wrote: a user's own file is never among them
    data = copy_of(base["data"], tmp_path / "D")
    (data / "notes.txt").write_text("keep me")
    from talk3d.dataset import DATASET_ENTRIES
    from talk3d.folders import commit_staged

    staged = data / ".prep" / "dataset"
    shutil.copytree(base["data"], staged)
    commit_staged(data, staged, "dataset", DATASET_ENTRIES)
    assert (data / "notes.txt").read_text() == "keep me" and validate(data)
    marker = json.loads((data / ".talk3d.json").read_text())
    assert marker["kind"] == "dataset" and "frames" in marker["entries"] and "notes.txt" not in marker["entries"]
    # even a tampered marker never makes --force remove a user's file or leave the folder
    (data / ".talk3d.json").write_text(json.dumps({**marker, "entries": [*marker["entries"], "notes.txt", "../W"]}))
    shutil.copytree(base["data"], staged)
    commit_staged(data, staged, "dataset", DATASET_ENTRIES)
    assert (data / "notes.txt").read_text() == "keep me" and (w / "README").is_file() and validate(data)


def test_3_output_that_is_inside_or_contains_the_input_is_refused(base, tmp_path):
    data = copy_of(base["data"], tmp_path / "data")
    before = snapshot(data)
    for out in (data, data / "run", tmp_path):
        with pytest.raises(UserError, match="input dataset"):
            fit(data, out, tiny_config(steps=1), force=True)
    assert snapshot(data) == before
    video = tmp_path / "W" / "clip.mp4"
    video.parent.mkdir()
    write_tone(video, 4.0)
    with pytest.raises(UserError, match="input video"):
        run_prep(video, video.parent, PrepConfig(size=64), force=True)
    with pytest.raises(UserError, match="input run folder"):
        render(base["run"], base["audio"], base["run"] / "x.mp4", RenderConfig())
    audio_copy = shutil.copy(base["audio"], tmp_path / "speech.mp4")
    with pytest.raises(UserError, match="input audio"):
        render(base["run"], audio_copy, Path(audio_copy), RenderConfig(), force=True)
    one_line_error(runner.invoke(app, ["eval", str(base["run"]), "--out", str(base["run"]), "--force"]))
    one_line_error(runner.invoke(app, ["fit", str(data), "-o", str(data), "--force"]))


def test_4_prep_force_keeps_the_old_dataset_when_the_new_one_fails(base, tmp_path, no_face_clip):
    data = copy_of(base["data"], tmp_path / "data")
    before = snapshot(data)
    with pytest.raises(UserError, match="no face"):
        run_prep(no_face_clip, data, PrepConfig(size=64), force=True)
    assert snapshot(data) == before and validate(data)


def test_4_fit_force_keeps_the_old_run_when_the_dataset_is_corrupt(base, tmp_path):
    run = copy_of(base["run"], tmp_path / "run")
    data = copy_of(base["data"], tmp_path / "data")
    (data / "frames" / "000000.jpg").write_bytes(b"\x00" * 300)
    before = snapshot(run)
    with pytest.raises(DatasetError, match="000000.jpg"):
        fit(data, run, tiny_config(steps=2), force=True)
    assert snapshot(run) == before


def test_4_fit_force_replaces_the_run_only_once_the_new_one_is_complete(base, tmp_path, monkeypatch):
    import talk3d.fit.trainer as trainer

    run = copy_of(base["run"], tmp_path / "run")
    (run / "my_notes.txt").write_text("mine")
    avatar_before = (run / ck.AVATAR).read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "validate", interrupted)  # the final validation of the new fit
    with pytest.raises(KeyboardInterrupt):
        fit(base["data"], run, tiny_config(steps=3), force=True)
    assert (run / ck.AVATAR).read_bytes() == avatar_before  # the old avatar is untouched meanwhile
    ck.load_run(run)
    monkeypatch.undo()
    res = fit(base["data"], run, tiny_config(steps=3), force=True)  # the same command resumes and swaps
    assert res.steps == 3 and ck.load_run(run).step == 3
    assert (run / "my_notes.txt").read_text() == "mine" and not (run / ".fit-new").exists()


# --------------------------------------------------------------------------------------
# 5-7: silent failures


def _dying_ffmpeg(tmp_path: Path, monkeypatch) -> None:
    """An ffmpeg that encodes nothing: it reads a little, reports a full disk and exits 1."""
    import talk3d.media as media

    real = media.ffmpeg_exe()
    script = tmp_path / "ffmpeg"
    script.write_text(f'#!/bin/sh\ncase " $* " in *" -i - "*)\n  head -c 1000 >/dev/null\n'
                      f'  echo "av_interleaved_write_frame(): No space left on device" >&2\n  exit 1;;\nesac\n'
                      f'exec "{real}" "$@"\n')
    script.chmod(0o755)
    monkeypatch.setattr(media, "ffmpeg_exe", lambda: str(script))


def test_5_render_reports_a_dying_ffmpeg(base, tmp_path, monkeypatch):
    _dying_ffmpeg(tmp_path, monkeypatch)
    with pytest.raises(UserError, match="No space left on device"):
        render(base["run"], base["audio"], tmp_path / "out.mp4", RenderConfig(size=256))
    assert not (tmp_path / "out.mp4").exists()
    line = one_line_error(runner.invoke(app, ["render", str(base["run"]), str(base["audio"]), "-o",
                                              str(tmp_path / "o.mp4"), "--size", "256", "-q"]))
    assert "No space left on device" in line


def test_6_nan_and_out_of_range_angles_are_refused(base, tmp_path):
    for option in (["--yaw", "nan"], ["--pitch", "nan"], ["--motion-scale", "inf"], ["--orbit-range", "nan"]):
        line = one_line_error(runner.invoke(app, ["render", str(base["run"]), str(base["audio"]), "-o",
                                                  str(tmp_path / "o.mp4"), *option]))
        assert option[0] in line
    assert not (tmp_path / "o.mp4").exists()
    mpi = tmp_path / "mpi"
    render(base["run"], base["audio"], tmp_path / "m.mp4", RenderConfig(mpi_dir=mpi, mpi_frames=[0]))
    frame = mpi / "frame_000000"
    one_line_error(runner.invoke(app, ["mpi-view", str(frame), "-o", str(tmp_path / "v.png"), "--yaw", "nan"]))
    meta = json.loads((frame / "mpi.json").read_text())
    for depths in ([float("nan")] * len(meta["depths"]), [0.0] * len(meta["depths"]), [-1.0] * len(meta["depths"])):
        (frame / "mpi.json").write_text(json.dumps({**meta, "depths": depths}))
        one_line_error(runner.invoke(app, ["mpi-view", str(frame), "-o", str(tmp_path / "v.png")]))
    assert not (tmp_path / "v.png").exists()


def test_7_damaged_weights_are_detected_and_fit_repairs_them(base, tmp_path):
    run = copy_of(base["run"], tmp_path / "run")
    meta = json.loads((run / ck.AVATAR_META).read_text())
    assert len(meta["sha256"]) == 64
    path = run / ck.AVATAR
    blob = bytearray(path.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 4096] = bytes(b ^ 0xFF for b in blob[mid:mid + 4096])
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="damaged.*re-run 'talk3d fit' \\(it resumes\\)"):
        ck.load_run(run)
    fit(base["data"], run, tiny_config(steps=2))  # rewrites the avatar from the last checkpoint
    repaired = ck.load_run(run)
    original = ck.load_run(base["run"])
    for (name, a), b in zip(repaired.avatar.state_dict().items(), original.avatar.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# --------------------------------------------------------------------------------------
# 8: one line instead of a traceback


def test_8_read_only_output_is_one_line(base, tmp_path, monkeypatch):
    import tempfile

    ro = tmp_path / "ro"
    ro.mkdir()
    video = make_clip(tmp_path / "v.mp4", [astronaut_region()] * 80)
    mpi = tmp_path / "mpi"
    render(base["run"], base["audio"], tmp_path / "m.mp4", RenderConfig(mpi_dir=mpi, mpi_frames=[0]))
    real_mkstemp, real_mkdir = tempfile.mkstemp, Path.mkdir

    def mkstemp(*args, dir=None, **kwargs):  # tests run as root, where chmod cannot make a folder read-only
        if dir is not None and str(dir).startswith(str(ro)):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(ro)) and self != ro:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(Path, "mkdir", mkdir)
    for args in (["render", str(base["run"]), str(base["audio"]), "-o", str(ro / "o.mp4")],
                 ["prep", str(video), "-o", str(ro / "data"), "--size", "64"],
                 ["mpi-view", str(mpi / "frame_000000"), "-o", str(ro / "v.png")]):
        line = one_line_error(runner.invoke(app, [*args, "-q"]))
        assert "cannot write" in line and "Permission denied" in line, line
    assert list(ro.iterdir()) == []


def test_8_full_disk_names_the_folder_and_the_space_needed(base, tmp_path, monkeypatch, no_face_clip):
    import shutil as shutil_mod

    usage = shutil_mod.disk_usage(tmp_path)
    monkeypatch.setattr(shutil_mod, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(UserError, match=r"needs about [\d,]+ MB.*1 ?MB free|needs about [\d,]+ MB"):
        fit(base["data"], tmp_path / "run", tiny_config(steps=1))
    with pytest.raises(UserError, match="needs about"):
        run_prep(no_face_clip, tmp_path / "W", PrepConfig(size=64))
    monkeypatch.undo()
    # the disk fills up during the fit: one line naming the folder and the space, checkpoint kept

    import talk3d.fit.trainer as trainer

    calls = {"n": 0}
    real_save = ck.save_checkpoint

    def full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run2"))
        return real_save(*args, **kwargs)

    monkeypatch.setattr(trainer.ck, "save_checkpoint", full)
    with pytest.raises(UserError, match="run2.*full.*step 1 is kept.*needs about"):
        fit(base["data"], tmp_path / "run2", tiny_config(steps=3))


def test_8_damaged_dataset_files_are_one_line(base, tmp_path):
    data = copy_of(base["data"], tmp_path / "data")
    (data / "poses.npy").write_bytes((data / "poses.npy").read_bytes()[:200])  # truncated
    with pytest.raises(DatasetError, match="poses.npy.*damaged or truncated"):
        validate(data)
    shutil.copy(base["data"] / "poses.npy", data / "poses.npy")
    jpg = data / "frames" / "000003.jpg"
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])  # undecodable: cut in half
    with pytest.raises(DatasetError, match="frames/000003.jpg"):
        validate(data)
    one_line_error(runner.invoke(app, ["fit", str(data), "-o", str(tmp_path / "run"), "--steps", "1"]))


def test_8_damaged_run_settings_and_sidecars_are_one_line(base, tmp_path):
    run = copy_of(base["run"], tmp_path / "run")
    meta = json.loads((run / ck.AVATAR_META).read_text())
    (run / ck.AVATAR_META).write_text(json.dumps({**meta, "model_config": {**meta["model_config"], "out_res": "abc"}}))
    with pytest.raises(CheckpointError, match="out_res"):
        ck.load_run(run)
    one_line_error(runner.invoke(app, ["render", str(run), str(base["audio"]), "-o", str(tmp_path / "o.mp4")]))
    sidecar = ck.list_checkpoints(run)[-1][1]
    side = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**side, "tensors": "../../avatar.safetensors"}))
    with pytest.raises(CheckpointError, match="not a file inside"):
        ck.load_checkpoint(sidecar)


def test_8_corrupt_prep_state_starts_that_prep_over(tmp_path):
    from talk3d_prep.pipeline import _prepare_out_dir

    out = tmp_path / "W"
    (out / ".prep").mkdir(parents=True)
    marker = {"format": "talk3d-folder", "kind": "dataset", "version": 1, "entries": ["frames"]}
    (out / ".talk3d.json").write_text(json.dumps(marker))
    (out / ".prep" / "state.json").write_text('{"source_sha256": "ab')  # cut by a crash
    _prepare_out_dir(out, "abc", {"size": 64}, force=False)
    assert json.loads((out / ".prep" / "state.json").read_text()) == {"source_sha256": "abc", "settings": {"size": 64}}


def test_8_malformed_mpi_json_and_huge_sizes_are_one_line(base, tmp_path):
    mpi = tmp_path / "mpi"
    render(base["run"], base["audio"], tmp_path / "m.mp4", RenderConfig(mpi_dir=mpi, mpi_frames=[0]))
    frame = mpi / "frame_000000"
    meta = json.loads((frame / "mpi.json").read_text())
    view = ["mpi-view", str(frame), "-o", str(tmp_path / "v.png")]
    one_line_error(runner.invoke(app, [*view, "--size", "100000"]))
    for broken in ({k: v for k, v in meta.items() if k != "layers"}, {},
                   {**meta, "depths": meta["depths"][:-1]}, {**meta, "layers": "layer_000.png"}):
        (frame / "mpi.json").write_text(json.dumps(broken))
        one_line_error(runner.invoke(app, view))


def test_8_config_values_are_range_checked(base, tmp_path):
    for item in ("lr_final_factor=-1", "lr=nan", "model.coarse_samples=0", "loss.l1=-2", "keep_checkpoints=0"):
        line = one_line_error(runner.invoke(app, ["fit", str(base["data"]), "-o", str(tmp_path / "r"), "--size", "32",
                                                  "--set", "min_frames=1", "--set", item, "--steps", "1", "-q"]))
        assert item.split("=")[0].split(".")[-1] in line
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------
# 9-14: hygiene


def test_9_stale_temporaries_are_removed_on_resume(base, tmp_path):
    run = copy_of(base["run"], tmp_path / "run")
    ckpts = run / ck.CHECKPOINTS
    stale = [ckpts / ".step_0000002.k3j_9xq1.tmp.safetensors", ckpts / "tmpa8d_2kq0", run / ".avatar.abcd1234.tmp.json"]
    for p in stale:
        p.write_bytes(b"")
    (ckpts / "tmpa8d_2kq0").write_bytes(os.urandom(1000))
    fit(base["data"], run, tiny_config(steps=3))
    assert not any(p.exists() for p in stale)


def test_10_mpi_layer_names_stay_inside_the_mpi_folder(base, tmp_path):
    from talk3d.render.mpi import load_mpi

    mpi = tmp_path / "mpi"
    render(base["run"], base["audio"], tmp_path / "m.mp4", RenderConfig(mpi_dir=mpi, mpi_frames=[0]))
    frame = mpi / "frame_000000"
    secret = tmp_path / "secret.png"
    shutil.copy(frame / "layer_000.png", secret)
    meta = json.loads((frame / "mpi.json").read_text())
    for name in ("../../secret.png", str(secret), "/etc/passwd"):
        (frame / "mpi.json").write_text(json.dumps({**meta, "layers": [name, *meta["layers"][1:]]}))
        with pytest.raises(UserError, match="not a file inside"):
            load_mpi(frame)


def test_11_a_colon_in_a_file_name_is_not_a_protocol(tmp_path, monkeypatch):
    from talk3d.media import read_audio
    from talk3d.video import probe_video

    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "clip.mp4", [astronaut_region()] * 10)
    os.rename("clip.mp4", "a:b.mp4")
    os.rename("clip.wav", "c:d.wav")
    assert probe_video(Path("a:b.mp4")).has_audio
    assert read_audio(Path("c:d.wav")).size > 0


def test_12_fit_force_drops_a_stale_torso_track(base, tmp_path):
    with_torso = copy_of(base["data"], tmp_path / "with")
    np.save(with_torso / "torso_offsets.npy", np.full((12, 2), 0.05, np.float32))
    run = tmp_path / "run"
    fit(with_torso, run, tiny_config(steps=1))
    assert (run / "torso_offsets.npy").is_file()
    fit(base["data"], run, tiny_config(steps=1), force=True)  # a dataset without a torso track
    assert not (run / "torso_offsets.npy").exists()
    assert np.all(ck.load_run(run).torso_offsets == 0)


def test_13_outputs_get_the_users_usual_permissions(tmp_path):
    from talk3d.io import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_14_inputs_are_checked_before_any_work(tmp_path, monkeypatch):
    import talk3d_prep.pipeline as pipeline

    calls = []
    monkeypatch.setattr(pipeline.track_mod, "track_frames", lambda *a, **k: calls.append(1))
    video = make_clip(tmp_path / "v.mp4", [astronaut_region()] * 80)
    garbage = tmp_path / "speech.wav"
    garbage.write_bytes(os.urandom(5000))
    with pytest.raises(UserError, match="speech.wav"):
        run_prep(video, tmp_path / "out", PrepConfig(size=64, audio=garbage))
    assert calls == [] and not (tmp_path / "out").exists()


def test_14_negative_motion_scale_is_refused(base, tmp_path):
    line = one_line_error(runner.invoke(app, ["render", str(base["run"]), str(base["audio"]), "-o",
                                              str(tmp_path / "o.mp4"), "--motion-scale", "-1"]))
    assert "--motion-scale" in line


# --------------------------------------------------------------------------------------
# found by the hostile-input review of this change


def test_review_a_failed_first_eval_can_be_run_again(base, tmp_path):
    run = copy_of(base["run"], tmp_path / "run")
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(os.urandom(3000))
    args = ["eval", str(run), "--vad", "energy", "--no-video", "--frames", "3", "--view-frames", "1",
            "--seconds", "0.5", "-q"]
    one_line_error(runner.invoke(app, [*args, "-a", str(garbage)]))
    assert not (run / "eval").exists()  # a failed first evaluation leaves nothing behind
    r = runner.invoke(app, [*args, "-a", str(base["audio"])])
    assert r.exit_code == 0, r.output
    assert (run / "eval" / "report.json").is_file() and not (run / "eval" / ".eval-new").exists()
    one_line_error(runner.invoke(app, [*args, "--seconds", "nan"]))


def test_review_force_never_replaces_foreign_files_or_special_files(base, tmp_path):
    out = tmp_path / "x.mp4"
    (tmp_path / "x.alpha").mkdir()
    (tmp_path / "x.alpha" / "holiday.png").write_text("mine")
    with pytest.raises(UserError, match="did not write"):
        render(base["run"], base["audio"], out, RenderConfig(alpha=True), force=True)
    assert (tmp_path / "x.alpha" / "holiday.png").read_text() == "mine"
    fifo = tmp_path / "fifo.mp4"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        render(base["run"], base["audio"], fifo, RenderConfig(), force=True)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    with pytest.raises(UserError, match="overlap"):
        render(base["run"], base["audio"], out, RenderConfig(alpha=True, mpi_dir=tmp_path / "x.alpha"), force=True)


def test_review_links_are_never_written_through(base, tmp_path):
    run = copy_of(base["run"], tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text("MY CONFIG")
    (run / ".fit-new").symlink_to(elsewhere)
    fit(base["data"], run, tiny_config(steps=2), force=True)
    assert (elsewhere / "config.json").read_text() == "MY CONFIG" and sorted(os.listdir(elsewhere)) == ["config.json"]
    # a file of a staging folder's name is not talk3d's: refused, never deleted
    (run / ".fit-new").write_text("mine")
    with pytest.raises(UserError, match="unfinished work under that name"):
        fit(base["data"], run, tiny_config(steps=2), force=True)
    assert (run / ".fit-new").read_text() == "mine"
    # a checkpoints folder linked to another disk keeps that disk's own tmp* files
    run2 = copy_of(base["run"], tmp_path / "run2")
    disk = tmp_path / "disk"
    shutil.move(str(run2 / "checkpoints"), disk)
    (run2 / "checkpoints").symlink_to(disk)
    (disk / "tmpabcdefgh").write_text("mine")
    fit(base["data"], run2, tiny_config(steps=3))
    assert (disk / "tmpabcdefgh").read_text() == "mine"


def test_review_more_outputs_kept_apart_from_inputs(base, tmp_path):
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    speech = shutil.copy(base["audio"], audio_dir / "speech.wav")
    with pytest.raises(UserError, match="input audio"):
        render(base["run"], speech, tmp_path / "m.mp4", RenderConfig(mpi_dir=audio_dir))
    data = copy_of(base["data"], tmp_path / "data")
    run = copy_of(base["run"], tmp_path / "run")
    meta = json.loads((run / ck.AVATAR_META).read_text())
    (run / ck.AVATAR_META).write_text(json.dumps({**meta, "dataset_dir": str(data)}))
    with pytest.raises(UserError, match="input dataset"):
        render(run, None, data / "val.mp4", RenderConfig(frames="val"))
    assert not (data / "val.mp4").exists()
    with pytest.raises(UserError, match="only .* frames"):
        render(run, base["audio"], tmp_path / "n.mp4", RenderConfig(mpi_dir=tmp_path / "mpi", mpi_frames=[99999]))
    assert not (tmp_path / "n.mp4").exists()


def test_review_more_one_line_errors(base, tmp_path):
    (tmp_path / "a.mp4").write_text("a file")
    one_line_error(runner.invoke(app, ["render", str(base["run"]), str(base["audio"]), "-q",
                                       "-o", str(tmp_path / "a.mp4" / "x.mp4")]))
    one_line_error(runner.invoke(app, ["render", str(base["run"]), str(base["audio"]), "-q", "--device", "meta",
                                       "-o", str(tmp_path / "b.mp4")]))
    one_line_error(runner.invoke(app, ["fit", str(base["data"]), "-o", str(tmp_path / "r"), "--set", "model=3"]))
    mpi = tmp_path / "mpi"
    render(base["run"], base["audio"], tmp_path / "m.mp4", RenderConfig(mpi_dir=mpi))
    one_line_error(runner.invoke(app, ["mpi-view", str(mpi / "frame_000000"), "-o", str(tmp_path / "v.jpg")]))


# --------------------------------------------------------------------------------------
# found by the code review of this change


@pytest.mark.parametrize("stop_after", range(1, 9))
def test_review_an_interrupted_swap_rolls_forward(tmp_path, monkeypatch, stop_after):
    from talk3d.folders import commit_staged, finish_interrupted_swap

    entries = ["a.txt", "b", "c.txt", "gone.txt"]
    folder, staging = tmp_path / "F", tmp_path / "F" / ".stage"
    (folder / "b").mkdir(parents=True)
    for name, text in (("a.txt", "old a"), ("b/x", "old b"), ("gone.txt", "old only"), ("mine.txt", "user")):
        (folder / name).write_text(text)
    (staging / "b").mkdir(parents=True)
    for name, text in (("a.txt", "new a"), ("b/x", "new b"), ("c.txt", "new c")):
        (staging / name).write_text(text)
    real, calls = os.replace, []

    def dies(src, dst):
        calls.append(1)
        if len(calls) == stop_after:
            raise KeyboardInterrupt  # the process is killed here
        return real(src, dst)

    monkeypatch.setattr(os, "replace", dies)
    with pytest.raises(KeyboardInterrupt):
        commit_staged(folder, staging, "run", entries)
    monkeypatch.setattr(os, "replace", real)
    finish_interrupted_swap(folder, staging, "run", entries)  # what the next command does first
    assert (folder / "mine.txt").read_text() == "user"
    if stop_after == 1:  # killed while writing the journal: the swap never began, both results are whole
        assert (folder / "a.txt").read_text() == "old a" and (folder / "gone.txt").read_text() == "old only"
        assert (staging / "a.txt").read_text() == "new a" and (staging / "c.txt").read_text() == "new c"
        return
    assert (folder / "a.txt").read_text() == "new a" and (folder / "b" / "x").read_text() == "new b"
    assert (folder / "c.txt").read_text() == "new c" and not (folder / "gone.txt").exists()
    assert (folder / "mine.txt").read_text() == "user"
    assert not staging.exists() and not (folder / ".talk3d-old").exists()


def test_review_a_finished_refit_that_was_not_swapped_in_is_swapped_in(base, tmp_path, monkeypatch):
    import talk3d.fit.trainer as trainer

    run = copy_of(base["run"], tmp_path / "run")
    old_avatar = (run / ck.AVATAR).read_bytes()

    def commit_dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "commit_staged", commit_dies)
    with pytest.raises(KeyboardInterrupt):
        fit(base["data"], run, tiny_config(steps=3), force=True)
    staged = (run / ".fit-new" / ck.AVATAR).read_bytes()
    assert (run / ck.AVATAR).read_bytes() == old_avatar and staged != old_avatar
    monkeypatch.undo()
    res = fit(base["data"], run, tiny_config(steps=3), force=True)  # the same command again
    assert res.steps == 3 and (run / ck.AVATAR).read_bytes() == staged and not (run / ".fit-new").exists()


def test_review_force_starts_over_a_staged_refit_made_with_other_settings(base, tmp_path, monkeypatch):
    import talk3d.fit.trainer as trainer

    run = copy_of(base["run"], tmp_path / "run")
    other = tiny_config(steps=3)
    other.model.triplane_channels = 4

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(base["data"], run, other, force=True)
    assert ck.list_checkpoints(run / ".fit-new")
    monkeypatch.undo()
    res = fit(base["data"], run, tiny_config(steps=3), force=True)
    assert res.steps == 3 and ck.load_run(run).model_config.triplane_channels == tiny_config().model.triplane_channels


def test_review_a_resumed_prep_keeps_its_finished_steps_when_it_fails(tmp_path, monkeypatch):
    import talk3d_prep.pipeline as pipeline

    video = make_clip(tmp_path / "v.mp4", [astronaut_region()] * 80)
    out = tmp_path / "data"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "_step_torso", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_prep(video, out, PrepConfig(size=64, photometric_poses=False))
    assert (out / ".prep" / "track.json").is_file()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(out))

    monkeypatch.setattr(pipeline, "_step_torso", full)
    with pytest.raises(UserError, match="full"):
        run_prep(video, out, PrepConfig(size=64, photometric_poses=False))
    monkeypatch.setattr(pipeline, "_step_torso", lambda *a, **k: (_ for _ in ()).throw(UserError("bad")))
    with pytest.raises(UserError, match="bad"):
        run_prep(video, out, PrepConfig(size=64, photometric_poses=False))
    assert (out / ".prep" / "track.json").is_file()  # tracking is never done twice
