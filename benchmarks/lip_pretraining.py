"""How well the lip-code head predicts held-out frames, by lip-pretraining length (issue 16).

Runs only the fit's lip pretraining (:class:`talk3d.fit.stages.LipPretraining`: the same
windows, augmentation and silence examples as ``talk3d fit``, the quick preset's model; the
encoder is seeded on its own, so seed 0 here is not the fit's seed 0), no rendering,
for every dataset x step count x seed, and reports the correlation of the predicted and tracked
first lip-code component on the held-out frames (the figure ``talk3d fit`` logs as
"held-out mouth-code correlation"). On 25-70 held-out frames the figure moves by up to +-0.2
with the seed alone, so compare step counts over several seeds.

``--inner-split F``: hold out the last fraction ``F`` of the *training* frames instead (the
audio window's reach of frames before them dropped, so that neighbouring windows do not leak)
and never look at the dataset's own held-out frames: a check that a setting chosen on the
held-out frames is not tuned to them.

    python benchmarks/lip_pretraining.py DATA [DATA ...] --steps 400 1500 --seeds 6 [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from talk3d.dataset import read_manifest
from talk3d.errors import UserError
from talk3d.fit.config import FitConfig, match_audio_dim, preset
from talk3d.fit.data import TrainingData
from talk3d.fit.lipsync import AudioAugment
from talk3d.fit.stages import LipPretraining
from talk3d.model.conditioning import TokenEncoder
from talk3d.model.config import ModelConfig


class InnerSplit(TrainingData):
    """Training data whose held-out frames are the last ``fraction`` of its training frames (the
    ``audio_window`` frames before them dropped); the lip codes stay those of the whole training
    split, as ``talk3d fit`` computes them."""

    def __init__(self, dataset: Path, model_config: ModelConfig, fraction: float):
        super().__init__(dataset, model_config)
        train = np.sort(np.asarray(self.manifest.train_frames))
        gap = model_config.audio_window
        cut = int(round(len(train) * (1.0 - fraction)))
        if cut - gap < 2 or len(train) - cut < 3:
            raise UserError(f"{dataset}: {len(train)} training frames are too few for --inner-split {fraction}: "
                            "choose a larger fraction or a longer clip")
        self._inner = (train[:cut - gap], train[cut:])

    @property
    def train_indices(self) -> np.ndarray:
        # TrainingData.__init__ reads it before the inner split exists: the whole training split then
        return self._inner[0] if hasattr(self, "_inner") else super().train_indices

    @property
    def val_indices(self) -> np.ndarray:
        return self._inner[1] if hasattr(self, "_inner") else super().val_indices


def training_data(dataset: Path, inner_split: float = 0.0) -> tuple[FitConfig, TrainingData]:
    """The quick preset's fit config (its audio input sized to the dataset, as ``talk3d fit``
    does) and the dataset's training data, with the inner split when ``inner_split > 0``."""
    cfg = preset("quick")
    cfg = match_audio_dim(cfg, read_manifest(dataset).audio_feature_dim)
    data = InnerSplit(dataset, cfg.model, inner_split) if inner_split > 0 else TrainingData(dataset, cfg.model)
    return cfg, data


def held_out_correlation(cfg: FitConfig, data: TrainingData, steps: int, seed: int) -> float:
    """The lip pretraining of ``talk3d fit`` with ``steps`` and ``seed`` on ``data``; returns the
    held-out correlation of the first lip-code component (NaN with 2 or fewer held-out frames or
    a constant prediction)."""
    cfg = dataclasses.replace(cfg, mouth_pretrain_steps=steps, seed=seed)
    torch.manual_seed(seed)
    encoder = TokenEncoder(cfg.model)
    return LipPretraining(cfg, data, torch.device("cpu")).run(encoder, AudioAugment())["lip_code_val_corr"]


def _cell(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    missing = f", {len(values) - len(finite)} NaN" if len(finite) < len(values) else ""
    return f"{np.mean(finite):.3f} ({', '.join(f'{v:.2f}' for v in finite)}{missing})"


def _table(results: dict[str, dict[str, list[float]]], steps: list[int]) -> str:
    lines = ["| dataset | " + " | ".join(f"{s} steps (mean, per seed)" for s in steps) + " |",
             "| --- |" + " --- |" * len(steps)]
    for name, by_steps in results.items():
        lines.append(f"| {name} | " + " | ".join(_cell(by_steps[str(s)]) for s in steps) + " |")
    means = [np.nanmean([np.nanmean(r[str(s)]) if np.isfinite(r[str(s)]).any() else np.nan for r in results.values()])
             for s in steps]
    lines.append("| mean over datasets | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("datasets", nargs="+", type=Path, help="prepared dataset folders (talk3d prep)")
    ap.add_argument("--steps", nargs="+", type=int, default=[400, 1500], help="pretraining step counts to compare")
    ap.add_argument("--seeds", type=int, default=6, help="seeds per dataset and step count (0..N-1)")
    ap.add_argument("--inner-split", type=float, default=0.0,
                    help="hold out this last fraction of the training frames instead of the held-out frames")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    if not 0.0 <= args.inner_split < 1.0:
        ap.error(f"--inner-split must be in [0, 1), not {args.inner_split}")
    if args.seeds < 1 or min(args.steps) < 1:
        ap.error("--seeds and every --steps value must be at least 1")
    steps = list(dict.fromkeys(args.steps))
    from talk3d.console import is_quiet, set_quiet

    torch.set_num_threads(args.threads)
    was_quiet = is_quiet()
    set_quiet(True)
    try:
        results: dict[str, dict[str, list[float]]] = {}
        for dataset in dict.fromkeys(args.datasets):
            cfg, data = training_data(dataset, args.inner_split)
            results[str(dataset)] = {str(s): [held_out_correlation(cfg, data, s, seed) for seed in range(args.seeds)]
                                     for s in steps}
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        set_quiet(was_quiet)
    print(_table(results, steps))
    if args.json is not None:
        figures = {d: {s: [v if math.isfinite(v) else None for v in vals] for s, vals in r.items()}
                   for d, r in results.items()}
        args.json.write_text(json.dumps({"inner_split": args.inner_split, "seeds": args.seeds,
                                         "held_out_code_correlation": figures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
