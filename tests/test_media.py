import subprocess

import numpy as np
import pytest

from talk3d.errors import UserError
from talk3d.media import VideoWriter, ffmpeg_exe, probe_duration, read_audio, write_wav
from tests.render_helpers import write_speech_like


def _tone(seconds: float, amp: float = 0.5, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_read_audio_keeps_level_for_mono_and_stereo(tmp_path):
    write_wav(tmp_path / "mono.wav", _tone(1.0))
    stereo = tmp_path / "stereo48k.wav"
    # pan keeps both channels identical to the mono source (no -3 dB upmix)
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(tmp_path / "mono.wav"),
                    "-af", "pan=stereo|c0=c0|c1=c0", "-ar", "48000", str(stereo)], check=True)
    mono = read_audio(tmp_path / "mono.wav")
    both = read_audio(stereo)
    assert mono.shape == (16000,)
    assert abs(both.shape[0] - 16000) <= 2
    assert np.abs(mono).max() == pytest.approx(0.5, abs=0.01)
    assert np.abs(both).max() == pytest.approx(0.5, abs=0.01)


def test_speech_like_is_normalised_to_16k_mono(tmp_path):
    p = write_speech_like(tmp_path / "a.wav", 0.5, 44100, 2)  # the render tests' driving audio
    audio = read_audio(p)
    assert abs(audio.shape[0] - 8000) <= 2
    # channels are averaged, so identical channels keep their level (no +3 dB downmix gain)
    assert 0.2 < float(np.abs(audio).max()) <= 0.3 + 0.01


def test_video_writer_muxes_audio_with_matching_duration(tmp_path):
    write_wav(tmp_path / "a.wav", _tone(2.0))
    out = tmp_path / "v.mp4"
    with VideoWriter(out, fps=25, audio=tmp_path / "a.wav") as vw:
        for i in range(50):
            vw.write(np.full((32, 48, 3), i * 4, np.uint8))
    assert out.is_file() and vw.frames_written == 50
    assert probe_duration(out) == pytest.approx(2.0, abs=0.05)
    assert read_audio(out).shape[0] == pytest.approx(32000, abs=1100)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_video_writer_leaves_nothing_on_error(tmp_path):
    out = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError), VideoWriter(out, fps=25) as vw:
        vw.write(np.zeros((16, 16, 3), np.uint8))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_read_audio_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_audio(tmp_path / "missing.wav")
    bad = tmp_path / "notaudio.wav"
    bad.write_text("hello")
    with pytest.raises(UserError, match="cannot read audio"):
        read_audio(bad)
