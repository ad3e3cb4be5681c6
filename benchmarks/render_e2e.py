"""``talk3d render`` end to end on a fitted avatar: the tracked pose and ``--pose fixed``.

Times :func:`talk3d.render.driver.render_run` on an already loaded run (audio features, the model,
H.264 + AAC encoding, the finished file: everything but loading the run), with the default
settings of the tree it imports, and reports for each pose mode the model-only frames/s the render
prints and the end-to-end frames/s, plus the process's peak memory. Only uses ``render_run`` and
``RenderConfig(pose=...)``, so ``run_all.py --against`` runs it on older trees too.

    python3 benchmarks/render_e2e.py --run RUN [--audio WAV] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

SHARED_AUDIO = Path(__file__).resolve().parents[2] / "shared" / "data" / "audio" / "two_speakers_30s.wav"


def main() -> None:
    from talk3d.fit.checkpoint import load_run
    from talk3d.render.config import RenderConfig
    from talk3d.render.driver import render_run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="fitted run folder")
    ap.add_argument("--audio", type=Path, default=None,
                    help="driving audio (default: shared two_speakers_30s.wav, else the run's dataset audio)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the figures")
    args = ap.parse_args()
    run = load_run(args.run)
    audio = args.audio or (SHARED_AUDIO if SHARED_AUDIO.is_file() else run.dataset_dir / "audio.wav")
    report: dict = {"run": str(args.run), "audio": str(audio)}
    with tempfile.TemporaryDirectory(prefix="render_e2e_") as tmp:
        for pose in ("tracked", "fixed"):
            t0 = time.perf_counter()
            res = render_run(run, audio, Path(tmp) / f"{pose}.mp4", RenderConfig(pose=pose), force=True)
            seconds = time.perf_counter() - t0
            report[pose] = {"frames": res.num_frames, "seconds": seconds, "fps_e2e": res.num_frames / seconds,
                            "fps_model": res.render_fps}
            print(f"{pose}: {res.num_frames} frames in {seconds:.1f} s: {res.num_frames / seconds:.2f} frames/s "
                  f"end to end, {res.render_fps:.2f} model")
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
