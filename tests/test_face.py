"""Face tracking, canonical shape, pose estimation and expression measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talk3d.camera import camera_angles, intrinsics_matrix, orbit, project, rotation_from_angles
from talk3d.face import (
    STABLE_LANDMARKS,
    FaceTracker,
    build_canonical,
    estimate_pose,
    eye_closure,
    mouth_opening,
    pose_stats,
    smooth_poses,
    umeyama,
)


@pytest.fixture(scope="module")
def astronaut_landmarks() -> np.ndarray:
    from skimage import data

    with FaceTracker(static=True) as tracker:
        lm = tracker.detect(data.astronaut())
        assert tracker.num_faces == 1
    assert lm is not None
    return lm


def test_tracker_finds_the_face_and_nothing_in_a_blank_image(astronaut_landmarks: np.ndarray) -> None:
    lm = astronaut_landmarks
    assert lm.shape == (478, 3) and lm.dtype == np.float32
    # the astronaut's face is in the upper middle of the 512x512 photo
    assert 150 < lm[1, 0] < 300 and 80 < lm[1, 1] < 180
    with FaceTracker(static=True) as tracker:
        assert tracker.detect(np.full((256, 256, 3), 128, np.uint8)) is None
        assert tracker.num_faces == 0


def test_umeyama_recovers_a_similarity() -> None:
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 3))
    rot = rotation_from_angles(20.0, -10.0, 5.0).double().numpy()
    dst = 2.5 * src @ rot.T + np.array([1.0, -2.0, 3.0])
    s, r, t = umeyama(src, dst)
    assert abs(s - 2.5) < 1e-6 and np.allclose(r, rot, atol=1e-6) and np.allclose(t, [1.0, -2.0, 3.0], atol=1e-6)


def _render_landmarks(canonical: np.ndarray, cams: torch.Tensor, k: torch.Tensor, size: int) -> np.ndarray:
    """FaceMesh-like landmarks: projected x, y; z = depth relative to the head centre, in pixels."""
    pts = torch.from_numpy(canonical).double().expand(cams.shape[0], -1, -1)
    uv, depth = project(pts, cams, k, size)
    _, centre_depth = project(torch.zeros(cams.shape[0], 1, 3, dtype=torch.float64), cams, k, size)
    scale = k[0, 0] * size / centre_depth  # pixels per world unit at the head
    z = (depth - centre_depth) * scale
    return torch.cat([uv, z[..., None]], -1).numpy()


def test_canonical_and_pose_recover_known_cameras(astronaut_landmarks: np.ndarray) -> None:
    canonical = build_canonical(astronaut_landmarks[None])
    assert canonical.shape == (478, 3)
    assert np.ptp(canonical[:, 0]) == pytest.approx(1.1, abs=1e-5)
    assert np.abs(canonical).max() < 1.0  # the face sits inside the [-1, 1]^3 head box
    assert canonical[1, 2] > 0.5  # nose tip towards +z (out of the face)
    assert canonical[10, 1] > canonical[152, 1]  # forehead above chin (+y up)
    size, k = 256, intrinsics_matrix(3.0).double()
    yaw = torch.tensor([-25.0, -10.0, 0.0, 12.0, 30.0])
    pitch = torch.tensor([5.0, -8.0, 0.0, 10.0, -3.0])
    base = torch.eye(4, dtype=torch.float64).expand(5, 4, 4).clone()
    base[:, :3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    base[:, 2, 3] = 9.0
    cams = orbit(base, yaw.double(), pitch.double())
    lm = _render_landmarks(canonical, cams, k, size)
    # a new canonical from these views equals the first one up to numerical noise
    again = build_canonical(lm)
    assert np.abs(again - canonical).max() < 0.05  # perspective views vs weak-perspective GPA
    est = estimate_pose(lm, canonical, k.numpy(), size)
    ang = camera_angles(torch.from_numpy(est).double())
    assert torch.allclose(ang[:, 0], yaw.double(), atol=0.5)
    assert torch.allclose(ang[:, 1], pitch.double(), atol=0.5)
    assert np.allclose(np.linalg.norm(est[:, :3, 3], axis=1), 9.0, rtol=0.02)
    stats = pose_stats(lm, canonical, est, k.numpy(), size)
    assert stats["reprojection_rms_px"] < 0.1


def test_smoothing_removes_jitter_but_keeps_motion(astronaut_landmarks: np.ndarray) -> None:
    canonical = build_canonical(astronaut_landmarks[None])
    n = 60
    yaw = 10 * np.sin(np.linspace(0, np.pi, n))
    rng = np.random.default_rng(1)
    noisy = yaw + rng.normal(0, 0.6, n)
    base = torch.eye(4, dtype=torch.float64).expand(n, 4, 4).clone()
    base[:, :3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    base[:, 2, 3] = 9.0
    cams = orbit(base, torch.from_numpy(noisy)).numpy()
    smooth = smooth_poses(cams, 11)
    got = camera_angles(torch.from_numpy(smooth).double())[:, 0].numpy()
    assert np.abs(got - yaw).std() < 0.5 * np.abs(noisy - yaw).std()
    assert np.ptp(got) > 9.0
    del canonical


def test_mouth_opening_and_eye_closure(astronaut_landmarks: np.ndarray) -> None:
    lm = astronaut_landmarks.copy()
    closed_mouth = mouth_opening(lm)[0]
    opened = lm.copy()
    opened[[14, 87, 178, 88, 95, 317, 402, 318, 324], 1] += 20.0  # drop the lower inner lip
    assert mouth_opening(opened)[0] > closed_mouth + 0.2
    # scale invariance
    assert mouth_opening(lm * 2.0)[0] == pytest.approx(closed_mouth, rel=1e-5)
    open_eyes = eye_closure(lm)[0]
    shut = lm.copy()
    for upper, lower in ((159, 145), (158, 153), (160, 144), (386, 374), (385, 380), (387, 373)):
        shut[upper, :2] = shut[lower, :2]
    assert open_eyes < 0.3 and eye_closure(shut)[0] == pytest.approx(1.0)
    assert eye_closure(np.stack([lm, shut])).shape == (2,)
    assert STABLE_LANDMARKS.size > 30 and 13 not in STABLE_LANDMARKS
