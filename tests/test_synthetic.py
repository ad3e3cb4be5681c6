"""Synthetic ground-truth head: rasteriser, motion tracks, clip files, extra views, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talk3d.camera import camera_angles, intrinsics_matrix
from talk3d.errors import UserError
from talk3d.face.landmarks import tessellation_triangles
from talk3d.media import AUDIO_RATE, read_audio
from talk3d.synthetic import SyntheticConfig, ground_truth, load_clip, make_clip, rasterize
from talk3d.synthetic.mesh import build_head
from talk3d.synthetic.raster import interpolate
from talk3d.synthetic.scene import FrameState, main_cam2world, render_state

K = intrinsics_matrix(1.0)


def _cam_point(px: float, py: float, z: float, size: int) -> list[float]:
    """Camera-space point at depth z that projects to pixel coords (px, py) with K (focal 1)."""
    return [(px / size - 0.5) * z, (py / size - 0.5) * z, z]


def test_single_triangle_coverage_and_depth():
    size = 64
    pts = torch.tensor([_cam_point(8, 8, 2.0, size), _cam_point(40, 8, 2.0, size), _cam_point(8, 40, 2.0, size)])
    frags = rasterize(pts, torch.tensor([[0, 1, 2]]), K, size)
    hit = frags.hit.numpy()
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    expected = (xs >= 8) & (ys >= 8) & (xs + ys <= 48)
    assert (hit == expected).mean() > 0.99  # only pixels on the hypotenuse may differ
    assert hit.sum() == pytest.approx(32 * 32 / 2, rel=0.1)
    assert hit[10, 10] and not hit[30, 30] and not hit[5, 20]
    assert torch.allclose(frags.depth[frags.hit], torch.tensor(2.0), atol=1e-4)
    assert torch.allclose(frags.bary[frags.hit].sum(-1), torch.tensor(1.0), atol=1e-5)


@pytest.mark.parametrize("near_first", [True, False])
def test_depth_ordering(near_first: bool):
    size = 32
    near = [_cam_point(2, 2, 2.0, size), _cam_point(30, 2, 2.0, size), _cam_point(2, 30, 2.0, size)]
    far = [_cam_point(2, 2, 3.0, size), _cam_point(30, 2, 3.0, size), _cam_point(30, 30, 3.0, size)]
    pts = torch.tensor(near + far if near_first else far + near)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    frags = rasterize(pts, faces, K, size)
    near_id = 0 if near_first else 1
    assert frags.face[8, 8].item() == near_id  # both cover it: the near one wins
    assert frags.depth[8, 8].item() == pytest.approx(2.0, abs=1e-4)
    assert frags.face[20, 28].item() == 1 - near_id  # only the far one covers it (row y, column x)
    assert frags.depth[20, 28].item() == pytest.approx(3.0, abs=1e-4)
    assert frags.face[30, 5].item() == -1


def test_perspective_correct_interpolation():
    # a plane tilted in depth: interpolating camera z with the weights must give the depth
    size = 32
    pts = torch.tensor([_cam_point(0, 0, 1.0, size), _cam_point(64, 0, 4.0, size), _cam_point(0, 64, 1.0, size)])
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize(pts, faces, K, size)
    z = interpolate(frags, faces, pts[:, 2:3])[..., 0]
    assert frags.hit.sum() > 100
    assert torch.allclose(z[frags.hit], frags.depth[frags.hit], rtol=1e-4)
    assert frags.depth[10, 20] > frags.depth[10, 5]  # farther towards +x


def test_face_mesh_topology():
    tris = tessellation_triangles()
    assert tris.shape == (852, 3)  # Euler: a disk with 3 holes, 468 vertices, 1322 edges
    assert tris.min() == 0 and tris.max() == 467


def test_mouth_follows_audio_loudness():
    cfg = SyntheticConfig(seconds=6.0, size=32, extra_yaws=())
    truth = ground_truth(cfg)
    hop = AUDIO_RATE / cfg.fps
    rms = np.array([np.sqrt(np.mean(truth.audio[int(i * hop - hop / 2) if i else 0:int(i * hop + hop / 2)] ** 2))
                    for i in range(cfg.num_frames)])
    assert np.corrcoef(truth.mouth, rms)[0, 1] > 0.8
    assert truth.mouth.min() >= 0.0 and truth.mouth.max() <= 1.0
    assert (truth.mouth < 0.02).mean() > 0.1  # pauses close the mouth
    assert truth.blink.max() > 0.9


def test_mouth_and_blink_move_the_landmarks():
    head = build_head(0)
    cam = main_cam2world(torch.zeros(1, 3), 6.5)[0]
    k = intrinsics_matrix(1.8)
    bg = torch.zeros(3, 96, 96)

    def render(mouth: float, blink: float):
        return render_state(head, FrameState((0.0, 0.0, 0.0), mouth, blink), cam, k, 96, bg, supersample=1)

    rest, open_, closed = render(0.0, 0.0), render(1.0, 0.0), render(0.0, 1.0)
    lip_gap = [r.landmarks[14, 1] - r.landmarks[13, 1] for r in (rest, open_)]
    assert lip_gap[1] > lip_gap[0] + 3.0  # pixels at 96
    eye_gap = [r.landmarks[145, 1] - r.landmarks[159, 1] for r in (rest, closed)]
    assert eye_gap[1] < 0.3 * eye_gap[0]
    assert np.abs(open_.rgb.astype(int) - rest.rgb.astype(int)).sum() > 0
    # masks: head in the middle, torso at the bottom, background in the corner
    assert rest.mask[40, 48] == 2 and rest.mask[94, 48] == 1 and rest.mask[2, 2] == 0


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    cfg = SyntheticConfig(seconds=0.8, fps=10.0, size=48, seed=3, yaw_amplitude=20.0, pitch_amplitude=6.0,
                          roll_amplitude=3.0, extra_yaws=(30.0,), view_stride=2, supersample=1)
    return make_clip(tmp_path_factory.mktemp("syn") / "clip", cfg)


def test_clip_files_and_poses_match_config(tiny_clip):
    clip = tiny_clip
    n = clip.num_frames
    assert n == 8
    for name in ("video.mp4", "audio.wav", "poses.npy", "angles.npy", "mouth.npy", "blink.npy", "landmarks.npy"):
        assert (clip.path / name).is_file()
    poses, angles = clip.poses(), clip.angles()
    assert poses.shape == (n, 4, 4) and angles.shape == (n, 3)
    got = camera_angles(torch.from_numpy(poses)).numpy()
    np.testing.assert_allclose(got, angles, atol=1e-3)
    amp = np.abs(angles).max(0)
    assert amp[0] <= 20.0 + 1e-3 and amp[1] <= 6.0 + 1e-3 and amp[2] <= 3.0 + 1e-3
    # every camera sits at the configured distance, looking at the head centre
    np.testing.assert_allclose(np.linalg.norm(poses[:, :3, 3], axis=1), clip.config.distance, rtol=1e-5)
    audio = read_audio(clip.audio)
    assert abs(audio.size / AUDIO_RATE - 0.8) < 0.01
    assert clip.landmarks().shape == (n, 478, 2)
    assert len(list((clip.path / "masks").glob("*.png"))) == n


def test_extra_view_is_orbited_by_requested_yaw(tiny_clip):
    import cv2

    clip = tiny_clip
    vdir = clip.view_dir(30.0)
    frames = np.load(vdir / "frames.npy")
    np.testing.assert_array_equal(frames, [0, 2, 4, 6])
    main = camera_angles(torch.from_numpy(clip.poses()[frames])).numpy()
    extra = camera_angles(torch.from_numpy(np.load(vdir / "poses.npy"))).numpy()
    np.testing.assert_allclose(extra[:, 0] - main[:, 0], 30.0, atol=1e-3)
    np.testing.assert_allclose(extra[:, 1:], main[:, 1:], atol=1e-3)
    scene = clip.scene()
    png = cv2.imread(str(clip.view_frame(30.0, 2)))[..., ::-1]
    np.testing.assert_array_equal(png, scene.render(2, yaw=30.0).rgb)  # same instant, same renderer
    diff = np.abs(png.astype(int) - scene.render(2).rgb.astype(int)).mean()
    assert diff > 5.0  # the extra view really sees the head from elsewhere


def test_cache_reuse_and_refusal(tiny_clip, tmp_path):
    clip = tiny_clip
    stamp = clip.video.stat().st_mtime_ns
    again = make_clip(clip.path, clip.config)
    assert again.video.stat().st_mtime_ns == stamp  # reused, not regenerated
    assert load_clip(clip.path).config == clip.config
    other = SyntheticConfig(**{**clip.config.to_json(), "extra_yaws": (30.0,), "seed": 4})
    with pytest.raises(UserError, match="other settings"):
        make_clip(clip.path, other)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="other files"):
        make_clip(busy, clip.config)
