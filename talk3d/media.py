"""Media I/O through the ffmpeg binary bundled by imageio-ffmpeg (offline, H.264 + AAC).

Every ffmpeg call takes an argument list (never a shell string) and its return code is
checked; outputs are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import subprocess
import wave
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from talk3d.errors import UserError
from talk3d.io import atomic_path

AUDIO_RATE = 16000


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg binary."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], what: str) -> subprocess.CompletedProcess:
    """Run ffmpeg with ``args``; raise :class:`UserError` naming ``what`` on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        last = detail[-1] if detail else f"exit code {proc.returncode}"
        raise UserError(f"{what} failed: {last}")
    return proc


def ffmpeg_path(path: str | os.PathLike) -> str:
    """A local path as ffmpeg must see it: ``file:`` first, so a name such as ``a:b.mp4`` is never
    read as a protocol (``a:``) or an option."""
    return "file:" + os.fspath(path)


def read_audio(path: str | os.PathLike, sample_rate: int = AUDIO_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Decode any audio (or a video's audio track) to mono float32 at ``sample_rate``.

    ``max_seconds`` decodes only the start (a quick check that the file is readable).

    Returns:
        ``(num_samples,)`` float32 in [-1, 1].
    Raises:
        UserError: the file is missing, unreadable or has no audio stream.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file '{path}' does not exist")
    # Keep the source's channels and average them here: ffmpeg's own down/up-mix scales
    # channels by -3 dB (identical stereo channels came out 1.41x louder, mono 0.71x).
    limit = ["-t", f"{max_seconds:g}"] if max_seconds is not None else []
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", ffmpeg_path(path), *limit,
           "-vn", "-ar", str(sample_rate), "-c:a", "pcm_s16le", "-f", "wav", "-"]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = detail[-1] if detail else f"ffmpeg exit code {proc.returncode}"
        if any("does not contain any stream" in d or "Output file #0 does not contain" in d for d in detail):
            reason = "it has no audio stream"
        raise UserError(f"cannot read audio from '{path}': {reason}; give a wav/mp3/m4a file or a video with sound")
    audio = _decode_wav_bytes(proc.stdout)
    if audio.size == 0:
        raise UserError(f"'{path}' contains no audio samples; give a file with sound")
    return audio


def _decode_wav_bytes(data: bytes) -> np.ndarray:
    """Mono float32 from 16-bit PCM WAV bytes piped by ffmpeg (channels averaged).

    ffmpeg cannot seek back into a pipe to fill in the RIFF sizes, so the chunk sizes in
    the header are unreliable: the channel count is read from the ``fmt `` chunk and the
    samples are everything after the ``data`` chunk header.
    """
    fmt = data.find(b"fmt ", 12)
    pos = data.find(b"data", 12)
    if fmt < 0 or pos < 0:
        return np.zeros(0, dtype=np.float32)
    channels = max(1, int.from_bytes(data[fmt + 10:fmt + 12], "little"))
    payload = data[pos + 8:]
    count = len(payload) // (2 * channels) * channels
    pcm = np.frombuffer(payload[: count * 2], dtype="<i2").astype(np.float32) / 32768.0
    return pcm.reshape(-1, channels).mean(axis=1)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = AUDIO_RATE) -> None:
    """Write mono float audio in [-1, 1] as 16-bit PCM WAV, atomically."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0) * 32767.0).astype("<i2")
    with atomic_path(path) as tmp, wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())


class VideoWriter:
    """Stream RGB frames into an H.264 mp4, optionally muxing an audio track (AAC).

    Use as a context manager; the file appears at ``path`` only when the writer closes
    without error (atomic rename)::

        with VideoWriter("out.mp4", fps=25, audio="speech.wav") as vw:
            for frame in frames:          # (H, W, 3) uint8
                vw.write(frame)
    """

    def __init__(self, path: str | os.PathLike, fps: float, audio: str | os.PathLike | None = None,
                 quality: int = 18, audio_bitrate: str = "128k", threads: int | None = None):
        self.path = Path(path)
        self.threads = threads  # encoder threads (None: ffmpeg's choice, about 1.5 per core)
        self.fps = float(fps)
        self.audio = Path(audio) if audio is not None else None
        self.crf = int(quality)
        self.audio_bitrate = audio_bitrate
        self.frames_written = 0
        self._proc: subprocess.Popen | None = None
        self._ctx = None
        self._tmp: Path | None = None
        self._size: tuple[int, int] | None = None
        self._stderr: str | None = None

    def __enter__(self) -> VideoWriter:
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        return self

    def _start(self, height: int, width: int) -> None:
        self._size = (height, width)
        args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{self.fps}",
                "-i", "-"]
        if self.audio is not None:
            args += ["-i", ffmpeg_path(self.audio)]
        args += ["-map", "0:v:0"]
        if self.audio is not None:
            args += ["-map", "1:a:0", "-c:a", "aac", "-b:a", self.audio_bitrate, "-ac", "1"]
        # even sizes for yuv420p; movflags for progressive playback
        pad = "pad=ceil(iw/2)*2:ceil(ih/2)*2"
        if self.threads is not None:
            args += ["-threads", str(int(self.threads))]
        args += ["-vf", pad, "-c:v", "libx264", "-preset", "veryfast", "-crf", str(self.crf),
                 "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", ffmpeg_path(self._tmp)]
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, frame: np.ndarray) -> None:
        """Append one ``(H, W, 3)`` uint8 RGB frame.

        Raises:
            UserError: ffmpeg stopped (disk full, unwritable folder...), with its last error line.
        """
        frame = np.ascontiguousarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
        if self._proc is None:
            self._start(frame.shape[0], frame.shape[1])
        elif frame.shape[:2] != self._size:
            raise ValueError(f"frame size changed from {self._size} to {frame.shape[:2]}")
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(frame.tobytes())
        except OSError:  # BrokenPipeError: ffmpeg has exited
            raise self._failure() from None
        self.frames_written += 1

    def write_all(self, frames: Iterable[np.ndarray]) -> None:
        for f in frames:
            self.write(f)

    def _finish(self) -> int:
        """Close ffmpeg's input and wait for it; return its exit code (keeps its stderr)."""
        assert self._proc is not None
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:  # the pipe is already broken: ffmpeg has exited
                pass
        if self._stderr is None:
            self._stderr = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
        return self._proc.wait()

    def _failure(self) -> UserError:
        """The error to report when ffmpeg failed: its last stderr line and what to do."""
        rc = self._finish()
        lines = (self._stderr or "").strip().splitlines()
        reason = lines[-1].strip() if lines else f"ffmpeg exit code {rc}"
        return UserError(f"writing video '{self.path}' failed: {reason}; check the free space and permissions of "
                         f"'{self.path.parent}' and run the command again")

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._ctx is not None
        err = None
        if self._proc is not None:
            rc = self._finish()
            if rc != 0 and exc_type is None:
                err = self._failure()
        elif exc_type is None:
            err = UserError(f"no frames were written to '{self.path}'")
        if exc_type is None and err is not None:
            self._ctx.__exit__(type(err), err, None)
            raise err
        self._ctx.__exit__(exc_type, exc, tb)


def probe_duration(path: str | os.PathLike) -> float:
    """Container duration in seconds, read from ffmpeg's header report."""
    import imageio_ffmpeg

    _, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    return float(secs)
