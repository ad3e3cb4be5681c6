"""Data-parallel fits with torchrun and the gloo backend on CPU (issue 19).

Two ranks with one frame each per step must give the same avatar as one process with two
frames per step (same seed): the frames are split, the randomness is keyed per frame, and
DDP averages the gradients. A fit started with two ranks resumes with one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from talk3d.fit import checkpoint as ck
from talk3d.fit.config import tiny_config
from talk3d.fit.launch import without_option
from talk3d.fit.trainer import fit
from tests.tiny_data import make_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = '''
import os, sys
import talk3d.model.losses as losses
from talk3d.errors import UserError
from talk3d.fit.config import tiny_config
from talk3d.fit.trainer import fit
cfg = tiny_config(steps=int(sys.argv[3]))
cfg.batch_size = int(sys.argv[4])
cfg.checkpoint_every = 2
cfg.threads = 1
if len(sys.argv) > 5 and os.environ["RANK"] == sys.argv[5]:  # this rank's loss turns NaN at its 3rd step
    real, calls = losses.compute_losses, []
    def nan_at_three(*args, **kwargs):
        calls.append(1)
        out = real(*args, **kwargs)
        if len(calls) == 3:
            out["total"] = out["total"] * float("nan")
        return out
    losses.compute_losses = nan_at_three
try:
    fit(sys.argv[1], sys.argv[2], cfg)
except UserError as exc:
    print(f"rank {os.environ['RANK']} error: {exc}", file=sys.stderr)
    sys.exit(1)
'''


def _config(steps: int, batch: int):
    cfg = tiny_config(steps=steps)
    cfg.batch_size = batch
    cfg.checkpoint_every = 2
    cfg.threads = 1  # the same thread count as each rank: float sums in the same order
    return cfg


def _torchrun(tmp_path: Path, nproc: int, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "fit_ranks.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           str(script), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("ddp") / "data", num_frames=12)


def test_two_ranks_equal_one_process_with_the_same_frames_per_step(tiny, tmp_path):
    single = fit(tiny, tmp_path / "one", _config(4, batch=2))
    proc = _torchrun(tmp_path, 2, str(tiny), str(tmp_path / "two"), "4", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = load_file(str(tmp_path / "one" / ck.AVATAR))
    b = load_file(str(tmp_path / "two" / ck.AVATAR))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    print(f"largest weight difference, 2 ranks x 1 frame vs 1 process x 2 frames: {worst:.2e}")
    assert worst < 1e-4, worst
    # ... and the fit trained: four steps moved the weights far more than that
    early = load_file(str(ck.checkpoint_path(tmp_path / "one", 2)))
    moved = max(float((a[k] - early[f"model.{k}"]).abs().max()) for k in a)
    assert single.steps == 4 and moved > 100 * max(worst, 1e-7), moved
    # the metrics are the mean over the ranks; rank 0 alone wrote the run
    assert (tmp_path / "two" / "metrics.jsonl").is_file() and (tmp_path / "two" / "fit.log").is_file()


def test_a_fit_resumes_across_two_ranks_and_one_process(tiny, tmp_path):
    proc = _torchrun(tmp_path, 2, str(tiny), str(tmp_path / "run"), "2", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ck.list_checkpoints(tmp_path / "run")[-1][0] == 2
    res = fit(tiny, tmp_path / "run", _config(4, batch=1))  # --steps 4 continues the finished run
    assert res.start_step == 2 and res.steps == 4 and ck.load_run(tmp_path / "run").step == 4
    # ... and the other way: one process, then two ranks
    fit(tiny, tmp_path / "run1", _config(2, batch=1))
    proc = _torchrun(tmp_path, 2, str(tiny), str(tmp_path / "run1"), "4", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ck.load_run(tmp_path / "run1").step == 4
    assert "resuming" in (tmp_path / "run1" / "fit.log").read_text()


def test_a_failing_rank_stops_every_rank_and_keeps_the_checkpoint(tiny, tmp_path):
    proc = _torchrun(tmp_path, 2, str(tiny), str(tmp_path / "run"), "4", "1", "1")  # rank 1 only sees the NaN
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if " error: " in ln]
    assert len(errors) == 2 and all("loss became NaN or infinite on a rank at step 3" in ln for ln in errors), errors
    assert ck.list_checkpoints(tmp_path / "run")[-1][0] == 2 and not (tmp_path / "run" / ck.AVATAR).exists()
    ck.load_checkpoint(ck.list_checkpoints(tmp_path / "run")[-1][1])  # intact


def test_nproc_cli_reports_a_failure_in_one_line_each(tiny, tmp_path):
    from typer.testing import CliRunner

    from talk3d_cli.main import app

    broken = tmp_path / "data"
    shutil.copytree(tiny, broken)
    (broken / "frames" / "000003.jpg").write_bytes(b"garbage")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "talk3d_cli.main", "fit", str(broken), "-o", str(tmp_path / "run"),
                           "--size", "32", "--steps", "2", "--set", "min_frames=1", "--nproc", "2"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1 and len(lines) == 2, proc.stderr[-3000:]
    assert "000003.jpg is damaged" in lines[0] and "2-process fit stopped" in lines[1]
    r = CliRunner().invoke(app, ["fit", str(tiny), "-o", str(tmp_path / "r"), "--nproc", "0"])
    assert r.exit_code == 1 and "--nproc" in r.output


def test_nproc_is_taken_out_of_the_ranks_arguments():
    argv = ["data", "-o", "run", "--nproc", "2", "--steps", "3", "--nproc=4"]
    assert without_option(argv, "--nproc") == ["data", "-o", "run", "--steps", "3"]
