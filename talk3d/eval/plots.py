"""PNG plots of the evaluation (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from talk3d.io import atomic_path


def _figure(rows: int, cols: int = 1, size: tuple[float, float] = (9.0, 3.0)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(size[0], size[1] * rows), squeeze=False)
    return plt, fig, axes[:, 0] if cols == 1 else axes


def _save(plt: Any, fig: Any, path: str | os.PathLike) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and v is not None else np.nan


def plot_views(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Face-detection rate, yaw/pitch error and identity distance per requested view."""
    plt, fig, axes = _figure(3)
    labels = [f"yaw {r['yaw']:+g}\npitch {r['pitch']:+g}" for r in rows]
    x = np.arange(len(rows))
    axes[0].bar(x, [_num(r["face_detected"]) for r in rows], color="tab:green")
    axes[0].set_ylim(0, 1.05)
    axes[0].set_ylabel("face detected")
    axes[1].bar(x - 0.2, [_num(r["yaw_error"]) for r in rows], 0.4, label="yaw error")
    axes[1].bar(x + 0.2, [_num(r["pitch_error"]) for r in rows], 0.4, label="pitch error")
    axes[1].set_ylabel("degrees")
    axes[1].legend(loc="upper left")
    ident = [_num(r.get("identity_distance")) for r in rows]
    if np.isfinite(ident).any():
        axes[2].bar(x, ident, color="tab:purple")
        axes[2].axhline(0.6, color="k", ls="--", lw=1, label="same-person threshold 0.6")
        axes[2].legend(loc="upper left")
    else:
        from talk3d.eval.dlib_face import NOT_AVAILABLE, available

        msg = "no face detected in any view" if available() else f"identity distance {NOT_AVAILABLE}"
        axes[2].text(0.5, 0.5, msg, ha="center", va="center", transform=axes[2].transAxes)
    axes[2].set_ylabel("dlib distance")
    for ax in axes:
        ax.set_xticks(x, labels)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title("novel views")
    _save(plt, fig, path)


def plot_frame_grid(rows: list[tuple[str, np.ndarray]], path: str | os.PathLike,
                    column_titles: list[str] | None = None, title: str = "") -> None:
    """Frames themselves, one labelled row per ``(label, (C, H, W, 3) uint8)`` entry (same ``C``)."""
    cols = max(len(frames) for _, frames in rows)
    plt, fig, axes = _figure(len(rows), cols, (2.2 * cols, 2.3))
    axes = np.asarray(axes).reshape(len(rows), cols)
    for r, (label, frames) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(frames):
                ax.imshow(frames[c])
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
            if r == 0 and column_titles and c < len(column_titles):
                ax.set_title(column_titles[c], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(plt, fig, path)


def plot_mouth(fps: float, self_driven: dict[str, np.ndarray] | None,
               cross: list[tuple[str, np.ndarray, np.ndarray]], path: str | os.PathLike) -> None:
    """Mouth opening over time: render vs ground truth, and per driving audio vs voice activity.

    Args:
        self_driven: ``{"open_gt": (F,), "open_render": (F,), "indices": (F,)}`` or None.
        cross: ``(name, opening (F,), speech (F,))`` per driving audio.
    """
    panels = (1 if self_driven is not None else 0) + len(cross)
    plt, fig, axes = _figure(max(panels, 1))
    k = 0
    if self_driven is not None:
        t = self_driven["indices"] / fps
        dots = "o" if len(t) < 30 else None
        axes[0].plot(t, self_driven["open_gt"], label="ground truth", color="k", marker=dots, ms=3)
        axes[0].plot(t, self_driven["open_render"], label="render", color="tab:red", marker=dots, ms=3)
        axes[0].set_title("self-driven (held-out frames): mouth opening")
        axes[0].legend(loc="upper right")
        k = 1
    for name, opening, speech in cross:
        ax = axes[k]
        t = np.arange(len(opening)) / fps
        top = np.nanmax(opening) if np.isfinite(opening).any() else 1.0
        ax.fill_between(t, 0, speech * top, color="tab:blue", alpha=0.15, step="mid", label="voice activity")
        ax.plot(t, opening, color="tab:red", label="render mouth opening")
        ax.set_title(f"cross-driven: {name}")
        ax.legend(loc="upper right")
        k += 1
    for ax in axes:
        ax.set_xlabel("seconds")
        ax.set_ylabel("lip gap / eye width")
        ax.grid(alpha=0.3)
    _save(plt, fig, path)


def plot_drive(fps: float, clips: list[tuple[str, np.ndarray, np.ndarray, dict[str, Any]]],
               path: str | os.PathLike) -> None:
    """One panel per driving clip: the speaker's tracked mouth opening and the avatar's, over time.

    Args:
        clips: ``(name, speaker (F,), avatar (F,), figures)`` per clip (figures of
            :func:`talk3d.eval.drive_video.video_driven`).
    """
    plt, fig, axes = _figure(max(len(clips), 1))
    for ax, (name, speaker, avatar, f) in zip(axes, clips, strict=False):
        t = np.arange(len(speaker)) / fps
        ax.plot(t, speaker, color="k", label="driving speaker (tracked)")
        ax.plot(t, avatar, color="tab:red", label="avatar (tracked in the render)")
        ax.set_title(f"{name}: correlation {_num(f['opening_corr']):.2f} (lag {f['opening_corr_lag_frames']:+d}), "
                     f"closure recall {_num(f['closure_recall']):.2f}")
        ax.set_xlabel("seconds")
        ax.set_ylabel("lip gap / eye width")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    _save(plt, fig, path)


def read_metrics_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a ``metrics.jsonl`` file (malformed lines skipped)."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def plot_training(rows: list[dict[str, Any]], path: str | os.PathLike, max_panels: int = 6) -> list[str]:
    """Training curves (every numeric key against ``step``); returns the keys plotted."""
    keys: list[str] = []
    for r in rows:
        for key, v in r.items():
            if key != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and key not in keys:
                keys.append(key)
    keys = [k for k in keys if k not in ("time", "elapsed", "wall")][:max_panels]
    plt, fig, axes = _figure(max(len(keys), 1), size=(9.0, 2.4))
    if not keys:
        axes[0].text(0.5, 0.5, "no metrics.jsonl rows", ha="center", va="center", transform=axes[0].transAxes)
    for ax, key in zip(axes, keys, strict=False):
        pts = [(r.get("step", i), r[key]) for i, r in enumerate(rows) if isinstance(r.get(key), (int, float))]
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, lw=1, marker="o" if len(xs) < 30 else None, ms=3)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        positive = np.asarray(ys, dtype=float)
        if key.startswith("loss") and np.all(positive > 0) and positive.max() / positive.min() > 20:
            ax.set_yscale("log")
    axes[-1].set_xlabel("step")
    axes[0].set_title("training curves (metrics.jsonl)")
    _save(plt, fig, path)
    return keys
