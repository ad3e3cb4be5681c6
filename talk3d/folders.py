"""Output folders talk3d owns: a marker file, ``--force`` that removes only talk3d's entries,
staged results swapped in only when complete, and inputs kept apart from outputs.

Every dataset, run and report folder holds ``.talk3d.json``::

    {"format": "talk3d-folder", "kind": "dataset" | "run" | "eval", "version": 1,
     "entries": ["frames", "masks", "manifest.json", ...]}

``entries`` are the names talk3d writes in that folder; ``--force`` removes those and nothing
else, so files a user put in the folder survive. A folder without a marker is recognised only
by content only talk3d writes (a dataset manifest with its format fields; a run's
``talk3d-avatar`` / ``talk3d-checkpoint`` sidecars, written by versions before the marker), never
by a common file name such as ``config.json``.

A result that replaces an older one is built in a staging folder inside the output folder and
moved in by :func:`commit_staged` only once complete; until then the old result stays as it was.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from talk3d.errors import UserError
from talk3d.io import atomic_path, read_json_dict, remove_tree, safe_child

MARKER = ".talk3d.json"
FORMAT = "talk3d-folder"
VERSION = 1
TRASH = ".talk3d-old"
KINDS = ("dataset", "run", "eval")
_DATASET_KEYS = {"format_version", "num_frames", "intrinsics", "train_end", "source_sha256", "prep_settings"}


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The folder's marker when it is a valid talk3d marker, else ``None``."""
    data = read_json_dict(Path(folder) / MARKER)
    if data is None or data.get("format") != FORMAT or data.get("kind") not in KINDS:
        return None
    entries = data.get("entries")
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        return None
    return data


def _legacy_kind(folder: Path) -> str | None:
    """Kind of a folder written before the marker, from content only talk3d writes."""
    manifest = read_json_dict(folder / "manifest.json")
    if manifest is not None and _DATASET_KEYS <= manifest.keys() and manifest.get("format_version") == 1:
        return "dataset"
    state = read_json_dict(folder / ".prep" / "state.json")  # an unfinished prep
    if state is not None and {"source_sha256", "settings"} <= state.keys():
        return "dataset"
    avatar = read_json_dict(folder / "avatar.json")
    if avatar is not None and avatar.get("format") == "talk3d-avatar":
        return "run"
    report = read_json_dict(folder / "report.json")
    if report is not None and {"run", "self_driven", "novel_views"} <= report.keys():
        return "eval"
    ckpts = folder / "checkpoints"
    if ckpts.is_dir():
        for p in sorted(ckpts.glob("step_*.json"))[-1:]:
            side = read_json_dict(p)
            if side is not None and side.get("format") == "talk3d-checkpoint":
                return "run"
    return None


def folder_kind(folder: str | os.PathLike) -> str | None:
    """``dataset``, ``run`` or ``eval`` for a folder talk3d wrote, else ``None``."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    marker = read_marker(folder)
    return marker["kind"] if marker is not None else _legacy_kind(folder)


def write_marker(folder: str | os.PathLike, kind: str, entries: Iterable[str]) -> None:
    """Write (atomically) the marker saying ``folder`` holds a talk3d ``kind`` made of ``entries``."""
    with atomic_path(Path(folder) / MARKER) as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, "kind": kind, "version": VERSION, "entries": list(entries)},
                                  indent=2) + "\n")


def is_empty(folder: Path) -> bool:
    return folder.is_dir() and not any(folder.iterdir())


def claim_output(folder: str | os.PathLike, kind: str, command: str) -> bool:
    """Check that ``folder`` may receive a talk3d ``kind``; return True when it holds one already.

    A missing or empty folder is fine; a folder of the same kind is ours; anything else
    (a file, a foreign non-empty folder, a talk3d folder of another kind) is refused.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output '{folder}' exists and is a file; choose a folder name with -o")
    if not folder.exists() or is_empty(folder):
        return False
    found = folder_kind(folder)
    if found is None:
        raise UserError(f"output folder '{folder}' is not empty and is not a talk3d {kind} (made by "
                        f"'talk3d {command}'); choose a new or empty folder")
    if found != kind:
        raise UserError(f"'{folder}' holds a talk3d {found}, not a {kind}; choose another output folder")
    return True


def commit_staged(folder: str | os.PathLike, staging: str | os.PathLike, kind: str,
                  entries: Sequence[str]) -> None:
    """Replace the talk3d entries of ``folder`` by those built (complete) in ``staging``.

    A journal (``.talk3d-old/swap.json``: the names the new result has) is written first; then
    each old entry is moved aside into ``.talk3d-old`` and the new one moved in (one rename
    each), the marker rewritten, and only then the old entries deleted. Interrupted anywhere,
    :func:`finish_interrupted_swap` (run by the next command on the folder) rolls the swap
    forward from the journal: no file is lost and the new result is never left behind.
    Only the kind's known ``entries`` are touched (plain names), never a user's own file.
    """
    folder, staging = Path(folder), Path(staging)
    trash = folder / TRASH
    plain_scratch_folder(trash)
    journal = read_json_dict(trash / "swap.json")
    if journal is None or not isinstance(journal.get("new"), list):
        remove_tree(trash)
        trash.mkdir()
        journal = {"new": [n for n in entries if (staging / n).exists() or (staging / n).is_symlink()]}
        with atomic_path(trash / "swap.json") as tmp:
            tmp.write_text(json.dumps(journal))
    for name in entries:
        dst = safe_child(folder, name)
        if dst is None:
            continue
        src = staging / name
        staged = src.exists() or src.is_symlink()
        if name in journal["new"] and not staged:
            continue  # moved in already (a resumed swap)
        if dst.exists() or dst.is_symlink():  # the old entry, aside
            remove_tree(trash / name)
            os.replace(dst, trash / name)
        if staged:
            os.replace(src, dst)
    write_marker(folder, kind, entries)
    remove_tree(trash)
    remove_tree(staging)


def finish_interrupted_swap(folder: str | os.PathLike, staging: str | os.PathLike, kind: str,
                            entries: Sequence[str]) -> None:
    """Roll forward a :func:`commit_staged` that was interrupted (or drop an aside folder that
    has no journal yet: nothing had been moved)."""
    trash = Path(folder) / TRASH
    plain_scratch_folder(trash)
    if (trash / "swap.json").is_file():
        commit_staged(folder, staging, kind, entries)
    else:
        remove_tree(trash)


def plain_scratch_folder(path: Path) -> None:
    """Make sure talk3d's scratch name ``path`` (``.prep``, ``.fit-new``, ``.eval-new``, ``.talk3d-old``)
    is a plain folder or absent.

    A link there is removed (only the link: its target is never followed, nor written through);
    a file of that name is not talk3d's, so it is refused, never deleted.
    """
    if path.is_symlink():
        path.unlink()
    elif path.exists() and not path.is_dir():
        raise UserError(f"'{path}' is a file, but talk3d keeps its unfinished work under that name: move it "
                        f"away and run the command again")


def _relation(a: Path, b: Path) -> str | None:
    if a == b:
        return "is"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "contains"
    return None


def check_separate(output: str | os.PathLike, inputs: Iterable[tuple[str, str | os.PathLike | None]],
                   allowed: Iterable[str | os.PathLike] = ()) -> None:
    """Refuse an output that is, contains or is inside one of the command's inputs.

    Args:
        output: a file or folder the command writes.
        inputs: ``(what, path)`` pairs, e.g. ``("dataset", "data/obama")``; ``None`` paths are skipped.
        allowed: outputs accepted even so (e.g. ``RUN/eval``, the report's own place).
    """
    out = Path(output).expanduser().resolve()
    if out in {Path(p).expanduser().resolve() for p in allowed}:
        return
    for what, path in inputs:
        if path is None:
            continue
        src = Path(path).expanduser().resolve()
        rel = _relation(out, src)
        if rel is not None:
            raise UserError(f"output '{output}' {rel} the input {what} '{path}'; write the output somewhere "
                            f"outside the input")
