"""Camera/blink tracks for rendering: ping-pong, mean pose, orbit schedule, angle checks, option parsing."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from talk3d.camera import camera_angles, frontal_cam2world, orbit
from talk3d.errors import UserError
from talk3d.render.audio_drive import frame_count
from talk3d.render.config import MM_PER_UNIT, parse_frame_list, parse_ipd
from talk3d.render.paths import (
    blink_track,
    check_angles,
    head_motion,
    mean_pose,
    ping_pong_indices,
    stereo_pair,
    view_cameras,
    yaw_schedule,
)


def test_ping_pong_never_jumps_and_covers_all():
    idx = ping_pong_indices(40, 7)
    assert idx.min() == 0 and idx.max() == 6
    assert np.abs(np.diff(idx)).max() == 1
    assert list(idx[:14]) == [0, 1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0, 1]
    assert np.all(ping_pong_indices(5, 1) == 0)


def test_mean_pose_of_symmetric_yaws_is_frontal():
    poses = orbit(frontal_cam2world(4.0, 3), torch.tensor([-10.0, 0.0, 10.0]), 0.0)
    m = mean_pose(poses)
    assert torch.allclose(m, frontal_cam2world(4.0), atol=1e-5)
    assert torch.allclose(m[:3, :3] @ m[:3, :3].T, torch.eye(3), atol=1e-5)


def test_head_motion_modes():
    poses = orbit(frontal_cam2world(4.0, 5), torch.linspace(-8, 8, 5), 0.0)
    cams, idx = head_motion(poses, 12, "tracked")
    assert cams.shape == (12, 4, 4) and torch.equal(cams[9], poses[idx[9]])
    fixed, _ = head_motion(poses, 3, "fixed")
    assert torch.allclose(fixed[0], fixed[2])
    with pytest.raises(UserError, match="--pose"):
        head_motion(poses, 3, "random")


def test_blink_track():
    b = np.array([0.0, 0.5, 1.0], np.float32)
    assert np.allclose(blink_track(b, 6, "auto"), [0, 0.5, 1, 0.5, 0, 0.5])
    assert np.all(blink_track(b, 6, "off") == 0)


def test_yaw_schedule_and_views():
    y = yaw_schedule(100, 25.0, 5.0, True, 30.0, 0.0)
    assert y[0] == pytest.approx(5.0) and y.max() == pytest.approx(35.0, abs=0.1)
    assert y.min() == pytest.approx(-25.0, abs=0.1)
    assert np.all(yaw_schedule(10, 25.0, 15.0, False, 30.0, 0.0) == 15.0)
    cams = view_cameras(frontal_cam2world(4.0, 2), np.array([30.0, -30.0]), 10.0)
    ang = camera_angles(cams)
    assert torch.allclose(ang[:, 0], torch.tensor([30.0, -30.0]), atol=1e-4)
    assert torch.allclose(ang[:, 1], torch.tensor([10.0, 10.0]), atol=1e-4)
    assert torch.allclose(cams[:, :3, 3].norm(dim=-1), torch.tensor(4.0))


def test_check_angles_refuses_and_warns(caplog):
    tracked = orbit(frontal_cam2world(4.0, 4), torch.tensor([-5.0, 0.0, 3.0, 5.0]), 0.0)
    with pytest.raises(UserError, match="90"):
        check_angles(np.array([0.0, 95.0]), 0.0, tracked)
    with pytest.raises(UserError, match="90"):
        check_angles(np.array([0.0]), -100.0, tracked)
    with caplog.at_level(logging.WARNING, logger="talk3d"):
        check_angles(np.array([0.0]), 0.0, tracked)
        assert not caplog.records
        check_angles(np.array([30.0]), 0.0, tracked)
    assert any("yaw reaches" in r.message for r in caplog.records)


def test_stereo_pair_baseline():
    c = frontal_cam2world(4.0, 1)
    left, right = stereo_pair(c, 0.8)
    assert torch.allclose((right[:, :3, 3] - left[:, :3, 3]).norm(dim=-1), torch.tensor(0.8))
    assert float(left[0, 0, 3]) < float(right[0, 0, 3])  # left eye at smaller world x (camera x = world x)
    assert torch.equal(left[:, :3, :3], c[:, :3, :3])


def test_parse_options_and_frame_count():
    assert parse_ipd("0.5") == 0.5
    assert parse_ipd("63mm") == pytest.approx(63 / MM_PER_UNIT)
    for bad in ("abc", "-1", "0"):
        with pytest.raises(UserError, match="--ipd"):
            parse_ipd(bad)
    assert parse_frame_list("10, 0,10,3") == [0, 3, 10]
    with pytest.raises(UserError, match="--mpi-frames"):
        parse_frame_list("a,b")
    assert frame_count(8.0, 25.0) == 200 and frame_count(1.01, 25.0) == 25 and frame_count(0.01, 25.0) == 1
