"""mediapipe's native log lines (glog, TFLite) go to the command's log file, never the terminal."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.test_prep_clips import astronaut_clip

ROOT = Path(__file__).resolve().parents[1]
NATIVE = re.compile(r"^[WIEF]\d{4} |inference_feedback_manager|TensorFlow Lite|absl::InitializeLog", re.M)


def test_prep_terminal_output_has_no_native_log_lines(tmp_path):
    clip, _, _ = astronaut_clip(tmp_path / "a.mp4", n=80, static=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TALK3D_NATIVE_LOGS", None)
    proc = subprocess.run([sys.executable, "-m", "cli.main", "prep", str(clip), "-o", str(tmp_path / "d"),
                           "--size", "64", "--landmark-poses"], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    terminal = proc.stdout + proc.stderr
    assert "dataset ready" in terminal
    assert not NATIVE.search(terminal), NATIVE.search(terminal)
    log = (tmp_path / "d" / "prep.log").read_text()
    assert "native library:" in log and NATIVE.search(log)  # kept for whoever needs them
