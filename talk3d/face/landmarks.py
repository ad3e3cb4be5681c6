"""FaceMesh landmark index sets and expression measures (mouth opening, eye closure).

Indices refer to mediapipe's 478-point FaceMesh with iris refinement. "Right"/"left" are
the subject's: the subject's right eye appears on the image's left.
"""

from __future__ import annotations

import collections
import functools

import numpy as np

STABLE_LANDMARKS = np.array(sorted({
    # forehead
    10, 151, 9, 109, 67, 103, 338, 297, 332, 108, 69, 337, 299,
    # nose bridge and nose
    168, 6, 197, 195, 5, 4,
    # eye corners
    33, 133, 263, 362, 130, 359, 243, 463,
    # cheeks and temples
    234, 454, 93, 323, 116, 345, 123, 352, 50, 280, 101, 330, 127, 356, 162, 389, 21, 251, 54, 284,
}), dtype=np.int64)
"""Landmarks that move rigidly with the skull (no mouth, jaw, eyelids or eyebrows)."""

FACE_OVAL = np.array([10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378,
                      400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21,
                      54, 103, 67, 109], dtype=np.int64)
"""Face outline in order around the face (forehead top, subject's left side, chin, right side)."""

RIGHT_SIDE = np.array([33, 133, 234, 61, 127, 70, 105, 58, 172, 93, 132, 130, 116, 50], dtype=np.int64)
LEFT_SIDE = np.array([263, 362, 454, 291, 356, 300, 334, 288, 397, 323, 361, 359, 345, 280], dtype=np.int64)
"""Mirror-symmetric landmark pairs (subject's right, subject's left)."""
LEFT_EYE_CORNERS = (263, 362)
"""Subject's left eye: outer, inner corner."""
RIGHT_EYE_CORNERS = (33, 133)
"""Subject's right eye: outer, inner corner."""
MIDLINE = np.array([10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 2, 164, 0, 13, 14, 17, 18, 200, 199, 175, 152],
                   dtype=np.int64)
"""Landmarks on the face's symmetry plane, forehead to chin."""
NOSE_TIP = 1
CHIN = 152
FOREHEAD = 10
UPPER_LIP_INNER, LOWER_LIP_INNER = 13, 14
MOUTH_CORNERS = (61, 291)
MOUTH = np.array(sorted({0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181,
                         185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375,
                         402, 405, 409, 415}), dtype=np.int64)
"""Lips (outer and inner contours)."""

_EYE_PAIRS = {
    "right": ((160, 144), (159, 145), (158, 153), RIGHT_EYE_CORNERS),
    "left": ((385, 380), (386, 374), (387, 373), LEFT_EYE_CORNERS),
}

EAR_OPEN = 0.30
"""Eye aspect ratio of a typical open eye (FaceMesh), mapped to closure 0."""
EAR_CLOSED = 0.08
"""Eye aspect ratio of a closed eye, mapped to closure 1."""


def _as_batch(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1] < 468 or lm.shape[2] not in (2, 3):
        raise ValueError(f"landmarks must be (N, 478, 2|3), got {np.shape(landmarks)}")
    return lm


def face_size(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners (robust to expression and mouth motion).

    Args:
        landmarks: ``(N, 478, 2|3)`` or ``(478, 2|3)``.
    Returns:
        ``(N,)`` float32 in the landmarks' units.
    """
    lm = _as_batch(landmarks)
    return np.linalg.norm(lm[:, LEFT_EYE_CORNERS[0]] - lm[:, RIGHT_EYE_CORNERS[0]], axis=-1)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip gap divided by the outer-eye-corner distance.

    Args:
        landmarks: ``(N, 478, 2|3)`` or ``(478, 2|3)`` (pixels, any scale).
    Returns:
        ``(N,)`` float32; about 0 for a closed mouth, ~0.3-0.6 wide open.
    """
    lm = _as_batch(landmarks)
    gap = np.linalg.norm(lm[:, UPPER_LIP_INNER] - lm[:, LOWER_LIP_INNER], axis=-1)
    return (gap / np.maximum(face_size(lm), 1e-6)).astype(np.float32)


def eye_aspect_ratio(landmarks: np.ndarray) -> np.ndarray:
    """Mean eye aspect ratio (lid gap / eye width) of both eyes.

    Returns:
        ``(N,)`` float32, ~0.3 open, ~0.05 closed.
    """
    lm = _as_batch(landmarks)
    ears = []
    for pairs in _EYE_PAIRS.values():
        *vert, (a, b) = pairs
        gap = np.mean([np.linalg.norm(lm[:, i] - lm[:, j], axis=-1) for i, j in vert], axis=0)
        ears.append(gap / np.maximum(np.linalg.norm(lm[:, a] - lm[:, b], axis=-1), 1e-6))
    return np.mean(ears, axis=0).astype(np.float32)


def eye_closure(landmarks: np.ndarray, ear_open: float = EAR_OPEN, ear_closed: float = EAR_CLOSED) -> np.ndarray:
    """Eye closure in [0, 1] (0 open, 1 closed) from the eye aspect ratio.

    Args:
        landmarks: ``(N, 478, 2|3)`` or ``(478, 2|3)``.
        ear_open, ear_closed: aspect ratios mapped to 0 and 1 (prep passes per-video values).
    Returns:
        ``(N,)`` float32 in [0, 1].
    """
    ear = eye_aspect_ratio(landmarks)
    return np.clip((ear_open - ear) / max(ear_open - ear_closed, 1e-6), 0.0, 1.0).astype(np.float32)


def tessellation_triangles() -> np.ndarray:
    """FaceMesh triangles ``(F, 3)`` recovered from the edge list ``FACEMESH_TESSELATION``.

    Triangles are the 3-cliques of the edge graph; the few cliques that are not faces
    (all three edges shared by three cliques) are dropped. Returns a fresh copy.
    """
    return _tessellation().copy()


@functools.cache
def _tessellation() -> np.ndarray:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    adj: dict[int, set[int]] = collections.defaultdict(set)
    for a, b in FACEMESH_TESSELATION:
        adj[a].add(b)
        adj[b].add(a)
    tris = set()
    for a, b in FACEMESH_TESSELATION:
        for c in adj[a] & adj[b]:
            tris.add(tuple(sorted((a, b, c))))
    count: collections.Counter = collections.Counter()
    for t in tris:
        for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])):
            count[e] += 1
    good = [t for t in sorted(tris)
            if not all(count[e] > 2 for e in ((t[0], t[1]), (t[1], t[2]), (t[0], t[2])))]
    return np.array(good, dtype=np.int64)
