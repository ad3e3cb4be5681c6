"""Face tracking (mediapipe FaceMesh, 478 landmarks) and head-pose estimation.

Shared by prep (tracking a video), render checks and eval (re-detecting faces in rendered
frames, mouth opening, eye closure).
"""

from talk3d.face.landmarks import (
    FACE_OVAL,
    LEFT_EYE_CORNERS,
    MIDLINE,
    STABLE_LANDMARKS,
    eye_aspect_ratio,
    eye_closure,
    face_size,
    mouth_opening,
)
from talk3d.face.pose import (
    build_canonical,
    estimate_pose,
    pose_stats,
    refit_translation,
    reprojection_error,
    smooth_poses,
    umeyama,
)
from talk3d.face.tracker import FaceTracker

__all__ = [
    "FACE_OVAL", "LEFT_EYE_CORNERS", "MIDLINE", "STABLE_LANDMARKS", "FaceTracker", "build_canonical",
    "estimate_pose", "eye_aspect_ratio", "eye_closure", "face_size", "mouth_opening", "pose_stats", "refit_translation",
    "reprojection_error", "smooth_poses", "umeyama",
]
