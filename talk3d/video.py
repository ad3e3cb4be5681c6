"""Probe and decode source videos with the bundled ffmpeg (no ffprobe needed): prep reads its
input with it, and `talk3d render --full-frame` its plate.

Frames are streamed from an ffmpeg subprocess (constant frame rate, rotation metadata
applied, downscaled to a maximum side) and never held in memory all at once.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from talk3d.errors import UserError
from talk3d.media import ffmpeg_exe, ffmpeg_path


@dataclass
class VideoInfo:
    """What ffmpeg reports about an input file."""

    path: str
    """Path of the file."""
    duration: float
    """Container duration in seconds."""
    coded_width: int
    """Width of the coded video stream (before rotation)."""
    coded_height: int
    """Height of the coded video stream (before rotation)."""
    rotation: float
    """Display rotation in degrees from the stream's display matrix (0 when absent)."""
    fps: float
    """Source frame rate (0 when unknown)."""
    has_audio: bool
    """The file has an audio stream."""
    width: int
    """Decoded width after rotation and downscaling."""
    height: int
    """Decoded height after rotation and downscaling."""

    @property
    def downscaled(self) -> bool:
        w, h = self.rotated_size
        return (w, h) != (self.width, self.height)

    @property
    def rotated_size(self) -> tuple[int, int]:
        if round(abs(self.rotation)) % 180 == 90:
            return self.coded_height, self.coded_width
        return self.coded_width, self.coded_height


_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #\S+.*?: Video: (.*)")
_SIZE = re.compile(r"\b(\d{2,5})x(\d{2,5})\b")
_FPS = re.compile(r"([\d.]+) (?:fps|tbr)")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees", re.IGNORECASE)


def probe_video(path: str | Path, max_side: int = 1280) -> VideoInfo:
    """Read stream information from ``ffmpeg -i`` and choose the decode size.

    Raises:
        UserError: missing file, not a media file / corrupt, no video stream, unknown duration.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input video '{path}' does not exist; give the path of an mp4/mov/mkv file")
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", ffmpeg_path(path)], capture_output=True)
    text = proc.stderr.decode(errors="replace")
    if "Invalid data found" in text or "moov atom not found" in text or "Error opening input" in text:
        raise UserError(f"'{path}' is not a readable video (not a media file, or corrupt/truncated); "
                        f"check the file plays and re-export it as mp4")
    video_line = next((m.group(1) for m in _VIDEO.finditer(text) if "attached pic" not in m.group(1)), None)
    if video_line is None:
        raise UserError(f"'{path}' has no video stream; give a video of the person talking")
    size = _SIZE.search(video_line)
    if size is None:
        raise UserError(f"cannot read the frame size of '{path}'; re-export the video as mp4 (H.264)")
    dur = _DURATION.search(text)
    if dur is None:
        raise UserError(f"cannot read the duration of '{path}' (corrupt or a live stream); re-export it as mp4")
    duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))
    fps_m = _FPS.search(video_line)
    rot_m = _ROTATION.search(text)
    info = VideoInfo(
        path=str(path), duration=duration, coded_width=int(size.group(1)), coded_height=int(size.group(2)),
        rotation=float(rot_m.group(1)) if rot_m else 0.0, fps=float(fps_m.group(1)) if fps_m else 0.0,
        has_audio=bool(re.search(r"Stream #\S+.*?: Audio:", text)), width=0, height=0,
    )
    info.width, info.height = decode_size(*info.rotated_size, max_side)
    return info


def decode_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Even decode size with the long side at most ``max_side`` (aspect kept)."""
    scale = min(1.0, max_side / max(width, height))
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def crop_filter(crop: tuple[int, int, int], width: int, height: int, size: int) -> str:
    """ffmpeg filter chain: square crop ``(x0, y0, side)`` of a ``width x height`` frame, padded
    by edge replication (``fillborders=smear``) where it extends past the frame, scaled to ``size``.

    Pixel mapping (continuous coordinates): ``u_out = (u_src - x0) * size / side``. The frame is
    converted to planar RGB first: on chroma-subsampled video (yuv420p) ffmpeg's ``crop`` would
    round an odd ``x0``/``y0`` down to even (datasets prepared before this have
    ``Manifest.crop_exact`` false).
    """
    x0, y0, side = (int(v) for v in crop)
    left, top = max(0, -x0), max(0, -y0)
    right, bottom = max(0, x0 + side - width), max(0, y0 + side - height)
    chain = ["format=gbrp"]
    if left or top or right or bottom:
        chain += [f"pad=w={width + left + right}:h={height + top + bottom}:x={left}:y={top}",
                  f"fillborders=left={left}:right={right}:top={top}:bottom={bottom}:mode=smear"]
    chain.append(f"crop={side}:{side}:{x0 + left}:{y0 + top}")
    chain.append(f"scale={size}:{size}:flags={'area' if size < side else 'bicubic'}")
    return ",".join(chain)


class FrameReader:
    """Iterate over RGB frames ``(H, W, 3)`` uint8 at a constant frame rate.

    ffmpeg applies rotation metadata (autorotate is its default), resamples to ``fps``
    (dropping/duplicating frames) and scales to ``info.width x info.height``. A reader
    thread keeps a few frames queued so decoding overlaps with processing.


    Args:
        crop: optional integer square ``(x0, y0, side)`` in decoded pixels, cropped (edge
            replicated where it extends past the frame) and scaled to ``out_size`` by ffmpeg
            itself, in its own process, so the work overlaps with Python.
        out_size: output side for ``crop``.
        start: the first frame yielded (frame numbers as with ``start=0``); the frames before it
            are decoded but neither scaled nor piped.
        threads: decoder threads (``None``: ffmpeg's choice).
    """

    def __init__(self, info: VideoInfo, fps: float, queue_size: int = 8,
                 crop: tuple[int, int, int] | None = None, out_size: int | None = None, start: int = 0,
                 threads: int | None = None):
        self.info = info
        self.fps = fps
        self.queue_size = queue_size
        self.crop = crop
        self.out_size = out_size
        self.start = int(start)
        self.threads = threads
        self.frames_read = 0

    def expected_frames(self) -> int:
        """Frames this reader should yield, from the container duration (exact count known after decoding)."""
        return max(1, int(round(self.info.duration * self.fps)) - self.start)

    def __iter__(self) -> Iterator[np.ndarray]:
        w, h = self.info.width, self.info.height
        vf = f"fps={self.fps}" + (f",trim=start_frame={self.start},setpts=PTS-STARTPTS" if self.start else "")
        vf += f",scale={w}:{h}:flags=area"
        if self.crop is not None:
            vf += "," + crop_filter(self.crop, w, h, int(self.out_size or self.crop[2]))
            w = h = int(self.out_size or self.crop[2])
        vf += ",format=rgb24"
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
               *(["-threads", str(int(self.threads))] if self.threads is not None else []),
               "-i", ffmpeg_path(self.info.path),
               "-map", "0:v:0", "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        nbytes = w * h * 3
        q: queue.Queue = queue.Queue(maxsize=self.queue_size)
        stop = threading.Event()
        stderr_chunks: list[bytes] = []

        def pump() -> None:
            assert proc.stdout is not None
            try:
                while not stop.is_set():
                    buf = proc.stdout.read(nbytes)
                    if len(buf) < nbytes:
                        break
                    q.put(buf)
            finally:
                q.put(None)

        def drain_stderr() -> None:
            assert proc.stderr is not None
            stderr_chunks.append(proc.stderr.read())

        threads = [threading.Thread(target=pump, daemon=True), threading.Thread(target=drain_stderr, daemon=True)]
        for t in threads:
            t.start()
        finished = False
        try:
            while True:
                buf = q.get()
                if buf is None:
                    finished = True
                    break
                self.frames_read += 1
                yield np.frombuffer(buf, dtype=np.uint8).reshape(h, w, 3)
        finally:
            stop.set()
            if not finished:
                proc.kill()
                while q.get() is not None:  # unblock the pump thread
                    pass
            rc = proc.wait()
            for t in threads:
                t.join(timeout=5)
        err = b"".join(stderr_chunks).decode(errors="replace").strip().splitlines()
        if rc != 0:
            raise UserError(f"decoding '{self.info.path}' failed ({err[-1] if err else rc}); "
                            f"the file is corrupt or truncated: re-export it")
        if self.frames_read == 0:
            raise UserError(f"'{self.info.path}' contains no decodable frames; re-export the video")
        if self.frames_read < 0.9 * self.expected_frames() - 2:
            raise UserError(f"'{self.info.path}' is truncated: decoded {self.frames_read} of "
                            f"{self.expected_frames()} frames; re-export or re-download the video")
