"""Checks of `talk3d render` on a fitted avatar: streams/duration per view, face + yaw at 30 degrees,
mouth opening during speech vs pauses.

    python benchmarks/check_render_views.py RUN_DIR [--shared ../shared/data] [--out /tmp/check_render]
        [--size 256] [--views 0,15,30,-30] [--mouth-audio macron_fr_12s.wav,two_speakers_30s.wav]

For each view it renders ``radio31_en_8s.wav`` and reports codecs (``ffmpeg -i``), duration vs
the audio's, and frame count = round(duration x fps). On the yaw-30 render it runs the project's
face tracker (``talk3d.face``) on every frame: detection rate, and yaw re-estimated with
``estimate_pose`` against the run's canonical landmarks; reported both absolute (vs the tracked
yaw + 30) and relative to the yaw-0 render (same frames). For the mouth check it renders the given
clips at yaw 0 and compares the mouth opening (``talk3d.face.landmarks.mouth_opening``) in frames
with voice (energy VAD, ``talk3d.eval.vad.energy_vad``) against frames in pauses.
Writes ``check_render_views.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np


def _track(video: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Landmarks ``(F, 478, 3)`` (NaN where missed), valid mask ``(F,)``, frame side."""
    from talk3d.face.tracker import FaceTracker
    from talk3d.render.probe import read_frames

    lms, ok, side = [], [], 0
    with FaceTracker(static=False) as tr:
        for frame in read_frames(video):
            side = frame.shape[0]
            lm = tr.detect(frame)
            ok.append(lm is not None)
            lms.append(lm if lm is not None else np.full((478, 3), np.nan, np.float32))
    return np.stack(lms), np.array(ok), side


def _yaws(lms: np.ndarray, ok: np.ndarray, canonical: np.ndarray, intrinsics: np.ndarray, size: int) -> np.ndarray:
    import torch

    from talk3d.camera import camera_angles
    from talk3d.face.pose import estimate_pose

    out = np.full(len(lms), np.nan)
    if ok.any():
        c2w = estimate_pose(lms[ok], canonical, intrinsics, size)
        out[ok] = camera_angles(torch.from_numpy(c2w))[:, 0].numpy()
    return out


def _clean(obj):
    """NaN -> None so the JSON stays standard."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _yaw30_entry(videos: dict, run, canonical: np.ndarray, k: np.ndarray) -> dict:
    """Head yaw re-estimated from the +30 degree render: against the tracked yaw + 30, and
    relative to the yaw-0 render when there is one."""
    import torch

    from talk3d.camera import camera_angles
    from talk3d.render.paths import head_motion

    lm30, ok30, side = _track(videos[30.0])
    y30 = _yaws(lm30, ok30, canonical, k, side)
    n = len(y30)
    head, _ = head_motion(torch.as_tensor(run.poses), n, "tracked")
    tracked_yaw = camera_angles(head)[:, 0].numpy()
    entry = {"frames": int(n), "detected": int(ok30.sum()), "detection_rate": float(ok30.mean()),
             "yaw_est_median": float(np.nanmedian(y30)),
             "yaw_error_vs_tracked_plus_30_median": float(np.nanmedian(y30 - (tracked_yaw + 30.0))),
             "within_5deg_abs": float(np.nanmean(np.abs(y30 - (tracked_yaw + 30.0)) <= 5.0))}
    if 0.0 in videos:
        lm0, ok0, _ = _track(videos[0.0])
        y0 = _yaws(lm0, ok0, canonical, k, side)
        rel = y30 - y0[:n]
        entry.update({"yaw_rel_to_yaw0_median": float(np.nanmedian(rel)),
                      "within_5deg_rel": float(np.nanmean(np.abs(rel - 30.0) <= 5.0)),
                      "yaw0_detection_rate": float(ok0.mean())})
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="run folder from 'talk3d fit'")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("/tmp/check_render"))
    ap.add_argument("--size", type=int, default=None, help="render side (default: model output size)")
    ap.add_argument("--views", default="0,15,30,-30")
    ap.add_argument("--mouth-audio", default="macron_fr_12s.wav,two_speakers_30s.wav")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=RuntimeWarning)  # NaN means/medians when no face is found


    from talk3d.device import resolve_device
    from talk3d.eval.vad import energy_vad
    from talk3d.face.landmarks import mouth_opening
    from talk3d.fit.checkpoint import load_run
    from talk3d.media import read_audio
    from talk3d.render.config import RenderConfig
    from talk3d.render.driver import render_run
    from talk3d.render.probe import count_frames, probe

    args.out.mkdir(parents=True, exist_ok=True)
    run = load_run(args.run, resolve_device(args.device))
    k = np.asarray(run.manifest.intrinsics, dtype=np.float64)
    canon_path = Path(run.dataset_dir) / "canonical_landmarks.npy"
    canonical = np.load(canon_path, allow_pickle=False) if canon_path.is_file() else \
        run.avatar.canonical_landmarks.cpu().numpy()
    report: dict = {"run": str(args.run), "views": {}, "mouth": {}}
    speech = args.shared / "audio" / "radio31_en_8s.wav"
    dur = read_audio(speech).shape[0] / 16000
    videos = {}
    for v in [float(x) for x in args.views.split(",")]:
        out = args.out / f"radio31_yaw{v:+.0f}.mp4"
        res = render_run(run, speech, out, RenderConfig(yaw=v, size=args.size, device=args.device), force=True)
        info = probe(out)
        n = count_frames(out)
        videos[v] = out
        report["views"][f"{v:+.0f}"] = {
            "video_codec": info.video_codec, "audio_codec": info.audio_codec, "container_duration": info.duration,
            "audio_duration": dur, "frames": n, "expected_frames": int(np.floor(dur * res.fps + 0.5)),
            "duration_error_frames": abs(info.duration - dur) * res.fps, "render_fps": res.render_fps,
        }
        print(json.dumps({f"yaw {v:+.0f}": report["views"][f"{v:+.0f}"]}))
    if 30.0 in videos:
        report["yaw30"] = _yaw30_entry(videos, run, canonical, k)
        print(json.dumps({"yaw30": report["yaw30"]}))
    for name in [s for s in args.mouth_audio.split(",") if s]:
        path = args.shared / "audio" / name
        out = args.out / f"mouth_{Path(name).stem}.mp4"
        res = render_run(run, path, out, RenderConfig(size=args.size, device=args.device), force=True)
        lms, ok, _ = _track(out)
        opening = np.where(ok, mouth_opening(np.nan_to_num(lms)), np.nan)
        audio = read_audio(path)
        vad100 = energy_vad(audio, 16000)
        t = (np.arange(len(opening)) + 0.5) / res.fps
        vad = vad100[np.clip((t * 100).astype(int), 0, len(vad100) - 1)]
        sp, pa = np.nanmean(opening[vad]), np.nanmean(opening[~vad])
        report["mouth"][name] = {"frames": int(len(opening)), "speech_frames": int(vad.sum()),
                                 "pause_frames": int((~vad).sum()), "detection_rate": float(ok.mean()),
                                 "opening_speech": float(sp), "opening_pause": float(pa),
                                 "ratio_speech_over_pause": float(sp / max(pa, 1e-6))}
        print(json.dumps({name: report["mouth"][name]}))
    (args.out / "check_render_views.json").write_text(json.dumps(_clean(report), indent=2) + "\n")
    print(f"wrote {args.out / 'check_render_views.json'}")


if __name__ == "__main__":
    main()
