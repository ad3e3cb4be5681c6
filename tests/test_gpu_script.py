"""benchmarks/gpu/run.py, the one prepared GPU call, runs end to end in its CPU dry-run mode
(tiny sizes, no CUDA parts), so it cannot rot between the sessions that are lent a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_writes_its_report(tmp_path: Path) -> None:
    from tests.tiny_data import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", num_frames=12, size=32)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu" / "run.py"), "--dry-run", "--data",
                           str(data), "--out", str(out), "--work", str(tmp_path / "work"), "--deadline", "300"],
                          capture_output=True, text=True, timeout=420, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / "summary.json").read_text())
    failed = {k: v for k, v in report["steps"].items() if not v["ok"]}
    assert not failed, failed
    assert set(report["steps"]) == {"bench_cuda", "fit_torch", "render_torch_b1", "render_torch_b2"}
    fit = report["fits"]["torch"]
    assert fit["finished"] and fit["steps"] == 4 and fit["sec_per_step"] > 0 and fit["val_psnr"]
    assert all(v["fps"] > 0 and v["out_res"] == 32 for v in report["render"]["torch"].values())
    assert report["machine"]["torch"] and report["bench_cuda"] is not None
    assert "| torch |" in (out / "summary.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["logs.tar.gz", "summary.json", "summary.md"]  # <= 8 files back
