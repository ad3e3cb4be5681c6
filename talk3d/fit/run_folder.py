"""The run folder of a fit: what it holds, creating or taking it over, metrics records, disk space.

A fit writes into the run folder itself, or, when ``--force`` replaces an earlier run, into
``RUN/.fit-new`` (moved in by :func:`talk3d.folders.commit_staged` only once complete).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from talk3d.errors import UserError
from talk3d.fit import checkpoint as ck
from talk3d.fit.config import FitConfig
from talk3d.folders import claim_output, finish_interrupted_swap, plain_scratch_folder, write_marker
from talk3d.io import atomic_path, remove_stale_temporaries

METRICS = "metrics.jsonl"
PREVIEWS = "previews"
CURVES = "curves.png"
# Files and folders a fit writes; --force removes only these (never unknown user files).
RUN_ENTRIES = (ck.CONFIG, ck.CHECKPOINTS, ck.AVATAR, ck.AVATAR_META, ck.DATASET_MANIFEST, *ck.RUN_COPIES,
               *ck.OPTIONAL_RUN_COPIES, ck.PHONEMES, ck.LIP_PRIOR, METRICS, PREVIEWS, CURVES, "fit.log")
# A fit that replaces an earlier run (--force) is built here and moved in only once complete.
STAGING = ".fit-new"



def prepare_run_dir(run_dir: Path, force: bool) -> Path:
    """Check the run folder and return the folder this fit writes into.

    A new or empty folder, or a talk3d run (resumed), is written in place. With ``force`` a
    folder holding a run gets the new fit in ``RUN/.fit-new`` (resumed there when interrupted),
    which replaces the old run's entries only once complete. Anything else is refused.
    """
    has_run = claim_output(run_dir, "run", "fit")
    staging = run_dir / STAGING
    plain_scratch_folder(staging)
    target = staging if has_run and force else run_dir
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target) as probe:  # unnamed (or unique) file: no name of the user's is touched
            probe.write(b"ok")
    except OSError as exc:
        raise UserError(f"cannot write to run folder '{run_dir}' ({exc.strerror}); choose another -o") from None
    finish_interrupted_swap(run_dir, staging, "run", RUN_ENTRIES)
    write_marker(run_dir, "run", RUN_ENTRIES)
    remove_stale_temporaries(target)
    remove_stale_temporaries(target / ck.CHECKPOINTS, anonymous=True)
    return target


def space_needed(model: torch.nn.Module, cfg: FitConfig) -> float:
    """Bytes a fit writes: the kept checkpoints (model + two Adam moments, one more while a new
    one is written), the avatar, previews and logs."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return weights * (3 * (cfg.keep_checkpoints + 1) + 1) + 20e6


def disk_full(run_dir: Path, needed: float) -> UserError:
    good = ck.list_checkpoints(run_dir)
    kept = f"the checkpoint of step {good[-1][0]} is kept" if good else "no checkpoint was written yet"
    return UserError(f"the disk holding '{run_dir}' is full ({kept}): this fit needs about {needed / 1e6:,.0f} MB; "
                     f"free some space and run the same command again to resume")


def read_records(path: Path, upto: int) -> list[dict[str, Any]]:
    """Lines of ``metrics.jsonl`` with ``step <= upto`` (a resumed fit rewrites what follows)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("step", 0) <= upto:
            out.append(rec)
    return out


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
