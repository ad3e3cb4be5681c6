"""``benchmarks/lip_pretraining.py``: the fit's lip pretraining alone, on the dataset's held-out
frames or on an inner split of its training frames (docs/model.md, "How long the lip
pretraining runs")."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from talk3d.console import is_quiet
from tests.benchmark_modules import load_benchmark


def _bench():
    return load_benchmark("lip_pretraining")


def test_inner_split_holds_out_the_end_of_the_training_frames_only(tmp_path: Path):
    from talk3d.errors import UserError
    from tests.tiny_data import make_tiny_dataset

    bench = _bench()
    data = make_tiny_dataset(tmp_path / "data", num_frames=40)  # 36 training, 4 held-out frames
    cfg, whole = bench.training_data(data)
    _, inner = bench.training_data(data, 0.25)
    train = np.sort(whole.train_indices)
    gap = cfg.model.audio_window
    assert list(inner.val_indices) == list(train[27:])  # round(36 * 0.75) = 27
    assert list(inner.train_indices) == list(train[:27 - gap])  # the window's reach dropped before them
    np.testing.assert_array_equal(inner.mouth_codes, whole.mouth_codes)  # codes of the whole training split
    with pytest.raises(UserError, match="too few"):
        bench.training_data(data, 0.05)  # 2 frames held out: too few for a correlation


def test_benchmark_reports_a_correlation_per_dataset_step_count_and_seed(tmp_path: Path, capsys):
    from tests.tiny_data import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", num_frames=40)
    for split in ("0", "0.25"):
        out = tmp_path / f"lp_{split}.json"
        argv = [str(data), "--steps", "3", "5", "3", "--seeds", "2", "--threads", "1", "--inner-split", split,
                "--json", str(out)]
        assert _bench().main(argv) == 0
        figures = json.loads(out.read_text())["held_out_code_correlation"][str(data)]
        assert set(figures) == {"3", "5"} and all(len(v) == 2 for v in figures.values())  # repeated steps once
        values = [x for v in figures.values() for x in v]
        assert all(x is not None and math.isfinite(x) and -1.0 <= x <= 1.0 for x in values), values
    assert "| mean over datasets |" in capsys.readouterr().out
    assert not is_quiet()  # the benchmark leaves the console as it found it


def test_bad_arguments_are_refused_in_one_line(tmp_path: Path, capsys):
    from tests.tiny_data import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", num_frames=40)
    for bad in (["--inner-split", "1.5"], ["--inner-split", "-0.1"], ["--seeds", "0"]):
        with pytest.raises(SystemExit):
            _bench().main([str(data), *bad])
    assert _bench().main([str(data), "--inner-split", "0.05", "--seeds", "1", "--steps", "2"]) == 2
    assert "too few" in capsys.readouterr().err
