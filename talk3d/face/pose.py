"""Head pose from FaceMesh landmarks: canonical shape (generalised Procrustes), per-frame
similarity / perspective fit, temporal smoothing and accuracy figures.

Coordinates: FaceMesh pixel landmarks ``(x, y, z)`` (x right, y down, z away from the
camera) form an OpenCV-like camera frame under weak perspective. The canonical shape lives
in world space (``talk3d.camera``: +x viewer's right, +y up, +z out of the face), centred on
the head centre, scaled so the face mesh is :data:`CANONICAL_WIDTH` wide.
"""

from __future__ import annotations

import numpy as np
import torch

from talk3d.face.landmarks import FACE_OVAL, LEFT_SIDE, NOSE_TIP, RIGHT_SIDE, STABLE_LANDMARKS

CANONICAL_WIDTH = 1.1
"""Width (x extent) of the canonical face mesh in world units; the head then fits [-1, 1]^3."""
HEAD_CENTRE_DEPTH = 0.9
"""Head centre lies this far behind the nose tip (world units, ~0.8 face widths)."""
HEAD_CENTRE_RAISE = 0.08
"""Head centre lies this far above the middle of the mesh's vertical extent (hair, skull)."""
_FLIP = np.diag([1.0, -1.0, -1.0])


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s * R @ src + t`` (Umeyama 1991).

    Args:
        src, dst: ``(K, 3)`` corresponding points.
    Returns:
        scale ``s``, rotation ``R`` ``(3, 3)`` (det +1), translation ``t`` ``(3,)``.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / src.shape[0]
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = u @ np.diag(sign) @ vt
    var_s = (xs ** 2).sum() / src.shape[0]
    scale = float((d * sign).sum() / var_s) if with_scale else 1.0
    return scale, rot, mu_d - scale * rot @ mu_s


def _normalise(shape: np.ndarray, idx: np.ndarray) -> np.ndarray:
    c = shape - shape[idx].mean(0)
    return c / np.sqrt((c[idx] ** 2).sum(1).mean())


def build_canonical(landmarks: np.ndarray, indices: np.ndarray = STABLE_LANDMARKS, iterations: int = 6,
                    max_frames: int = 400) -> np.ndarray:
    """Video-specific canonical landmark shape by iterative generalised Procrustes.

    Frames are aligned to the running mean with similarities estimated on ``indices`` only
    (rigid parts of the face), then the mean of all 478 aligned points is frontalised
    (x from left/right landmark pairs, z = normal of the face outline plane), centred on the
    estimated head centre and scaled to :data:`CANONICAL_WIDTH`.

    Args:
        landmarks: ``(N, 478, 3)`` FaceMesh pixel landmarks of tracked frames.
    Returns:
        ``(478, 3)`` float32 canonical shape in world units.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[0] == 0:
        raise ValueError(f"landmarks must be (N, 478, 3) with N > 0, got {lm.shape}")
    if lm.shape[0] > max_frames:
        lm = lm[np.linspace(0, lm.shape[0] - 1, max_frames).round().astype(int)]
    shapes = np.stack([_normalise(s, indices) for s in lm])
    mean = shapes[0]
    for _ in range(iterations):
        aligned = np.empty_like(shapes)
        for i, s in enumerate(shapes):
            sc, rot, t = umeyama(s[indices], mean[indices])
            aligned[i] = sc * s @ rot.T + t
        new_mean = _normalise(aligned.mean(0), indices)
        converged = np.abs(new_mean - mean).max() < 1e-6
        mean = new_mean
        if converged:
            break
    world = mean @ _FLIP  # (x, -y, -z): y up, z towards the camera
    # frontal frame: x from mirror pairs, z from the face outline plane, y = z x x
    x_axis = (world[LEFT_SIDE] - world[RIGHT_SIDE]).mean(0)
    x_axis /= np.linalg.norm(x_axis)
    oval = world[FACE_OVAL] - world[FACE_OVAL].mean(0)
    z_axis = np.linalg.svd(oval)[2][-1]
    if np.dot(z_axis, world[NOSE_TIP] - world[FACE_OVAL].mean(0)) < 0:
        z_axis = -z_axis
    z_axis -= np.dot(z_axis, x_axis) * x_axis
    z_axis /= np.linalg.norm(z_axis)
    y_axis = np.cross(z_axis, x_axis)
    world = world @ np.stack([x_axis, y_axis, z_axis]).T
    world *= CANONICAL_WIDTH / np.ptp(world[:, 0])
    centre = np.array([
        0.5 * (world[:, 0].min() + world[:, 0].max()),
        0.5 * (world[:, 1].min() + world[:, 1].max()) + HEAD_CENTRE_RAISE,
        world[NOSE_TIP, 2] - HEAD_CENTRE_DEPTH,
    ])
    return (world - centre).astype(np.float32)


def _cam2world(rot_w2c: np.ndarray, t_w2c: np.ndarray) -> np.ndarray:
    c2w = np.eye(4)
    c2w[:3, :3] = rot_w2c.T
    c2w[:3, 3] = -rot_w2c.T @ t_w2c
    return c2w


def estimate_pose(landmarks: np.ndarray, canonical: np.ndarray, intrinsics: np.ndarray, size: int,
                  indices: np.ndarray = STABLE_LANDMARKS, refine: bool = True) -> np.ndarray:
    """Per-frame camera-to-world in canonical space (the head is static, the camera moves).

    A similarity (Umeyama) of the canonical stable landmarks to the frame's 3D landmarks
    gives rotation and scale; the camera distance is ``focal_px / scale`` and the head
    centre sits on the ray through its projected position. With ``refine`` the pose is
    then polished by perspective PnP (Levenberg-Marquardt on the 2D reprojection error).

    Args:
        landmarks: ``(N, 478, 3)`` pixel landmarks at ``size`` (x, y, z).
        canonical: ``(478, 3)`` world-space canonical shape.
        intrinsics: ``(3, 3)`` normalised intrinsics.
        size: image side in pixels.
    Returns:
        ``(N, 4, 4)`` float32 camera-to-world (OpenCV camera axes).
    """
    import cv2

    lm = np.asarray(landmarks)
    if lm.ndim == 2:
        lm = lm[None]
    can = np.asarray(canonical, dtype=np.float64)
    k = np.asarray(intrinsics, dtype=np.float64) * np.array([[size, 1, size], [1, size, size], [1, 1, 1]])
    k[0, 1] = k[1, 0] = k[2, 0] = k[2, 1] = 0.0
    f_px, cx, cy = k[0, 0], k[0, 2], k[1, 2]
    obj = np.ascontiguousarray(can[indices])
    out = np.empty((lm.shape[0], 4, 4), dtype=np.float32)
    for i, frame in enumerate(lm):
        pts = frame[indices].astype(np.float64)  # per frame: memory does not scale with N
        scale, rot, t = umeyama(obj, pts)
        depth = f_px / max(scale, 1e-9)
        centre = np.array([(t[0] - cx) / f_px * depth, (t[1] - cy) / f_px * depth, depth])
        if refine:
            rvec = cv2.Rodrigues(rot)[0]
            ok, rvec, tvec = cv2.solvePnP(obj, np.ascontiguousarray(pts[:, :2]), k, None,
                                          rvec=rvec, tvec=centre.reshape(3, 1).copy(),
                                          useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE)
            if ok and tvec[2, 0] > 0:
                rot, centre = cv2.Rodrigues(rvec)[0], tvec[:, 0]
        out[i] = _cam2world(rot, centre)
    return out


def smooth_poses(cam2world: np.ndarray, window: int = 9, polyorder: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing of head rotation (rotation vectors) and translation.

    Smoothing happens on the head pose in camera coordinates (world-to-camera), relative
    to the median rotation so rotation vectors stay far from their 180 degree wrap.

    Args:
        cam2world: ``(N, 4, 4)``.
        window: odd filter length in frames (clipped to N); ``<= 2`` disables smoothing.
    Returns:
        ``(N, 4, 4)`` float32.
    """
    from scipy.signal import savgol_filter
    from scipy.spatial.transform import Rotation

    c2w = np.asarray(cam2world, dtype=np.float64)
    n = c2w.shape[0]
    window = min(window, n if n % 2 else n - 1)
    if window <= polyorder + 1 or window <= 2:
        return c2w.astype(np.float32)
    w2c = np.linalg.inv(c2w)
    rots = Rotation.from_matrix(w2c[:, :3, :3])
    ref = rots.mean()
    rv = (ref.inv() * rots).as_rotvec()
    rv = savgol_filter(rv, window, polyorder, axis=0, mode="interp")
    trans = savgol_filter(w2c[:, :3, 3], window, polyorder, axis=0, mode="interp")
    out = np.zeros_like(w2c)
    out[:, :3, :3] = (ref * Rotation.from_rotvec(rv)).as_matrix()
    out[:, :3, 3] = trans
    out[:, 3, 3] = 1.0
    return np.linalg.inv(out).astype(np.float32)


def refit_translation(cam2world: np.ndarray, landmarks: np.ndarray, canonical: np.ndarray,
                      intrinsics: np.ndarray, size: int, window: int = 5,
                      indices: np.ndarray = STABLE_LANDMARKS) -> np.ndarray:
    """Keep each frame's (smoothed) rotation and re-solve the head translation to the landmarks.

    Heavy rotation smoothing removes jitter; re-solving the translation (linear least squares
    on the perspective projection equations, then light Savitzky-Golay smoothing over
    ``window`` frames) keeps the posed landmarks on the tracked ones.

    Args:
        cam2world: ``(N, 4, 4)``; landmarks ``(N, 478, 2|3)`` pixels at ``size``;
        canonical ``(478, 3)``; intrinsics ``(3, 3)`` normalised.
    Returns:
        ``(N, 4, 4)`` float32 camera-to-world.
    """
    from scipy.signal import savgol_filter

    w2c = np.linalg.inv(np.asarray(cam2world, dtype=np.float64))
    k = np.asarray(intrinsics, dtype=np.float64)
    f, cx, cy = k[0, 0] * size, k[0, 2] * size, k[1, 2] * size
    pts = np.einsum("nij,kj->nki", w2c[:, :3, :3], np.asarray(canonical, np.float64)[indices])  # (N, K, 3)
    uv = np.asarray(landmarks, np.float64)[:, indices, :2]
    n, kk = uv.shape[:2]
    a = np.zeros((n, 2 * kk, 3))
    b = np.zeros((n, 2 * kk))
    du, dv = uv[..., 0] - cx, uv[..., 1] - cy
    a[:, 0::2, 0] = -f
    a[:, 0::2, 2] = du
    b[:, 0::2] = f * pts[..., 0] - du * pts[..., 2]
    a[:, 1::2, 1] = -f
    a[:, 1::2, 2] = dv
    b[:, 1::2] = f * pts[..., 1] - dv * pts[..., 2]
    ata = np.einsum("nki,nkj->nij", a, a)
    atb = np.einsum("nki,nk->ni", a, b)
    t = np.linalg.solve(ata, atb[..., None])[..., 0]
    win = min(window, n if n % 2 else n - 1)
    if win >= 3:
        t = savgol_filter(t, win, min(2, win - 1), axis=0, mode="interp")
    w2c[:, :3, 3] = t
    return np.linalg.inv(w2c).astype(np.float32)


def reprojection_error(landmarks: np.ndarray, canonical: np.ndarray, cam2world: np.ndarray,
                       intrinsics: np.ndarray, size: int, indices: np.ndarray = STABLE_LANDMARKS,
                       chunk: int = 1024) -> np.ndarray:
    """Per-frame RMS pixel distance between posed canonical landmarks and tracked ones.

    Args:
        landmarks: ``(N, 478, 2|3)`` pixels at ``size``; canonical ``(478, 3)``;
        cam2world ``(N, 4, 4)``; intrinsics ``(3, 3)`` normalised.
    Returns:
        ``(N,)`` float32 RMS error in pixels over ``indices``.
    """
    from talk3d.camera import project

    lm = np.asarray(landmarks)
    c2w_all = np.asarray(cam2world)
    k = torch.as_tensor(np.asarray(intrinsics), dtype=torch.float64)
    obj = torch.as_tensor(np.asarray(canonical)[indices], dtype=torch.float64)
    out = np.empty(c2w_all.shape[0], np.float32)
    for a in range(0, c2w_all.shape[0], chunk):  # chunks keep memory flat for long videos
        c2w = torch.as_tensor(c2w_all[a:a + chunk], dtype=torch.float64)
        uv, _ = project(obj.expand(c2w.shape[0], -1, -1), c2w, k, size)
        err = uv.numpy() - lm[a:a + chunk][:, indices, :2].astype(np.float64)
        out[a:a + chunk] = np.sqrt((err ** 2).sum(-1).mean(-1))
    return out


def rotation_steps(cam2world: np.ndarray) -> np.ndarray:
    """Angle (degrees) between consecutive camera rotations: ``(N-1,)``."""
    r = np.asarray(cam2world, dtype=np.float64)[:, :3, :3]
    rel = np.einsum("nji,njk->nik", r[:-1], r[1:])
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cos)).astype(np.float32)


def pose_stats(landmarks: np.ndarray, canonical: np.ndarray, cam2world: np.ndarray, intrinsics: np.ndarray,
               size: int) -> dict[str, float]:
    """Accuracy and jitter figures for the manifest.

    Returns:
        ``reprojection_rms_px`` (stable landmarks, RMS over all frames),
        ``reprojection_rms_px_all`` (all 478, includes expression), ``reprojection_p95_px``,
        ``rotation_step_median_deg`` and ``rotation_step_p95_deg`` (frame-to-frame change).
    """
    err = reprojection_error(landmarks, canonical, cam2world, intrinsics, size)
    err_all = reprojection_error(landmarks, canonical, cam2world, intrinsics, size, np.arange(canonical.shape[0]))
    steps = rotation_steps(cam2world) if len(cam2world) > 1 else np.zeros(1, np.float32)
    return {
        "reprojection_rms_px": float(np.sqrt((err ** 2).mean())),
        "reprojection_p95_px": float(np.percentile(err, 95)),
        "reprojection_rms_px_all": float(np.sqrt((err_all ** 2).mean())),
        "rotation_step_median_deg": float(np.median(steps)),
        "rotation_step_p95_deg": float(np.percentile(steps, 95)),
    }


def angle_errors(est_cam2world: np.ndarray, true_cam2world: np.ndarray) -> np.ndarray:
    """``|yaw, pitch, roll|`` errors ``(N, 3)`` in degrees after the best constant world rotation.

    A canonical frame is video-specific (aligned to the mean face), so the constant rotation W
    between two frames (best fit of ``R_est ~ W R_true``, SVD) is removed before comparing.

    Args:
        est_cam2world, true_cam2world: ``(N, 4, 4)``.
    """
    from talk3d.camera import camera_angles

    r_est = np.asarray(est_cam2world, np.float64)[:, :3, :3]
    r_true = np.asarray(true_cam2world, np.float64)[:, :3, :3]
    u, _, vt = np.linalg.svd(np.einsum("nij,nkj->ik", r_est, r_true))
    w = u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt
    aligned = np.eye(4)[None].repeat(len(r_true), 0)
    aligned[:, :3, :3] = w @ r_true
    ref = camera_angles(torch.from_numpy(aligned)).numpy()
    est = camera_angles(torch.from_numpy(np.asarray(est_cam2world, np.float64))).numpy()
    return np.abs(est - ref).astype(np.float64)
