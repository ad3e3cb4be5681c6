"""Lip-sync matrix: every fitted avatar driven by every other shared clip, against the driving
speaker's own tracked mouth (talk3d.eval.drive_video), plus the avatar's own held-out frames
and audio without video (voice-activity figures).

    python3 benchmarks/lip_sync_matrix.py obama=runs/obama feifei=runs/feifei ... \\
        --shared ../shared/data --seconds 6 --out /tmp/lip_matrix.json   # (+ .md beside it)

``--lip-drive audio`` drives the mouth with the model's own audio-to-lip head even where the run
has a phonetic lip prior (the defaults before it), so both drives compare on the same weights;
``auto`` (the default, as ``talk3d render``): the prior for the other speakers' audio, the head
for the avatar's own held-out frames; ``prior``: the prior for both.

A clip is "the avatar's own" when its file name is the one the avatar's dataset was prepared
from; it is left out of the cross-speaker cells and replaced by the held-out figures: the lip
code's held-out correlation from the fit, and the fixed-pose mouth correlation on held-out frames.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def held_out(driver: Any, batch: int) -> dict[str, Any]:
    """The avatar's own held-out figures: the lip code's correlation (the fit's audio head, or the
    phonetic prior's code when it drives the mouth) and the fixed-pose mouth-opening correlation
    of the render with the tracked ground truth."""
    from talk3d.dataset import TalkingHeadDataset
    from talk3d.eval import metrics, suites

    ds = TalkingHeadDataset(driver.dataset_dir)
    idx = np.asarray(ds.manifest.val_frames)
    open_gt = metrics.mouth_opening(np.asarray(ds.landmarks)[idx])
    fixed = suites.fixed_pose_lip_sync(driver, idx, open_gt, batch)
    code_corr = driver.run.metrics.get("lip_code_val_corr")
    if driver.phones is not None:  # the prior drives the held-out frames too
        code_corr = prior_code_corr(driver, ds, idx)
    return {"frames": int(idx.size), "lip_code_val_corr": code_corr,
            "fixed_pose_corr": fixed["mouth_open_corr_fixed_pose"],
            "fixed_pose_std_ratio": fixed["mouth_open_std_ratio_fixed_pose"]}


def prior_code_corr(driver: Any, ds: Any, idx: np.ndarray) -> float:
    """Correlation of the prior's first lip-code component with the tracked one on frames ``idx``
    (the fit's ``lip_code_val_corr``, for the prior's codes)."""
    from talk3d.fit.lipsync import lip_codes
    from talk3d.model.drive import DrivingClip

    m = ds.manifest
    tracked = lip_codes(ds.landmarks, ds.canonical_landmarks, np.asarray(m.train_frames), driver.run.model_config.mouth_code)
    clip = DrivingClip.from_arrays(driver.run.model_config, driver.audio_feats, driver.feature_rate, driver.fps,
                                   driver.blink, driver.poses, None, driver.run.lip_prior, driver.phones)
    return float(np.corrcoef(clip.mouth[idx, 0].numpy(), tracked[idx, 0])[0, 1])


def avatar_row(name: str, run: Path, clips: list[Path], audios: list[Path], seconds: float, batch: int,
               lip_drive: str = "auto") -> dict:
    """Every figure of one avatar (``lip_drive``: see :data:`talk3d.model.lip_prior.LIP_DRIVES`)."""
    from talk3d.eval import suites
    from talk3d.eval.drive_video import video_driven
    from talk3d.eval.driver import RunDriver

    driver = RunDriver(run, "cpu", lip_drive)
    own = Path(str(driver.manifest.source)).name
    row: dict[str, Any] = {"avatar": name, "run": str(run), "own_clip": own, "lip_drive": lip_drive,
                           "held_out": held_out(driver, batch),
                           "drivers": {}, "audio": {}}
    for clip in clips:
        if clip.name == own:
            continue
        t0 = time.perf_counter()
        figures, _ = video_driven(driver, clip, seconds, batch)
        row["drivers"][clip.stem] = {**figures, "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps({name: {clip.stem: figures}}), flush=True)
    for audio in audios:
        f = suites.cross_driven(driver, audio, seconds, batch, "energy").figures
        row["audio"][audio.stem] = {k: f[k] for k in ("speech_pause_ratio", "mouth_vad_corr", "mouth_vad_corr_best")}
    return row


def summary(rows: list[dict]) -> dict[str, Any]:
    """Means over every cross-speaker cell (the issue's targets: correlation >= 0.6, recall >= 0.7)."""
    cells = [c for r in rows for c in r["drivers"].values()]

    def mean(key: str) -> float | None:
        vals = [c[key] for c in cells if c.get(key) is not None and math.isfinite(c[key])]
        return float(np.mean(vals)) if vals else None

    return {"cells": len(cells), "opening_corr": mean("opening_corr"), "closure_recall": mean("closure_recall"),
            "closure_precision": mean("closure_precision"), "range_vs_training": mean("range_vs_training")}


def markdown(report: dict[str, Any]) -> str:
    """One table of the cross-speaker cells (correlation / closure recall / range), one of the rest."""
    rows = report["rows"]
    drivers = sorted({d for r in rows for d in r["drivers"]})
    fmt = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = ["# Lip-sync matrix", "", "Cells: opening correlation (best lag within +-2 frames) / closure recall / "
             "closure precision / opening range vs the avatar's training clip.", "",
             "| avatar \\ driver | " + " | ".join(drivers) + " |", "| --- |" + " --- |" * len(drivers)]
    for r in rows:
        cells = [(lambda c: "own clip" if c is None else
                  f"{fmt(c['opening_corr'])} / {fmt(c['closure_recall'])} / {fmt(c['closure_precision'])} / "
                  f"{fmt(c['range_vs_training'])}")
                 (r["drivers"].get(d)) for d in drivers]
        lines.append(f"| {r['avatar']} | " + " | ".join(cells) + " |")
    s = report["summary"]
    lines += ["", f"Mean over {s['cells']} cells: correlation {fmt(s['opening_corr'])}, closure recall "
              f"{fmt(s['closure_recall'])}, closure precision {fmt(s['closure_precision'])}, range "
              f"{fmt(s['range_vs_training'])}.", "",
              "| avatar | held-out lip-code corr | held-out fixed-pose mouth corr | audio: speech/pause ratio, "
              "corr with voice activity |", "| --- | --- | --- | --- |"]
    for r in rows:
        h = r["held_out"]
        audio = "; ".join(f"{k}: {fmt(v['speech_pause_ratio'])}, {fmt(v['mouth_vad_corr'])}" for k, v in r["audio"].items())
        lines.append(f"| {r['avatar']} | {fmt(h['lip_code_val_corr'])} | {fmt(h['fixed_pose_corr'])} | {audio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR of each fitted avatar")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data", help="shared data folder")
    ap.add_argument("--seconds", type=float, default=6.0, help="seconds of each driver rendered")
    ap.add_argument("--audio", nargs="*", default=["macron_fr_12s.wav"], help="audio-only drivers in shared/audio")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lip-drive", choices=("auto", "prior", "audio"), default="auto",
                    help="auto: the runs' phonetic lip priors for other speakers, the audio head for the avatar's own "
                         "held-out frames; prior: the priors for both; audio: the model's audio head for both")
    ap.add_argument("--out", type=Path, default=Path("/tmp/lip_sync_matrix.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    clips = sorted((args.shared / "video").glob("*.mp4"))
    audios = [args.shared / "audio" / a for a in args.audio if (args.shared / "audio" / a).is_file()]
    rows = [avatar_row(*spec.split("=", 1)[:1], Path(spec.split("=", 1)[1]), clips, audios, args.seconds, args.batch,
                       args.lip_drive) for spec in args.runs]
    report = {"seconds": args.seconds, "lip_drive": args.lip_drive, "rows": rows, "summary": summary(rows)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
