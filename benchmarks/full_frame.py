"""Full-frame paste-back on real avatars: held-out figures, seam, and speed against the crop render.

    python3 benchmarks/full_frame.py RUN [RUN ...] [--audio speech.wav] [--frames 50] [--repeats 2]
        [--out /tmp/talk3d_full_frame]

Per run (whose dataset and source video are at hand):
* the first ``--frames`` held-out frames rendered self-driven and pasted into their own source
  frames (``talk3d.eval.full_frame``), with and without the colour match: PSNR full frame / crop
  area at source resolution, the crop PSNR at the working resolution, the seam step next to the
  source's own;
* ``talk3d render`` end to end (``render_run``: audio features, model, paste, H.264 + AAC) with
  and without ``--full-frame`` on the same audio and the same loaded model, alternated
  ``--repeats`` times; the full-frame videos are kept in ``--out`` to look at.
JSON + markdown into ``--out``. Run it on an idle machine (it times).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def held_out(run_dir: Path, frames: int) -> dict:
    from talk3d.dataset import TalkingHeadDataset
    from talk3d.eval import metrics, suites
    from talk3d.eval.driver import RunDriver
    from talk3d.eval.full_frame import full_frame

    driver = RunDriver(run_dir)
    dataset = TalkingHeadDataset(driver.dataset_dir)
    idx = suites.val_indices(driver, frames)
    r = suites.render_all(driver, driver.audio_feats, driver.blink, driver.poses, idx, 0.0, 0.0, 4, "held-out",
                          torso=driver.torso_offsets, phones=driver.phones)
    gt = np.stack([dataset.frame(int(i)) for i in idx])
    crop_psnr = metrics.finite_mean(metrics.psnr(suites._to_tensor(r.rgb), suites._to_tensor(gt)).numpy())
    arrays = {"indices": idx, "rgb": r.rgb, "person": r.person}
    out = {"crop_psnr": crop_psnr}
    for name, match in (("colour_match", True), ("no_colour_match", False)):
        out[name] = full_frame(dataset, arrays, colour_match=match).figures
    return out


def speed(run_dir: Path, audio: Path, out_dir: Path, repeats: int) -> dict:
    from talk3d.fit.checkpoint import load_run
    from talk3d.render.config import RenderConfig
    from talk3d.render.driver import render_run

    run = load_run(run_dir, "cpu")
    times: dict[str, list[float]] = {"crop": [], "full_frame": []}
    result = {}
    for _ in range(repeats):
        for mode in ("crop", "full_frame"):
            path = out_dir / f"{run_dir.name}_{mode}.mp4"
            t = time.perf_counter()
            res = render_run(run, audio, path, RenderConfig(full_frame=mode == "full_frame"), force=True)
            times[mode].append(time.perf_counter() - t)
            result[mode] = {"frames": res.num_frames, "frame_size": list(res.frame_size),
                            "model_fps": res.render_fps, "timings": res.timings}
    for mode in times:
        wall = statistics.median(times[mode])
        result[mode].update(wall_s=wall, walls=times[mode], end_to_end_fps=result[mode]["frames"] / wall)
    result["slowdown"] = result["full_frame"]["wall_s"] / result["crop"]["wall_s"] - 1.0
    return result


def markdown(report: dict) -> str:
    lines = ["| run | frame | crop PSNR | full-frame PSNR / crop area (dB) | seam out / source (levels) | "
             "seam without colour match | crop fps e2e | full-frame fps e2e | slowdown |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["runs"].items():
        ff, no = r["held_out"]["colour_match"], r["held_out"]["no_colour_match"]
        s = r["speed"]
        if not ff.get("available"):
            lines.append(f"| {name} | skipped: {ff.get('reason')} |")
            continue
        seam_src = ff["seam_step_source"]
        lines.append(
            f"| {name} | {ff['frame_size'][0]}x{ff['frame_size'][1]} | {r['held_out']['crop_psnr']:.2f} | "
            f"{ff['psnr_full_frame']:.2f} / {ff['psnr_crop_area']:.2f} | "
            f"{_f(ff['seam_step'])} / {_f(seam_src)} | {_f(no['seam_step'])} | "
            f"{s['crop']['end_to_end_fps']:.2f} | {s['full_frame']['end_to_end_fps']:.2f} | "
            f"{100 * s['slowdown']:+.1f}% |")
    return "\n".join(lines) + "\n"


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--audio", type=Path, default=ROOT.parent / "shared/data/audio/zozo_en_11s.wav")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/talk3d_full_frame"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from benchmarks._common import machine

    report = {"machine": machine(), "audio": str(args.audio), "runs": {}}
    for run_dir in args.runs:
        figures = held_out(run_dir, args.frames)
        available = figures["colour_match"].get("available")
        report["runs"][run_dir.name] = {"held_out": figures,
                                        "speed": speed(run_dir, args.audio, args.out, args.repeats) if available else {}}
    (args.out / "full_frame.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "full_frame.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
