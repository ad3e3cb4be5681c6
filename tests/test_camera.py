import pytest
import torch

from talk3d.camera import (
    angles_from_rotation,
    camera_angles,
    frontal_cam2world,
    generate_rays,
    intrinsics_matrix,
    orbit,
    project,
    rotation_from_angles,
)


def test_angles_round_trip():
    angles = torch.tensor([[20.0, -7.0, 13.0], [-45.0, 30.0, -5.0], [0.0, 0.0, 0.0]])
    rot = rotation_from_angles(angles[:, 0], angles[:, 1], angles[:, 2])
    torch.testing.assert_close(angles_from_rotation(rot), angles, atol=1e-4, rtol=0)


def test_orbit_moves_camera_right_and_up():
    cam = orbit(frontal_cam2world(3.0, batch=1), yaw=30.0, pitch=10.0)
    torch.testing.assert_close(camera_angles(cam)[0], torch.tensor([30.0, 10.0, 0.0]), atol=1e-4, rtol=0)
    assert cam[0, 0, 3] > 0  # towards +x
    assert cam[0, 1, 3] > 0  # above
    torch.testing.assert_close(cam[0, :3, 3].norm(), torch.tensor(3.0))


def test_rays_project_back_to_their_pixels():
    cam = orbit(frontal_cam2world(2.5, batch=2), yaw=torch.tensor([15.0, -20.0]), pitch=5.0)
    k = intrinsics_matrix(1.8)
    origins, dirs = generate_rays(cam, k, 6, 6)
    pix, depth = project(origins + 2.0 * dirs, cam, k, 6)
    ys, xs = torch.meshgrid(torch.arange(6) + 0.5, torch.arange(6) + 0.5, indexing="ij")
    expected = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).expand(2, -1, -1)
    torch.testing.assert_close(pix, expected, atol=1e-4, rtol=0)
    assert (depth > 0).all()


def test_35mm_focal_conversion():
    from talk3d.camera import focal_35mm_from_pixels, focal_pixels_from_35mm

    # a 36 x 24 mm frame photographed at 50 mm: 50 mm over the 36 mm width = 1.389 widths
    assert focal_pixels_from_35mm(50.0, 3600, 2400) == pytest.approx(5000.0, rel=2e-3)
    assert focal_35mm_from_pixels(focal_pixels_from_35mm(26.0, 1920, 1080), 1920, 1080) == pytest.approx(26.0)
    # portrait and landscape give the same focal (the diagonal does not rotate)
    assert focal_pixels_from_35mm(26.0, 1080, 1920) == pytest.approx(focal_pixels_from_35mm(26.0, 1920, 1080))
