"""Photometric pose refinement on frames of the synthetic head rendered at known poses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talk3d.camera import intrinsics_matrix
from talk3d.face.photometric import PhotometricConfig, refine_poses_photometric, rigid_surface
from talk3d.face.pose import angle_errors
from talk3d.synthetic.mesh import build_head
from talk3d.synthetic.scene import FrameState, background_plate, main_cam2world, render_state

SIZE = 128
FOCAL = 1.8
ANGLES = torch.tensor([[-14.0, -7.0, 2.0], [-7.0, 6.0, -3.0], [0.0, -3.0, 0.0], [6.0, 8.0, 3.0],
                       [12.0, -6.0, -2.0], [15.0, 4.0, 1.0], [-3.0, 0.0, 4.0], [8.0, -8.0, -4.0]])


@pytest.fixture(scope="module")
def scene():
    """Frames of the synthetic head (mouth and eyes moving) at known cameras."""
    head = build_head(0)
    c2w = main_cam2world(ANGLES, 6.5)
    k = intrinsics_matrix(FOCAL)
    plate = background_plate(SIZE, 0)
    frames = np.stack([
        render_state(head, FrameState(tuple(a.tolist()), mouth=0.4 * (i % 3) / 2, blink=float(i == 5)), c2w[i], k,
                     SIZE, plate, supersample=2).rgb
        for i, a in enumerate(ANGLES)])
    return {"frames": frames, "c2w": c2w.numpy(), "k": k.numpy(), "canonical": head.verts[:478].numpy()}


def _perturb(c2w: np.ndarray, degrees: float, seed: int = 0) -> np.ndarray:
    """Rotate each head pose about the head centre by ``degrees`` around a random axis."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(len(c2w), 3))
    rot = Rotation.from_rotvec(np.radians(degrees) * axes / np.linalg.norm(axes, axis=1, keepdims=True)).as_matrix()
    w2c = np.linalg.inv(c2w.astype(np.float64))
    w2c[:, :3, :3] = w2c[:, :3, :3] @ rot  # rotate the head in its own frame: the centre stays put
    return np.linalg.inv(w2c).astype(np.float32)


CFG = PhotometricConfig(points=2500, work_size=SIZE, sigmas=(1.5, 0.75), iterations=6, reference_frames=8,
                        rounds=2, batch=8)


def test_rigid_surface_covers_only_the_rigid_upper_face(scene):
    can = scene["canonical"]
    surf = rigid_surface(can, 3000, seed=1)
    assert abs(surf.points.shape[0] - 3000) < 300
    assert torch.allclose(surf.normals.norm(dim=1), torch.ones(len(surf.normals)), atol=1e-5)
    assert (surf.normals[:, 2] > 0).float().mean() > 0.95  # the face looks towards +z
    # nothing below the nose base (lips, jaw), nothing near the eye centres (eyelids move)
    assert surf.points[:, 1].min() >= float(can[2, 1]) - 1e-6
    for iris in (468, 473):
        assert (surf.points - torch.from_numpy(can[iris])).norm(dim=1).min() > 0.04


def test_refinement_undoes_a_3_degree_pose_error(scene):
    init = _perturb(scene["c2w"], 3.0)
    before = angle_errors(init, scene["c2w"])
    assert before.max() > 1.5  # the perturbation survives the gauge removal

    calls = []
    out, stats = refine_poses_photometric(lambda idx: scene["frames"][list(idx)], len(init), init,
                                          scene["canonical"], scene["k"], CFG,
                                          progress=lambda done, total: calls.append((done, total)))
    after = angle_errors(out, scene["c2w"])
    assert after.max() < 0.8, f"errors after refinement {after.round(2).tolist()}"
    assert stats["photometric_rms_after"] < 0.7 * stats["photometric_rms_before"], stats
    assert stats["photometric_frames_kept_landmark_pose"] == 0
    # the head centre stays where the truth puts it (translation solved with the rotation)
    dist_true = np.linalg.norm(scene["c2w"][:, :3, 3], axis=1)
    assert np.abs(np.linalg.norm(out[:, :3, 3], axis=1) - dist_true).max() < 0.05 * dist_true.mean()
    assert calls and calls[-1][0] == calls[-1][1]


def test_frames_whose_rotation_would_move_too_far_keep_their_pose(scene):
    init = _perturb(scene["c2w"], 3.0)
    cfg = PhotometricConfig(**{**CFG.__dict__, "max_change_deg": 0.05})
    out, stats = refine_poses_photometric(lambda idx: scene["frames"][list(idx)], len(init), init,
                                          scene["canonical"], scene["k"], cfg)
    assert stats["photometric_frames_kept_landmark_pose"] == len(init)
    np.testing.assert_allclose(out, init, atol=1e-4)
