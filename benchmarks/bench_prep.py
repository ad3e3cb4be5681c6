"""Prep throughput (frames/s) and peak memory on a real clip and on a long looped version.

Usage::

    python benchmarks/bench_prep.py [--video ../shared/data/video/obama_450_20s.mp4]
                                    [--long-seconds 300] [--size 512] [--out DIR]

Each measurement runs in a fresh child process (so peak RSS is its own). The child first
starts the mediapipe models on a dummy frame (model start-up is excluded from the timing),
then times ``run_prep`` end to end: decode, FaceMesh, poses, crop, segmentation, JPEG/PNG
writing, audio features and previews. ``--long-seconds`` loops the clip with ffmpeg
``-stream_loop`` to check that peak memory does not grow with length. Results print as a
markdown table and, with ``--out``, are written to ``DIR/bench_prep.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "video" / "obama_450_20s.mp4"


def child(video: str, out: str, size: int) -> None:
    """Warm the models, run prep once, print one JSON line."""
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from talk3d.console import set_quiet
    from talk3d.face import FaceTracker
    from talk3d_prep.masks import PersonSegmenter
    from talk3d_prep.pipeline import PrepConfig, run_prep

    set_quiet(True)
    dummy = np.zeros((256, 256, 3), np.uint8)
    with FaceTracker() as tracker:
        tracker.detect(dummy)
    seg = PersonSegmenter()
    seg(dummy)
    seg.close()
    t0 = time.perf_counter()
    m = run_prep(Path(video), Path(out), PrepConfig(size=size))
    seconds = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    keys = ("tracking_rate", "reprojection_rms_px", "rotation_step_median_deg", "track_s", "poses_s",
            "frames_masks_s", "audio_s", "preview_s")
    print(json.dumps({"frames": m.num_frames, "seconds": seconds, "fps": m.num_frames / seconds,
                      "peak_rss_mb": rss_mb, **{k: m.stats[k] for k in keys}}))


def measure(video: Path, size: int, work: Path) -> dict:
    out = work / f"ds_{video.stem}"
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, __file__, "--child", str(video), str(out), str(size)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"prep failed on {video}:\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def looped(video: Path, seconds: float, work: Path) -> Path:
    import imageio_ffmpeg

    from talk3d.media import probe_duration

    loops = max(0, math.ceil(seconds / probe_duration(video)) - 1)
    out = work / f"{video.stem}_loop{int(seconds)}s.mp4"
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-stream_loop", str(loops),
           "-i", str(video), "-t", str(seconds), "-c", "copy", str(out)]
    subprocess.run(cmd, check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=DEFAULT_VIDEO, help="clip to prep")
    ap.add_argument("--long-seconds", type=float, default=300.0, help="length of the looped clip (0 = skip)")
    ap.add_argument("--size", type=int, default=512, help="output frame size")
    ap.add_argument("--out", type=Path, default=None, help="folder for bench_prep.json / .md")
    ap.add_argument("--child", nargs=3, metavar=("VIDEO", "OUT", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    if not args.video.is_file():
        raise SystemExit(f"clip '{args.video}' not found (the shared recordings are needed)")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_prep_") as tmp:
        work = Path(tmp)
        rows.append({"clip": args.video.name, **measure(args.video, args.size, work)})
        if args.long_seconds > 0:
            clip = looped(args.video, args.long_seconds, work)
            rows.append({"clip": clip.name, **measure(clip, args.size, work)})
    lines = [f"# prep benchmark ({os.cpu_count()} CPU cores, size {args.size})", "",
             "| clip | frames | seconds | frames/s | peak RSS MB | track s | frames+masks s | poses s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['frames']} | {r['seconds']:.1f} | {r['fps']:.1f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['track_s']:.1f} | {r['frames_masks_s']:.1f} | {r['poses_s']:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_prep.json").write_text(json.dumps(rows, indent=2) + "\n")
        (args.out / "bench_prep.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
