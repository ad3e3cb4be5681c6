"""Fuzzing every loader of a file a user can reach (issue 14).

Each loader gets a few hundred seeded random mutations of a valid file: truncation, flipped
and inserted bytes, and for JSON values of the wrong type, huge numbers, NaN/inf, ``null``,
deleted keys and paths such as ``../`` or ``/etc/passwd``. Every outcome must be a success or
a one-line :class:`UserError`, never another exception, and nothing may be written outside
the folder under test.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from talk3d.errors import UserError
from talk3d.fit import checkpoint as ck
from talk3d.fit.config import tiny_config
from talk3d.fit.trainer import fit
from talk3d.io import close_file_logs
from tests.tiny_data import make_tiny_dataset

TRIALS = 300
ODD_VALUES = ["abc", "", -1, 0, 1, 10**30, -(10**30), 1e308, float("nan"), float("inf"), float("-inf"), None,
              True, [], {}, [1, 2], {"a": 1}, "../../x", "/etc/passwd", "..", "a/../../b", 0.5, 2**63]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Truncate, flip bytes or insert garbage."""
    kind = rng.choice(["truncate", "flip", "insert", "zero_head"])
    b = bytearray(data)
    if kind == "truncate":
        return bytes(b[: rng.randrange(len(b))])
    if kind == "flip":
        for _ in range(rng.randint(1, 16)):
            i = rng.randrange(min(len(b), 256) if rng.random() < 0.7 else len(b))
            b[i] = rng.randrange(256)
        return bytes(b)
    if kind == "insert":
        i = rng.randrange(len(b) + 1)
        return bytes(b[:i]) + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + bytes(b[i:])
    return bytes(8) + bytes(b[8:])


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):
            yield from _paths(v, (*prefix, i))


def mutate_json(text: str, rng: random.Random) -> str:
    """Replace or delete a random value (at any depth), or mangle the text itself."""
    if rng.random() < 0.25:
        return mutate_bytes(text.encode(), rng).decode("latin-1")
    data = json.loads(text)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(data) if p]
        if not paths:
            return json.dumps(rng.choice(ODD_VALUES))
        path = rng.choice(paths)
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and rng.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = rng.choice(ODD_VALUES)
    return json.dumps(data)  # NaN and Infinity as Python's json writes them


def files_outside(root: Path, inside: Path) -> dict[str, float]:
    """Modification times of every file under ``root`` except under ``inside``."""
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and inside not in p.parents}


def fuzz(target: Path, loader: Callable[[], object], rng: random.Random, text: bool, root: Path,
         inside: Path, restore: Callable[[], None] | None = None) -> dict[str, int]:
    """Mutate ``target`` TRIALS times and run ``loader`` on each; count the outcomes."""
    original = target.read_bytes()
    counts = {"ok": 0, "user_error": 0}
    before = files_outside(root, inside)
    for _ in range(TRIALS):
        mutated = (mutate_json(original.decode(), rng).encode("latin-1", "replace") if text
                   else mutate_bytes(original, rng))
        target.write_bytes(mutated)
        try:
            loader()
            counts["ok"] += 1
        except UserError as exc:
            assert "\n" not in str(exc), str(exc)
            counts["user_error"] += 1
        finally:
            target.write_bytes(original)
            if restore is not None:
                restore()
    assert files_outside(root, inside) == before, "a loader wrote outside its folder"
    return counts


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    data = make_tiny_dataset(root / "data", num_frames=12)
    fit(data, root / "run", tiny_config(steps=2))
    close_file_logs()  # as the CLI does after each command: later log lines must not reach fit.log
    return {"root": root, "data": data, "run": root / "run"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # numpy parsing a mangled header literal
def test_fuzz_dataset_manifest_and_npy_headers(tiny):
    from talk3d.dataset import validate
    from talk3d.io import read_npy

    data = tiny["data"]
    rng = random.Random(1)
    counts = fuzz(data / "manifest.json", lambda: validate(data), rng, True, tiny["root"], data)
    assert counts["user_error"] > TRIALS // 3
    for name in ("poses.npy", "audio_feats.npy"):
        fuzz(data / name, lambda n=name: read_npy(data / n, finite=True), rng, False, tiny["root"], data)
        counts = fuzz(data / name, lambda: validate(data), rng, False, tiny["root"], data)
        assert counts["user_error"] > TRIALS // 3


def test_fuzz_avatar_json_and_safetensors_header(tiny):
    run = tiny["run"]
    rng = random.Random(2)
    counts = fuzz(run / ck.AVATAR_META, lambda: ck.load_run(run), rng, True, tiny["root"], run)
    assert counts["ok"] > 0 and counts["user_error"] > TRIALS // 3
    # the checksum catches any change of the tensor file; without it (runs of older versions)
    # the safetensors parser itself must refuse cleanly
    meta = json.loads((run / ck.AVATAR_META).read_text())
    legacy = tiny["root"] / "legacy"
    shutil.copytree(run, legacy)
    (legacy / ck.AVATAR_META).write_text(json.dumps({k: v for k, v in meta.items() if k != "sha256"}))
    counts = fuzz(legacy / ck.AVATAR, lambda: ck.load_run(legacy), rng, False, tiny["root"], legacy)
    assert counts["user_error"] > TRIALS // 2
    counts = fuzz(run / ck.AVATAR, lambda: ck.load_run(run), rng, False, tiny["root"], run)
    assert counts["ok"] == 0


def test_fuzz_checkpoint_sidecar(tiny):
    run = tiny["run"]
    sidecar = ck.list_checkpoints(run)[-1][1]
    counts = fuzz(sidecar, lambda: ck.load_checkpoint(sidecar), random.Random(3), True, tiny["root"], run)
    assert counts["ok"] > 0 and counts["user_error"] > TRIALS // 4


def test_fuzz_mpi_json_and_layers(tiny, tmp_path):
    import torch

    from talk3d.render.mpi import MPI, load_mpi, save_mpi

    mpi = MPI(rgba=torch.rand(4, 4, 16, 16), depths=torch.tensor([2.0, 2.5, 3.0, 3.5]),
              cam2world=torch.eye(4), intrinsics=torch.tensor([[1.5, 0, 0.5], [0, 1.5, 0.5], [0, 0, 1.0]]),
              near=1.8, far=3.8)
    folder = save_mpi(tiny["root"] / "mpi", mpi)
    rng = random.Random(4)
    counts = fuzz(folder / "mpi.json", lambda: load_mpi(folder), rng, True, tiny["root"], folder)
    assert counts["ok"] > 0 and counts["user_error"] > TRIALS // 3
    fuzz(folder / "layer_001.png", lambda: load_mpi(folder), rng, False, tiny["root"], folder)


def test_fuzz_prep_state(tiny):
    from talk3d.folders import write_marker
    from talk3d_prep.pipeline import _prepare_out_dir

    out = tiny["root"] / "prep_out"
    (out / ".prep").mkdir(parents=True)
    write_marker(out, "dataset", ["frames"])  # as an interrupted prep leaves it
    state = {"source_sha256": "abc", "settings": {"size": 64, "fps": 25.0}}
    (out / ".prep" / "state.json").write_text(json.dumps(state))

    def load() -> None:
        _prepare_out_dir(out, "abc", state["settings"], force=False)

    def restore() -> None:
        (out / ".prep").mkdir(exist_ok=True)
        (out / ".prep" / "state.json").write_text(json.dumps(state))

    counts = fuzz(out / ".prep" / "state.json", load, random.Random(5), True, tiny["root"], out, restore)
    # an unreadable state starts that prep over; a readable one of other settings is refused without --force
    assert counts["ok"] > 0 and counts["user_error"] > 0


def test_mutators_change_the_file():
    rng = random.Random(0)
    text = json.dumps({"a": 1, "b": [1.0, 2.0], "c": {"d": "x"}})
    changed = sum(mutate_json(text, rng) != text for _ in range(100))
    assert changed > 90
    data = bytes(range(256)) * 4
    assert sum(mutate_bytes(data, rng) != data for _ in range(100)) > 90
