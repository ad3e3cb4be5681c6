"""How well the lip-code head predicts held-out frames, by lip-pretraining length (issue 16).

Runs only the fit's lip pretraining (:class:`talk3d.fit.stages.LipPretraining`: the same
windows, augmentation and silence examples as ``talk3d fit``, the quick preset's model; the
encoder is seeded on its own, so seed 0 here is not the fit's seed 0), no rendering,
for every dataset x step count x seed, and reports the correlation of the predicted and tracked
first lip-code component on the held-out frames (the figure ``talk3d fit`` logs as
"held-out mouth-code correlation"). The head is only as good as a short clip allows, and the
figure moves by +-0.1 from seed to seed, so compare step counts over several seeds.

``--inner-split F``: hold out the last fraction ``F`` of the *training* frames instead (8
frames before them are dropped so that neighbouring windows do not leak) and never look at the
dataset's own held-out frames: a check that a setting chosen on the held-out frames is not
tuned to them.

    python benchmarks/lip_pretraining.py DATA [DATA ...] --steps 400 1500 --seeds 6 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from talk3d.fit.config import preset
from talk3d.fit.data import TrainingData
from talk3d.fit.lipsync import AudioAugment
from talk3d.fit.stages import LipPretraining
from talk3d.model.conditioning import TokenEncoder

INNER_GAP = 8
"""Training frames dropped before an inner held-out block (the audio window reaches 8 frames)."""


class InnerSplit(TrainingData):
    """Training data whose held-out frames are the last ``fraction`` of its training frames
    (:data:`INNER_GAP` frames before them dropped); the lip codes stay those of the whole
    training split, as ``talk3d fit`` computes them."""

    def __init__(self, dataset: Path, model_config, fraction: float):
        super().__init__(dataset, model_config)
        train = np.sort(np.asarray(self.manifest.train_frames))
        cut = int(round(len(train) * (1.0 - fraction)))
        if cut - INNER_GAP < 2 or len(train) - cut < 3:
            raise SystemExit(f"{dataset}: {len(train)} training frames are too few for --inner-split {fraction}")
        self._inner = (train[:cut - INNER_GAP], train[cut:])

    @property
    def train_indices(self) -> np.ndarray:
        return self._inner[0] if hasattr(self, "_inner") else super().train_indices

    @property
    def val_indices(self) -> np.ndarray:
        return self._inner[1] if hasattr(self, "_inner") else super().val_indices


def held_out_correlation(dataset: Path, steps: int, seed: int, inner_split: float = 0.0) -> float:
    """The lip pretraining of ``talk3d fit`` with ``steps`` and ``seed``; returns the held-out
    correlation of the first lip-code component."""
    cfg = preset("quick")
    data = InnerSplit(dataset, cfg.model, inner_split) if inner_split > 0 else TrainingData(dataset, cfg.model)
    cfg.mouth_pretrain_steps, cfg.seed = steps, seed
    torch.manual_seed(seed)
    encoder = TokenEncoder(cfg.model)
    return LipPretraining(cfg, data, torch.device("cpu")).run(encoder, AudioAugment())["lip_code_val_corr"]


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
    from talk3d.console import set_quiet

    set_quiet(True)
    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, list[float]]] = {}
    for dataset in args.datasets:
        results[dataset.name] = {str(s): [held_out_correlation(dataset, s, seed, args.inner_split)
                                          for seed in range(args.seeds)] for s in args.steps}
    print("| dataset | " + " | ".join(f"{s} steps (mean, per seed)" for s in args.steps) + " |")
    print("| --- |" + " --- |" * len(args.steps))
    for name, by_steps in results.items():
        cells = [f"{np.mean(v):.3f} ({', '.join(f'{x:.2f}' for x in v)})" for v in by_steps.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    means = [f"{np.mean([np.mean(r[str(s)]) for r in results.values()]):.3f}" for s in args.steps]
    print("| mean over datasets | " + " | ".join(means) + " |")
    if args.json is not None:
        args.json.write_text(json.dumps({"inner_split": args.inner_split, "seeds": args.seeds,
                                         "held_out_code_correlation": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
