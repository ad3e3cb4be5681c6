"""Gather what the GPU check needs and the GPU machine lacks, into one folder to ``carry``.

Run here (CPU, with the registry reachable), before a session that is lent a GPU:

    python3 benchmarks/gpu/prepare.py            # -> gpu_carry/ (git-ignored), size printed

It holds ``wheels/``: cp312 manylinux wheels of the packages talk3d needs that the GPU image
does not have (kornia and kornia_rs; the image has torch, numpy, scipy, OpenCV, scikit-image,
matplotlib, rich, typer, safetensors, imageio, pillow, ninja, pytest), and ``data/``: a shared
clip prepared at 512^2 here (the GPU machine has no mediapipe). Video encoding is not carried
(imageio-ffmpeg's wheel alone is 68 MB): the GPU check times the model, not the encoder.
The folder must stay under the 64 MiB a device call carries; the script refuses otherwise.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WHEELS = ("kornia==0.9.0", "kornia_rs==0.2.0")
"""The GPU image's missing packages, at the versions this project is tested with."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
CARRY_LIMIT = 64 * 2**20
"""What one device call carries at most (the repository's tracked files count too)."""
CLIP = "katiehill_512_8s.mp4"
"""A shared clip at 512^2 whose head turns (-22..19 degrees): 8 s, 200 frames."""


def run(cmd: list[str]) -> None:
    """Run ``cmd``; stop with its output when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def download_wheels(folder: Path) -> None:
    """cp312 manylinux wheels of :data:`WHEELS`, without dependencies (the image has the rest)."""
    folder.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
         "--implementation", "cp", *platforms, "-d", str(folder), *WHEELS])


def prepare_dataset(video: Path, out: Path) -> None:
    """``talk3d prep`` of ``video`` at 512^2 into ``out`` (kept when it is already there, with its
    phone rows: the GPU image has no pocketsphinx, so the fit must find ``phonemes.npy``)."""
    if (out / "manifest.json").is_file() and (out / "phonemes.npy").is_file():
        return
    run(["talk3d", "prep", str(video), "-o", str(out), "--size", "512", "--quiet", "--force"])


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "gpu_carry", help="the folder to carry")
    ap.add_argument("--video", type=Path, default=ROOT.parent / "shared" / "data" / "video" / CLIP,
                    help="the clip to prepare at 512^2")
    args = ap.parse_args()
    if not args.video.is_file():
        sys.exit(f"'{args.video}' is not there: give --video (a talking-head clip of a few seconds)")
    download_wheels(args.out / "wheels")
    prepare_dataset(args.video, args.out / "data" / args.video.stem)
    size = folder_size(args.out)
    print(f"{args.out}: {size / 2**20:.1f} MiB "
          f"({', '.join(sorted(p.name for p in (args.out / 'wheels').iterdir()))}; data/{args.video.stem})")
    if size > CARRY_LIMIT - 8 * 2**20:  # room for the repository itself
        sys.exit(f"{args.out} is {size / 2**20:.1f} MiB: too much to carry with the repository (64 MiB in all)")


if __name__ == "__main__":
    shutil.which("talk3d") or sys.exit("the talk3d command is not installed: run 'bash install.sh' first")
    main()
