"""``benchmarks/lip_pretraining.py``: the fit's lip pretraining alone, on the dataset's held-out
frames or on an inner split of its training frames (docs/model.md, "How long the lip
pretraining runs")."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.benchmark_modules import load_benchmark


def _bench():
    return load_benchmark("lip_pretraining")


def test_inner_split_holds_out_the_end_of_the_training_frames_only(tmp_path: Path):
    from talk3d.fit.config import preset
    from talk3d.fit.data import TrainingData
    from tests.tiny_data import make_tiny_dataset

    bench = _bench()
    data = make_tiny_dataset(tmp_path / "data", num_frames=40)
    cfg = preset("quick")
    whole = TrainingData(data, cfg.model)
    inner = bench.InnerSplit(data, cfg.model, 0.25)
    train = np.sort(whole.train_indices)
    assert list(inner.val_indices) == list(train[-9:])  # round(36 * 0.25) = 9 frames
    assert list(inner.train_indices) == list(train[:27 - bench.INNER_GAP])
    assert not set(inner.val_indices) & set(whole.val_indices)  # the dataset's held-out frames stay unseen
    np.testing.assert_array_equal(inner.mouth_codes, whole.mouth_codes)  # codes of the whole training split
    with pytest.raises(SystemExit):
        bench.InnerSplit(data, cfg.model, 0.05)  # one frame is no held-out set


def test_benchmark_reports_a_correlation_per_dataset_step_count_and_seed(tmp_path: Path, capsys):
    from tests.tiny_data import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", num_frames=40)
    out = tmp_path / "lp.json"
    assert _bench().main([str(data), "--steps", "3", "5", "--seeds", "2", "--threads", "1", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())["held_out_code_correlation"]["data"]
    assert set(figures) == {"3", "5"} and all(len(v) == 2 for v in figures.values())
    assert all(math.isnan(x) or -1.0 <= x <= 1.0 for v in figures.values() for x in v)
    assert "| data |" in capsys.readouterr().out
