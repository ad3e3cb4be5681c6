"""mediapipe's native log lines (glog, TFLite) go to the command's log file, never the terminal.

They are written by C++ code straight to file descriptor 2, from mediapipe's own threads, so
each test runs its program in a subprocess and reads what reached the real stderr/stdout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.test_prep_clips import astronaut_clip

ROOT = Path(__file__).resolve().parents[1]
NATIVE = re.compile(r"^[WIEF]\d{4} |inference_feedback_manager|TensorFlow Lite|absl::InitializeLog", re.M)


def _run(args: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TALK3D_NATIVE_LOGS", None)
    return subprocess.run([sys.executable, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_prep_terminal_output_has_no_native_log_lines(tmp_path):
    clip, _, _ = astronaut_clip(tmp_path / "a.mp4", n=80, static=True)
    proc = _run(["-m", "talk3d_cli.main", "prep", str(clip), "-o", str(tmp_path / "d"), "--size", "64",
                 "--landmark-poses"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    terminal = proc.stdout + proc.stderr
    assert "dataset ready" in terminal
    assert not NATIVE.search(terminal), NATIVE.search(terminal)
    log = (tmp_path / "d" / "prep.log").read_text()
    assert "native library:" in log and NATIVE.search(log)  # kept for whoever needs them


PREP_FROM_PYTHON = """
import sys
from talk3d_prep.pipeline import PrepConfig, run_prep

run_prep(sys.argv[1], sys.argv[2], PrepConfig(size=64, photometric_poses=False))
print("prep returned", file=sys.stderr)
"""


def test_prep_called_from_python_keeps_native_lines_off_the_terminal(tmp_path):
    """Not only the CLI: run_prep from a script (benchmarks, notebooks) routes them too.

    Before, mediapipe's lines from its threads (first frames of each graph) reached the terminal
    between the progress bars when prep was not started by the ``talk3d`` command.
    """
    clip, _, _ = astronaut_clip(tmp_path / "a.mp4", n=80, static=True)
    proc = _run(["-c", PREP_FROM_PYTHON, str(clip), str(tmp_path / "d")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    terminal = proc.stdout + proc.stderr
    assert "prep returned" in terminal and "prep done" in terminal  # our own output still arrives
    assert not NATIVE.search(terminal), NATIVE.search(terminal)
    log = (tmp_path / "d" / "prep.log").read_text()
    assert "native library:" in log and NATIVE.search(log)


ROUTING = r"""
import os, sys, threading
from talk3d.console import NativeStderrToLog, warn
from talk3d.io import close_file_logs, setup_file_log

native = b"W0000 00:00:1.0 1 feedback_manager.cc:114] from a native thread\n"
with NativeStderrToLog():
    setup_file_log(sys.argv[1], "run")
    with NativeStderrToLog():  # holders nest: the routing stays until the outer one ends
        t = threading.Thread(target=os.write, args=(2, native))
        t.start(); t.join()
    os.write(2, b"plain native output\n")   # not a log line: still reaches the terminal
    warn("a talk3d warning")                 # Python's stderr: straight to the terminal
    os.write(2, native.replace(b"thread", b"thread, last"))
    close_file_logs()                        # lines still in the pipe reach the file first
os.write(2, b"after: fd 2 is the terminal again\n")
"""


def test_native_lines_are_routed_while_held(tmp_path):
    proc = _run(["-c", ROUTING, str(tmp_path)], tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not NATIVE.search(proc.stderr) and "feedback_manager" not in proc.stderr, proc.stderr
    assert "plain native output" in proc.stderr and "a talk3d warning" in proc.stderr
    assert "after: fd 2 is the terminal again" in proc.stderr
    log = (tmp_path / "run.log").read_text()
    assert "native library: W0000 00:00:1.0 1 feedback_manager.cc:114] from a native thread" in log
    assert "from a native thread, last" in log
    assert "plain native output" not in log


def test_native_logs_variable_shows_them(tmp_path):
    env_code = "import os; os.environ['TALK3D_NATIVE_LOGS'] = '1'\n" + ROUTING
    proc = _run(["-c", env_code, str(tmp_path)], tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "feedback_manager.cc:114] from a native thread" in proc.stderr
