"""dlib 68-point landmarks and 128-d identity embeddings (optional ``talk3d[eval]`` extra).

``dlib-bin`` provides dlib; ``face_recognition_models`` ships the model files. Its own
``__init__`` imports ``pkg_resources`` (gone from recent setuptools), so the files are
located with :func:`importlib.util.find_spec` instead of importing it.
When either package is missing, :func:`available` is false and callers report the figure as
"not available (install talk3d[eval])".
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

NOT_AVAILABLE = "not available (install talk3d[eval])"
SAME_PERSON_THRESHOLD = 0.6
"""dlib's documented threshold: embeddings closer than this are the same person."""
DLIB_MOUTH = tuple(range(48, 68))
"""Mouth points of the 68-point (iBUG 300-W) layout."""


def models_dir() -> Path | None:
    """Folder holding face_recognition_models' ``.dat`` files, or ``None`` when absent."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    return folder if folder.is_dir() else None


def available() -> bool:
    """Whether dlib and its model files are installed."""
    folder = models_dir()
    return (
        importlib.util.find_spec("dlib") is not None
        and folder is not None
        and (folder / "shape_predictor_68_face_landmarks.dat").is_file()
        and (folder / "dlib_face_recognition_resnet_model_v1.dat").is_file()
    )


@functools.lru_cache(maxsize=1)
def _models():
    import dlib

    folder = models_dir()
    assert folder is not None
    return (
        dlib.shape_predictor(str(folder / "shape_predictor_68_face_landmarks.dat")),
        dlib.face_recognition_model_v1(str(folder / "dlib_face_recognition_resnet_model_v1.dat")),
    )


def _rect(box: tuple[float, float, float, float]):
    import dlib

    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return dlib.rectangle(x0, y0, x1, y1)


def face_box_from_landmarks(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """dlib-style face box ``(x0, y0, x1, y1)`` from mediapipe landmarks ``(478, 2+)``.

    dlib's detector boxes span brows to chin; the mediapipe mesh spans forehead to chin, so
    the top is trimmed by 15% of the height. The mediapipe box is used instead of dlib's
    HOG detector because the latter misses faces at yaw 30 and beyond.
    """
    lm = np.asarray(landmarks)[:, :2]
    x0, y0 = lm.min(0)
    x1, y1 = lm.max(0)
    return float(x0), float(y0 + 0.15 * (y1 - y0)), float(x1), float(y1)


def landmarks68(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """dlib 68-point landmarks ``(68, 2)`` float32 pixels for the face in ``box``.

    Args:
        rgb: ``(H, W, 3)`` uint8.
    """
    predictor, _ = _models()
    shape = predictor(np.ascontiguousarray(rgb), _rect(box))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def embedding(rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """dlib ResNet 128-d face embedding ``(128,)`` float32 for the face in ``box``."""
    predictor, encoder = _models()
    img = np.ascontiguousarray(rgb)
    shape = predictor(img, _rect(box))
    return np.asarray(encoder.compute_face_descriptor(img, shape), dtype=np.float32)


def face_embedding(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """:func:`embedding` of the face whose FaceMesh ``landmarks (478, 2+)`` were found in ``rgb``."""
    return embedding(rgb, face_box_from_landmarks(landmarks))
