"""Training losses of the avatar (consumed by ``talk3d.fit``).

Photometric L1 + SSIM at neural and output resolution with a mouth-region weight, alpha
vs the person mask (image torso mode: the volume vs the head mask, the torso layer vs the torso mask), the face prior (depth,
opacity and thinness along rays through random points of the canonical face surface), a left-right symmetry prior on the identity triplane and deltaplane
magnitude / smoothness regularisers. No pretrained network is involved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import kornia
import torch
import torch.nn.functional as F

from talk3d.image import psnr, resize
from talk3d.model.avatar import Avatar
from talk3d.model.face_surface import sample_face
from talk3d.model.noise import FrameNoise

FACE_POINTS = ("landmarks", "surface")


@dataclass
class LossWeights:
    """Weights of the loss terms (0 disables a term and skips its computation)."""

    l1: float = 1.0
    """L1 on the output-resolution image."""
    ssim: float = 0.2
    """1 - SSIM on the output-resolution image."""
    l1_neural: float = 0.5
    """L1 on the neural-resolution image (vs the area-downsampled target)."""
    ssim_neural: float = 0.1
    """1 - SSIM on the neural-resolution image."""
    mouth: float = 2.0
    """Extra L1 weight inside ``batch["mouth_box"]`` (the pixel weight there is ``1 + mouth``)."""
    alpha: float = 0.3
    """Binary cross-entropy of alpha (neural and output resolution) vs person mask (label > 0); in image
    torso mode of the volume's alpha vs the head (label 2) and the torso layer's vs the torso (label 1)."""
    face_depth: float = 0.05
    """L1 of the rendered ray distance vs the true distance at ``face_rays`` points per frame of the
    canonical face (:attr:`face_points`)."""
    face_alpha: float = 0.05
    """``1 - alpha`` of the rays through those points (the face is opaque)."""
    face_spread: float = 0.05
    """Weight distortion of those rays (:func:`talk3d.model.renderer.distortion`, world units): the
    face made a thin surface instead of a fog of its own texture. With ``face_points=surface`` and
    ``face_rays=256`` (the defaults since session 15): Obama's +-30 views sharp and recognisable (dlib
    identity distance 0.39 / 0.39 instead of 0.53 / 0.49) for 0.24 dB on his frontal held-out frames;
    Fei-Fei Li's frames 4-15 degrees beyond her training range closer to the real ones (identity
    distance to the frame 0.24 instead of 0.35, face landmarks 6.5 instead of 8.3 px off) for 0.3 dB of
    head PSNR (docs/model.md, sessions 14-15). 0: the face a fog that frontal views sum back sharp."""
    face_rays: int = 256
    """Face points (rays) per frame."""
    face_points: str = "surface"
    """Where the face prior's rays go: ``surface`` (random points of the landmarks' frontal
    triangulation, :mod:`talk3d.model.face_surface`) or ``landmarks`` (random canonical landmarks: the
    landmark prior of runs saved before session 15, with 64 rays and no spread term)."""
    symmetry: float = 0.01
    """L1 between the identity triplane and its mirror image in x."""
    delta_l2: float = 0.01
    """Mean squared deltaplane (keeps motion small so it cannot absorb geometry)."""
    delta_tv: float = 0.01
    """Total variation of the deltaplane (keeps motion smooth)."""
    ssim_window: int = 11
    """SSIM window size (output resolution; the neural one uses ``min(window, 7)``)."""

    def __post_init__(self) -> None:
        if self.face_points not in FACE_POINTS:
            raise ValueError(f"loss.face_points must be one of {', '.join(FACE_POINTS)}, got {self.face_points!r}")

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def mouth_weight_map(mouth_box: torch.Tensor, size: int, weight: float) -> torch.Tensor:
    """Pixel weights ``(B, 1, size, size)``: ``1 + weight`` inside each box, 1 elsewhere.

    Args:
        mouth_box: ``(B, 4)`` x0, y0, x1, y1 (exclusive end) in pixels at ``size``.
    """
    ar = torch.arange(size, device=mouth_box.device)
    x0, y0, x1, y1 = (mouth_box[:, i, None] for i in range(4))
    inx = (ar[None] >= x0) & (ar[None] < x1)  # (B, W)
    iny = (ar[None] >= y0) & (ar[None] < y1)  # (B, H)
    inside = (iny[:, :, None] & inx[:, None, :]).float()
    return (1.0 + weight * inside)[:, None]


def _bce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy(pred.clamp(1e-5, 1 - 1e-5), target)


def alpha_loss(outputs: dict[str, torch.Tensor], mask: torch.Tensor, neural: int) -> torch.Tensor:
    """Silhouette BCE, mean of the terms at neural and output resolution.

    Volume torso mode: ``alpha``/``alpha_hr`` vs the person (mask > 0). Image torso mode
    (outputs carry ``alpha_head``): the volume's ``alpha_head``/``alpha_head_hr`` vs the head
    (mask == 2) and ``torso_alpha`` vs the torso (mask == 1) on the pixels the head does not
    cover (the torso behind the head is unobserved).

    Args:
        mask: ``(B, 1, H, W)`` labels 0 background / 1 torso / 2 head.
        neural: neural resolution.
    """
    if "alpha_head" in outputs:
        head = (mask == 2).to(outputs["alpha_head"].dtype)
        terms = [_bce(outputs["alpha_head"], resize(head, neural))]
        if "alpha_head_hr" in outputs:
            terms.append(_bce(outputs["alpha_head_hr"], resize(head, outputs["alpha_head_hr"].shape[-1])))
        t_a = outputs["torso_alpha"]
        size = t_a.shape[-1]
        torso, seen = resize((mask == 1).to(t_a.dtype), size), resize((mask != 2).to(t_a.dtype), size)
        bce = F.binary_cross_entropy(t_a.clamp(1e-5, 1 - 1e-5), torso, reduction="none")
        terms.append((bce * seen).sum() / seen.sum().clamp_min(1.0))
        return sum(terms) / len(terms)
    person = (mask > 0).to(outputs["alpha"].dtype)
    terms = [_bce(outputs["alpha"], resize(person, neural))]
    a_hr = outputs.get("alpha_hr")
    if a_hr is not None:
        terms.append(_bce(a_hr, resize(person, a_hr.shape[-1])))
    return sum(terms) / len(terms)


def symmetry_loss(planes: torch.Tensor) -> torch.Tensor:
    """L1 between planes ``(3, C, R, R)`` and their x-mirror (planes 0 and 1 index x by width).

    Assumes the scene box is symmetric in x (the default), so mirroring x is a width flip.
    """
    return sum((p - p.flip(-1)).abs().mean() for p in (planes[0], planes[1])) / 2.0


def tv_loss(dp: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring texels of ``(..., R, R)``."""
    return (dp[..., 1:, :] - dp[..., :-1, :]).abs().mean() + (dp[..., :, 1:] - dp[..., :, :-1]).abs().mean()


def _weighted_l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean over frames of each frame's weighted L1 normalised by its mean weight: every frame
    counts the same, however the frames are grouped into batches (or ranks)."""
    dims = tuple(range(1, pred.dim()))
    per_frame = ((pred - target).abs() * weight).mean(dims) / weight.mean(dims)
    return per_frame.mean()


def face_prior(avatar: Avatar, planes: torch.Tensor, cam2world: torch.Tensor, count: int,
               noise: FrameNoise | None = None, points: str = "landmarks",
               spread: bool = False) -> dict[str, torch.Tensor]:
    """Render rays through random points of the canonical face (landmarks, or anywhere on their
    triangulated surface); compare depth and alpha, and optionally the rays' spread.

    Args:
        planes: ``(3, C, R, R)`` or ``(B, 3, C, R, R)`` the frames' planes.
        cam2world: ``(B, 4, 4)``.
        count: face points per frame.
        noise: per-frame randomness (point choice and ray jitter per frame); ``None``: torch's generator.
        points: ``surface`` or ``landmarks`` (see :attr:`LossWeights.face_points`).
        spread: also the rays' weight distortion.
    Returns:
        ``face_depth`` (mean L1 of expected ray distance vs true distance, world units),
        ``face_alpha`` (mean ``1 - alpha``) and, with ``spread``, ``face_spread`` (mean weight distortion).
    """
    b = cam2world.shape[0]
    lm = avatar.canonical_landmarks.to(cam2world)
    if points == "landmarks":
        pts = _random_landmarks(avatar.canonical_landmarks, b, count, noise).to(cam2world)
    else:
        uniforms = noise.rand(count, 3).to(cam2world) if noise is not None else torch.rand(b, count, 3).to(cam2world)
        pts = sample_face(lm, uniforms)  # (B, n, 3)
    origins = cam2world[:, None, :3, 3].expand_as(pts)
    vec = pts - origins
    dist = vec.norm(dim=-1)
    dirs = vec / dist[..., None].clamp_min(1e-6)
    res = avatar.render_rays(planes, origins, dirs, jitter=noise if noise is not None and avatar.training else None,
                             with_distortion=spread)
    alpha = res["alpha"]
    depth = res["depth_raw"] / alpha.clamp_min(1e-3)
    out = {"face_depth": (depth - dist).abs().mean(), "face_alpha": (1.0 - alpha).mean()}
    if spread:
        out["face_spread"] = res["distortion"].mean()
    return out


def _random_landmarks(landmarks: torch.Tensor, b: int, count: int, noise: FrameNoise | None) -> torch.Tensor:
    """``(B, count, 3)`` random canonical landmarks: per frame with ``noise``, else one choice for the batch."""
    if noise is not None:
        return landmarks[noise.randperm(landmarks.shape[0])[:, :count].to(landmarks.device)]
    idx = torch.randperm(landmarks.shape[0], device=landmarks.device)[:count]
    return landmarks[idx][None].expand(b, -1, -1)


def _frame_planes(outputs: dict[str, torch.Tensor], avatar: Avatar) -> torch.Tensor:
    """The batch's planes: the identity triplane ``(3, C, R, R)``, plus the frames' deltaplanes
    ``(B, 3, C, R, R)`` when the audio stage has them."""
    dp = outputs.get("deltaplane")
    planes = avatar.identity_planes()
    if dp is not None and bool(dp.detach().abs().amax() > 0):
        planes = planes[None] + dp
    return planes


def compute_losses(outputs: dict[str, torch.Tensor], batch: dict, avatar: Avatar,
                   weights: LossWeights) -> dict[str, torch.Tensor]:
    """All loss terms and their weighted sum.

    Args:
        outputs: :meth:`Avatar.forward` outputs for the batch (``rgb`` at the batch's image size).
        batch: training batch (docs/architecture.md "Training batch").
        avatar: the model (for the face prior and the identity triplane).
        weights: :class:`LossWeights`.
    Returns:
        dict of scalar tensors: ``total`` (the weighted sum) plus each computed term (unweighted),
        and, logged only (not in ``total``): ``psnr`` (of the batch's mean squared error, output
        resolution) and ``mouth_code`` (MSE of the predicted lip code, when the batch has tracked codes).
    """
    w = weights
    image = batch["image"].to(outputs["rgb"])
    size, neural = image.shape[-1], outputs["rgb_lr"].shape[-1]
    image_neural = resize(image, neural)
    out: dict[str, torch.Tensor] = {}
    pix_w = (mouth_weight_map(batch["mouth_box"].to(image.device), size, w.mouth)
             if "mouth_box" in batch and w.mouth > 0 else torch.ones_like(image[:, :1]))
    rgb, rgb_neural = outputs["rgb"], outputs["rgb_lr"]
    out["l1"] = _weighted_l1(rgb, image, pix_w)
    out["l1_neural"] = _weighted_l1(rgb_neural, image_neural, resize(pix_w, neural))
    if w.ssim > 0:
        out["ssim"] = kornia.losses.ssim_loss(rgb, image, w.ssim_window) * 2.0
    if w.ssim_neural > 0:
        out["ssim_neural"] = kornia.losses.ssim_loss(rgb_neural, image_neural, min(w.ssim_window, 7)) * 2.0
    if w.alpha > 0 and "mask" in batch:
        out["alpha"] = alpha_loss(outputs, batch["mask"].to(image.device), neural)
    if (w.face_depth > 0 or w.face_alpha > 0 or w.face_spread > 0) and bool(avatar.canonical_landmarks.abs().sum() > 0):
        out.update(face_prior(avatar, _frame_planes(outputs, avatar), batch["cam2world"].to(image), w.face_rays,
                              batch.get("noise"), w.face_points, spread=w.face_spread > 0))
    if w.symmetry > 0:
        out["symmetry"] = symmetry_loss(avatar.identity_planes())
    dp = outputs.get("deltaplane")
    if dp is not None and (w.delta_l2 > 0 or w.delta_tv > 0):
        out["delta_l2"] = dp.pow(2).mean()
        out["delta_tv"] = tv_loss(dp)
    total = image.new_zeros(())
    for name, value in out.items():
        total = total + getattr(w, name) * value
    out["total"] = total
    if "mouth_code" in outputs and "mouth_code" in batch:  # logged only: the lip pretraining trains the code
        out["mouth_code"] = (outputs["mouth_code"] - batch["mouth_code"].to(image)).detach().pow(2).mean()
    out["psnr"] = psnr(rgb.detach().flatten(0, 1)[None], image.flatten(0, 1)[None])[0]  # of the batch's MSE
    return out
