"""The avatar: identity triplane + deltaplane U-Net + volume renderer + super-resolution.

``P_t = P_id + motion_scale * dP_t``; the neural image is composited over the background
plate at neural resolution (``rgb_lr``) and the super-resolved one at output resolution
(``rgb``). With ``cfg.torso_mode == "image"`` an image-space torso layer
(:mod:`talk3d.model.torso`) sits between the volume-rendered head and the plate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from talk3d.camera import generate_rays
from talk3d.image import resize
from talk3d.model.audio_encoder import LEGACY_KEYS
from talk3d.model.conditioning import TokenEncoder
from talk3d.model.config import ModelConfig
from talk3d.model.decoder import Decoder
from talk3d.model.head_volume import head_volume_weight
from talk3d.model.noise import FrameNoise
from talk3d.model.occupancy import OccupancyGrid
from talk3d.model.precision import channels_last, conv_dtype, inference_convs
from talk3d.model.renderer import Jitter, render_rays
from talk3d.model.superres import SuperResolution
from talk3d.model.torso import TorsoLayer
from talk3d.model.triplane import IdentityTriplane, SceneBox, sample_planes
from talk3d.model.unet import DeltaplaneUNet

NUM_LANDMARKS = 478
FRAMES_PER_MARCH = 1
"""Frames volume-rendered together on CPU without gradients (bounds the memory of bigger
batches; enough rays to keep 2 CPU threads busy). CUDA renders the whole batch at once."""


def _current_key(name: str) -> str:
    """A state key of an older version's avatar in this version's names."""
    for old, new in LEGACY_KEYS.items():
        if name.startswith(f"tokens.{old}"):
            return f"tokens.{new}{name[len('tokens.') + len(old):]}"
    return name


class FramePlanes:
    """The planes ``P_t = P_id + s dP_t`` of a batch of frames, built a few frames at a time.

    Rendering without gradients keeps only the U-Net's half-resolution deltaplanes for the batch
    and upsamples each group of :data:`FRAMES_PER_MARCH` frames just before it is volume-rendered:
    a batch of 4 frames then holds one frame's full planes at a time instead of eight (the frames'
    deltaplanes and planes; 50 MB at 256^2 on the quick model).

    Args:
        identity: ``(3, C, R, R)`` identity planes.
        half: ``(B * 3, C, R/2, R/2)`` half-resolution deltaplanes, plane-major within each frame.
        scale: the motion scale ``s``.
        upsample: half-resolution deltaplanes -> ``(B', 3, C, R, R)``
            (:meth:`talk3d.model.unet.DeltaplaneUNet.upsample`).
    """

    def __init__(self, identity: torch.Tensor, half: torch.Tensor, scale: float,
                 upsample: Callable[[torch.Tensor], torch.Tensor]):
        self.identity = channels_last(identity)[None]  # the deltaplanes' layout: the sum runs over dense memory
        self.half, self.scale, self.upsample = half, scale, upsample

    def frames(self, start: int, stop: int) -> torch.Tensor:
        """``(stop - start, 3, C, R, R)`` planes of frames ``start..stop-1`` (channels-last without gradients)."""
        return self.upsample(self.half[3 * start:3 * stop]).mul_(self.scale).add_(self.identity)


class Avatar(nn.Module):
    """Personal 3D talking avatar (see module docstring and docs/model.md).

    Buffers: ``background (3, out_res, out_res)`` in [0, 1] (the dataset's plate; grey
    until :meth:`set_background`), ``canonical_landmarks (478, 3)`` world units (for the
    face prior; zeros until :meth:`set_canonical_landmarks`).
    In image torso mode ``torso`` is a :class:`TorsoLayer` (``None`` otherwise).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.box = SceneBox(cfg.box_min, cfg.box_max)
        self.triplane = IdentityTriplane(cfg)
        self.decoder = Decoder(cfg)
        self.tokens = TokenEncoder(cfg)
        self.unet = DeltaplaneUNet(cfg)
        self.superres = SuperResolution(cfg)
        self.torso = TorsoLayer(cfg) if cfg.torso_mode == "image" else None
        self.occupancy = OccupancyGrid(cfg.box_min, cfg.box_max, cfg.occupancy_res) if cfg.occupancy_res else None
        if cfg.mouth_basis:
            half = cfg.triplane_res // 2
            self.mouth_basis = nn.Parameter(torch.zeros(cfg.mouth_code, 3, cfg.triplane_channels, half, half))
        self.register_buffer("background", torch.full((3, cfg.out_res, cfg.out_res), 0.5))
        self.register_buffer("canonical_landmarks", torch.zeros(NUM_LANDMARKS, 3))
        self.precision = "auto"
        """Inference type of the U-Net and the SR: see :data:`talk3d.model.precision.PRECISIONS`."""

    # ----------------------------------------------------------------- state setters
    @torch.no_grad()
    def set_background(self, img: torch.Tensor) -> None:
        """Set the background plate from ``(3, H, W)`` float in [0, 1] or ``(H, W, 3)`` uint8."""
        img = torch.as_tensor(img)
        if img.dtype == torch.uint8:
            img = img.float() / 255.0
        if img.dim() == 3 and img.shape[-1] == 3 and img.shape[0] != 3:
            img = img.permute(2, 0, 1)
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"background must be (3, H, W) or (H, W, 3), got {tuple(img.shape)}")
        img = resize(img[None].float(), self.cfg.out_res)[0]
        self.background.copy_(img.to(self.background))

    @torch.no_grad()
    def set_canonical_landmarks(self, points: torch.Tensor) -> None:
        """Set the canonical landmark shape ``(478, 3)`` (world units)."""
        points = torch.as_tensor(points, dtype=torch.float32)
        if points.shape != (NUM_LANDMARKS, 3):
            raise ValueError(f"canonical landmarks must be ({NUM_LANDMARKS}, 3), got {tuple(points.shape)}")
        self.canonical_landmarks.copy_(points.to(self.canonical_landmarks))

    def set_torso_init(self, image: torch.Tensor, alpha: torch.Tensor) -> None:
        """Initialise the image-mode torso texture from ``image (3, H, W)`` and ``alpha (1, H, W)`` in [0, 1].

        No-op in volume torso mode.
        """
        if self.torso is not None:
            self.torso.set_init(image, alpha)

    # ----------------------------------------------------------------- field
    def identity_planes(self) -> torch.Tensor:
        """``P_id`` ``(3, C, R, R)``."""
        return self.triplane()

    def deltaplane(self, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """``dP_t`` ``(B, 3, C, R, R)`` for a conditioning batch (see ``frame_conditioning``)."""
        return self.deltaplane_and_code(cond)[0]

    def deltaplane_and_code(self, cond: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``dP_t`` ``(B, 3, C, R, R)`` and the predicted lip-motion code ``(B, K)`` (None without one).

        With ``cfg.mouth_basis`` the lip-driven basis term is added (driven by
        ``cond["mouth_drive"]`` when given, else by the predicted code). Both terms are summed at
        the U-Net's half resolution and upsampled once (bilinear upsampling is linear). Without
        gradients the result is channels-last (``C`` innermost), the layout the CPU triplane
        sampler reads.
        """
        half, code = self.half_deltaplane_and_code(cond)
        return self.unet.upsample(half), code

    def half_deltaplane_and_code(self, cond: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`deltaplane_and_code` before the upsampling: ``(B * 3, C, R/2, R/2)`` and the code."""
        tokens, code = self.tokens.encode(cond)
        with self.inference_convs(tokens.device):
            half = self.unet.half_res(self.identity_planes(), tokens)
        if self.cfg.mouth_basis and code is not None:
            half = channels_last(half + self.basis_half(cond.get("mouth_drive", code).to(half)))
        return half, code

    def basis_half(self, code: torch.Tensor) -> torch.Tensor:
        """Lip-driven deltaplane ``sum_k code_k B_k`` at half the plane side ``(B * 3, C, R/2, R/2)``
        for ``code (B, K)``."""
        k, _, c, h, _ = self.mouth_basis.shape
        return (code @ self.mouth_basis.reshape(k, -1)).reshape(-1, c, h, h)

    def basis_delta(self, code: torch.Tensor) -> torch.Tensor:
        """Lip-driven deltaplane ``sum_k code_k B_k`` ``(B, 3, C, R, R)`` for ``code (B, K)``."""
        return self.unet.upsample(self.basis_half(code))

    def inference_convs(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast the U-Net and the SR run under: none of its own with gradients (an outer
        autocast, as in CUDA fits, still applies), else the type :attr:`precision` picks for
        ``device`` (see :mod:`talk3d.model.precision`)."""
        if torch.is_grad_enabled():
            return contextlib.nullcontext()
        return inference_convs(conv_dtype(self.precision, device), device)

    def planes(self, cond: dict[str, torch.Tensor] | None, motion_scale: float = 1.0,
               deltaplane: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``P_t`` ``(B, 3, C, R, R)`` (or ``(3, C, R, R)`` with neither cond nor deltaplane) and ``dP_t``.

        ``P_t`` has the memory layout of ``dP_t`` (channels-last without gradients)."""
        p_id = self.identity_planes()
        if deltaplane is None and cond is not None:
            deltaplane = self.deltaplane(cond)
        if deltaplane is None:
            return p_id, None
        if torch.is_grad_enabled():
            return p_id[None] + motion_scale * deltaplane, deltaplane
        p_t = torch.empty_like(deltaplane, dtype=torch.promote_types(p_id.dtype, deltaplane.dtype))
        p_id = channels_last(p_id)  # the layout of the deltaplane, so the sum runs over dense memory
        return torch.add(p_id[None], deltaplane, alpha=motion_scale, out=p_t), deltaplane

    def query(self, planes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Query the field at world points (for MPI export, meshes, tests).

        Args:
            planes: ``(3, C, R, R)`` or ``(B, 3, C, R, R)``.
            points: ``(B, N, 3)`` world (canonical) points.
        Returns:
            ``sigma (B, N)`` (0 outside the scene box) and ``features (B, N, F)`` (``[..., :3]`` RGB).
        """
        coords = self.box.normalize(points)
        sigma, feats = self.decoder(sample_planes(planes, coords))
        inside = (coords.abs() <= 1.0).all(-1).to(sigma.dtype)
        if self.cfg.head_volume is not None:
            inside = inside * head_volume_weight(points, self.cfg.head_volume).to(sigma.dtype)
        return sigma * inside, feats

    @torch.no_grad()
    def refresh_occupancy(self) -> float | None:
        """Recompute the occupancy grid from the identity field; the occupied fraction (None: no grid)."""
        if self.occupancy is None:
            return None
        planes = self.identity_planes()
        return self.occupancy.refresh(lambda p: self.query(planes, p)[0])

    @staticmethod
    def added_since(name: str, state: dict) -> bool:
        """Whether state key ``name`` is missing from ``state`` only because the weights were saved
        before it existed (the occupancy grid's buffers; :meth:`ensure_occupancy` computes them)."""
        return name.startswith("occupancy.") and name not in state

    def complete_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` in this version's layout: keys of older versions renamed (the token encoder's
        audio path, see :data:`talk3d.model.audio_encoder.LEGACY_KEYS`), and this model's (not yet
        computed) occupancy grid added when it has none, so weights saved before load strictly
        (:meth:`ensure_occupancy` then computes their grid)."""
        state = {_current_key(k): v for k, v in state.items()}
        return {**state, **{k: v for k, v in self.state_dict().items() if self.added_since(k, state)}}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters by learning rate: ``planes`` (texel grids: the identity triplane, the
        image-mode torso texture, the lip-driven deltaplane basis) and ``networks`` (the rest),
        each in registration order."""
        texels = [*self.triplane.parameters(), *([self.torso.texture] if self.torso is not None else []),
                  *([self.mouth_basis] if self.cfg.mouth_basis else [])]
        taken = {id(p) for p in texels}  # (checkpointed optimiser state follows this order)
        return {"planes": [p for p in self.parameters() if id(p) in taken],
                "networks": [p for p in self.parameters() if id(p) not in taken]}

    def parameter_sets(self) -> dict[str, list[nn.Parameter]]:
        """Named sets of parameters a fit stage may freeze: ``lip_encoder`` (the audio path to the
        lip-motion code, :meth:`TokenEncoder.lip_encoder`)."""
        return {"lip_encoder": self.tokens.lip_encoder()}

    def ensure_occupancy(self) -> None:
        """Compute the grid if it never was (avatars saved before the grid existed)."""
        if self.occupancy is not None and not self.occupancy.is_ready:
            self.refresh_occupancy()

    # ----------------------------------------------------------------- rendering
    def render_rays(self, planes: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                    jitter: Jitter | None = None, with_distortion: bool = False) -> dict[str, torch.Tensor]:
        """Volume-render arbitrary rays ``(B, N, 3)`` through ``planes``; see :func:`renderer.render_rays`.

        ``jitter``: ``None`` jitters in training mode only; a :class:`FrameNoise` (``B`` frames)
        draws the training randomness per frame. ``with_distortion``: also each ray's weight
        distortion ``(B, N)`` (:func:`renderer.distortion`).
        """
        jitter = self.training if jitter is None else jitter
        n = origins.shape[0]
        cpu = origins.device.type == "cpu"
        step = FRAMES_PER_MARCH if cpu and not torch.is_grad_enabled() and jitter is False else n

        def frames(start: int, stop: int) -> torch.Tensor:
            if isinstance(planes, FramePlanes):
                return planes.frames(start, stop)
            return planes[start:stop] if planes.dim() == 5 and stop - start < n else planes

        if n <= step:
            return self._render_rays(frames(0, n), origins, dirs, jitter, with_distortion)
        parts = [self._render_rays(frames(i, min(i + step, n)), origins[i:i + step], dirs[i:i + step], jitter,
                                   with_distortion) for i in range(0, n, step)]
        return {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

    def _render_rays(self, planes: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                     jitter: Jitter, with_distortion: bool = False) -> dict[str, torch.Tensor]:
        """:meth:`render_rays` of all the given frames at once."""
        cfg = self.cfg
        grid = self.occupancy if self.occupancy is not None and self.occupancy.is_ready else None
        return render_rays(lambda p: self.query(planes, p), origins, dirs, self.box.box_min, self.box.box_max,
                           cfg.coarse_samples, cfg.importance_samples, jitter, cfg.fine_cull_alpha, grid,
                           with_distortion)

    def render_planes(self, planes: torch.Tensor, cam2world: torch.Tensor, intrinsics: torch.Tensor,
                      out_size: int | None = None, torso_pose: torch.Tensor | None = None,
                      torso_offset: torch.Tensor | None = None,
                      noise: FrameNoise | None = None) -> dict[str, torch.Tensor]:
        """Render given planes from cameras.

        Args:
            planes: ``(3, C, R, R)`` (shared), ``(B, 3, C, R, R)`` or :class:`FramePlanes`.
            cam2world: ``(B, 4, 4)``; intrinsics: ``(B, 3, 3)`` or ``(3, 3)`` normalised.
            out_size: output side (default ``cfg.out_res``; other sizes resize the SR output).
            torso_pose: ``(B, 10)`` pose conditioning for the image-mode torso warp
                (``None``: identity warp); ignored in volume torso mode.
            torso_offset: ``(B, 2)`` tracked torso shift in image widths for the image-mode
                torso (``None``: none); ignored in volume torso mode.
            noise: per-frame training randomness (``None``: torch's generator when training).
        Returns:
            ``rgb (B, 3, H, W)``, ``rgb_lr (B, 3, h, w)``, ``alpha (B, 1, h, w)``,
            ``alpha_hr (B, 1, H, W)``, ``depth (B, 1, h, w)``, ``features (B, F, h, w)``,
            ``rgb_fg (B, 3, H, W)`` (premultiplied foreground before compositing).
            ``alpha``/``alpha_hr``/``rgb_fg`` are the whole person's (head over torso). In image
            torso mode also ``alpha_head (B, 1, h, w)``, ``alpha_head_hr (B, 1, H, W)`` (the
            volume's own opacity), ``torso_rgb (B, 3, H, W)`` (straight colour) and
            ``torso_alpha (B, 1, H, W)``.
        """
        cfg = self.cfg
        b, h = cam2world.shape[0], cfg.neural_res
        out_size = cfg.out_res if out_size is None else int(out_size)
        origins, dirs = generate_rays(cam2world, intrinsics.to(cam2world), h, h)
        res = self.render_rays(planes, origins, dirs, jitter=noise if noise is not None and self.training else None)
        feats = res["features"].transpose(1, 2).reshape(b, -1, h, h)
        alpha = res["alpha"].reshape(b, 1, h, h)
        depth = res["depth"].reshape(b, 1, h, h)
        bg = self.background[None].to(feats.dtype)
        rgb_lr = feats[:, :3] + (1.0 - alpha) * resize(bg, h)
        with self.inference_convs(feats.device):
            rgb_fg, alpha_hr = self.superres(feats, alpha)
        if rgb_fg.shape[-1] != out_size:
            rgb_fg, alpha_hr = resize(rgb_fg, out_size), resize(alpha_hr, out_size)
        extra: dict[str, torch.Tensor] = {}
        if self.torso is not None:
            t_rgb, t_a = self.torso(torso_pose, b, out_size, torso_offset)
            t_rgb, t_a = t_rgb.to(feats.dtype), t_a.to(feats.dtype)
            t_a_lr = resize(t_a, h)
            t_fg_lr = resize(t_rgb * t_a, h)
            extra = {"alpha_head": alpha, "alpha_head_hr": alpha_hr, "torso_rgb": t_rgb, "torso_alpha": t_a}
            # head over torso: premultiplied colour and the union alpha of the person
            rgb_lr = feats[:, :3] + (1.0 - alpha) * (t_fg_lr + (1.0 - t_a_lr) * resize(bg, h))
            rgb_fg = rgb_fg + (1.0 - alpha_hr) * t_rgb * t_a
            alpha = alpha + (1.0 - alpha) * t_a_lr
            alpha_hr = alpha_hr + (1.0 - alpha_hr) * t_a
        rgb = rgb_fg + (1.0 - alpha_hr) * resize(bg, out_size)
        return {"rgb": rgb.clamp(0.0, 1.0), "rgb_lr": rgb_lr, "alpha": alpha, "alpha_hr": alpha_hr,
                "depth": depth, "features": feats, "rgb_fg": rgb_fg, **extra}

    def forward(self, cam2world: torch.Tensor, intrinsics: torch.Tensor, cond: dict[str, torch.Tensor] | None,
                *, motion_scale: float = 1.0, out_size: int | None = None,
                deltaplane: torch.Tensor | None = None, noise: FrameNoise | None = None) -> dict[str, torch.Tensor]:
        """Render frames.

        Args:
            cam2world: ``(B, 4, 4)``; intrinsics: ``(B, 3, 3)`` or ``(3, 3)`` normalised.
            cond: ``{"audio", "blink", "pose"}`` from ``frame_conditioning`` (batch ``B``), or
                ``None`` for the identity alone (deltaplane 0, U-Net skipped).
            motion_scale: ``P_t = P_id + motion_scale * dP_t`` (0 = identity, >1 exaggerates).
            out_size: output side (default ``cfg.out_res``).
            deltaplane: precomputed ``(B, 3, C, R, R)`` (skips the U-Net; ``cond`` is then ignored).
            noise: per-frame training randomness (see :mod:`talk3d.model.noise`).
        Returns:
            :meth:`render_planes` outputs plus ``deltaplane (B, 3, C, R, R)`` (zeros when
            ``cond`` is None; not returned when the U-Net runs without gradients, where the planes
            are built a few frames at a time, see :class:`FramePlanes`) and, for models with a lip-motion code, the predicted
            ``mouth_code (B, K)`` (when the U-Net ran). In image torso mode ``cond["pose"]`` and ``cond["torso"]`` (the
            tracked offset, optional) place the torso (identity when ``cond`` is None), also
            when ``deltaplane`` is given.
        """
        code = None
        if deltaplane is None and cond is not None and not torch.is_grad_enabled():
            half, code = self.half_deltaplane_and_code(cond)
            planes: torch.Tensor | FramePlanes = FramePlanes(self.identity_planes(), half, motion_scale,
                                                             self.unet.upsample)
            dp = None
        else:
            if deltaplane is None and cond is not None:
                deltaplane, code = self.deltaplane_and_code(cond)
            planes, dp = self.planes(cond, motion_scale, deltaplane)
        pose = cond.get("pose") if cond is not None else None
        offset = cond.get("torso") if cond is not None else None
        out = self.render_planes(planes, cam2world, intrinsics, out_size, torso_pose=pose, torso_offset=offset,
                                 noise=noise)
        if dp is None and not isinstance(planes, FramePlanes):
            p = self.identity_planes()
            dp = p.new_zeros(cam2world.shape[0], *p.shape)
        if dp is not None:
            out["deltaplane"] = dp
        if code is not None:
            out["mouth_code"] = code
        return out
