"""Volume renderer: ray-box intersection, stratified + importance sampling, compositing.

Compositing goes through :func:`talk3d.ops.composite_rays` only, so the fused CUDA kernel
plugs in at one place. Sample positions carry no gradient (importance sampling uses the
detached coarse weights); gradients flow through densities and features.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from talk3d.model.noise import FrameNoise
from talk3d.model.occupancy import OccupancyGrid
from talk3d.ops import composite_rays

Jitter = bool | FrameNoise
"""Sampling randomness: ``False`` (evaluation: bin centres, evenly spaced ``u``), ``True``
(training, torch's global generator) or a :class:`FrameNoise` (training, keyed per frame)."""

FieldFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""Radiance field: world points ``(B, N, 3)`` -> ``sigma (B, N)``, ``features (B, N, F)``."""


def ray_box_intersect(origins: torch.Tensor, dirs: torch.Tensor, box_min: torch.Tensor,
                      box_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test of rays against an axis-aligned box.

    Args:
        origins, dirs: ``(..., 3)`` ray origins and directions.
        box_min, box_max: ``(3,)`` box corners.
    Returns:
        ``t_near (...)``, ``t_far (...)`` (``t_near >= 0``; both 0 for misses) and ``hit (...)`` bool.
    """
    safe = torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    inv = 1.0 / safe
    t0 = (box_min.to(origins) - origins) * inv
    t1 = (box_max.to(origins) - origins) * inv
    t_near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(-1)
    hit = t_far > t_near + 1e-6
    zero = torch.zeros_like(t_near)
    return torch.where(hit, t_near, zero), torch.where(hit, t_far, zero), hit


def _uniform(jitter: Jitter, rays: int, n: int, like: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """``(R, n)`` uniform numbers for the rays (or the subset ``rows`` of ``rays`` frame-major rays)."""
    if isinstance(jitter, FrameNoise):
        return jitter.ray_uniform(rays, n, rows).to(like)
    count = rays if rows is None else rows.shape[0]
    return torch.rand(count, n, device=like.device, dtype=like.dtype)


def stratified_samples(t_near: torch.Tensor, t_far: torch.Tensor, n: int, jitter: Jitter,
                       rows: torch.Tensor | None = None, rays: int | None = None) -> torch.Tensor:
    """``n`` samples per ray, one in each of ``n`` equal bins of ``[t_near, t_far]``.

    Args:
        t_near, t_far: ``(R,)``.
        jitter: random position inside each bin (training) or the bin centre (evaluation); see :data:`Jitter`.
        rows, rays: the given rays are rows ``rows`` of ``rays`` frame-major rays (keyed noise
            is drawn per ray of the whole batch); ``None``: all of them.
    Returns:
        ``(R, n)`` non-decreasing sample distances.
    """
    steps = torch.arange(n, device=t_near.device, dtype=t_near.dtype)
    total = t_near.shape[0] if rays is None else rays
    u = _uniform(jitter, total, n, t_near, rows) if jitter is not False else 0.5
    frac = (steps + u) / n
    return t_near[:, None] + (t_far - t_near)[:, None] * frac


@torch.no_grad()
def importance_samples(edges: torch.Tensor, weights: torch.Tensor, n: int, jitter: Jitter,
                       rows: torch.Tensor | None = None, rays: int | None = None) -> torch.Tensor:
    """Draw ``n`` distances per ray from the piecewise-constant pdf of the coarse weights.

    Weight ``i`` is spread over ``[edges_i, edges_{i+1}]``. The renderer passes
    ``edges = [t_near, t_0, ..., t_{S-1}]``: with the forward rectangle rule of
    :func:`composite`, a surface seen at sample ``i`` starts between ``t_{i-1}`` and ``t_i``,
    so that is where the extra samples go.

    Args:
        edges: ``(R, S + 1)`` non-decreasing bin edges.
        weights: ``(R, S)`` coarse compositing weights (detached here).
        jitter: random ``u`` (training) or evenly spaced ``u`` (evaluation); see :data:`Jitter`.
        rows, rays: the given rays are rows ``rows`` of ``rays`` frame-major rays (keyed noise
            is drawn per ray of the whole batch); ``None``: all of them.
    Returns:
        ``(R, n)`` sample distances, ascending.
    """
    r, s = weights.shape
    pdf = weights.detach() + 1e-4  # keep a little mass everywhere
    pdf = pdf / pdf.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros(r, 1, device=pdf.device, dtype=pdf.dtype), torch.cumsum(pdf, -1)], -1)
    cdf[:, -1] = 1.0
    if jitter is not False:
        u = _uniform(jitter, r if rays is None else rays, n, pdf, rows).sort(-1).values
    else:
        u = ((torch.arange(n, device=pdf.device, dtype=pdf.dtype) + 0.5) / n).expand(r, n)
    idx = torch.searchsorted(cdf, u.contiguous(), right=True).clamp(1, s)  # (R, n) in 1..S
    c0, c1 = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    e0, e1 = edges.gather(1, idx - 1), edges.gather(1, idx)
    frac = ((u - c0) / (c1 - c0).clamp_min(1e-8)).clamp(0.0, 1.0)
    return e0 + (e1 - e0) * frac


def composite(sigmas: torch.Tensor, features: torch.Tensor, t_vals: torch.Tensor, t_far: torch.Tensor,
              hit: torch.Tensor) -> dict[str, torch.Tensor]:
    """Composite sorted samples; each sample covers ``[t_i, t_{i+1}]`` (last: up to ``t_far``).

    Args:
        sigmas: ``(R, S)``; features: ``(R, S, F)``; t_vals: ``(R, S)`` sorted;
        t_far: ``(R,)``; hit: ``(R,)`` bool (missing rays get ``delta = 0`` -> alpha 0).
    Returns:
        :func:`talk3d.ops.composite_rays` outputs: ``weights (R, S)``, ``features (R, F)``,
        ``depth (R,)`` (unnormalised), ``alpha (R,)``, ``transmittance (R, S)``.
    """
    nxt = torch.cat([t_vals[:, 1:], t_far[:, None]], -1)
    deltas = (nxt - t_vals).clamp_min(0.0) * hit[:, None].to(t_vals.dtype)
    return composite_rays(sigmas, features, t_vals, deltas)


def distortion(weights: torch.Tensor, t_vals: torch.Tensor, t_far: torch.Tensor) -> torch.Tensor:
    """Distortion of each ray's weights (mip-NeRF 360), in world units.

    ``sum_ij w_i w_j |m_i - m_j| + 1/3 sum_i w_i^2 d_i`` over the composited segments (sample
    ``i`` covers ``[t_i, t_{i+1}]``, midpoint ``m_i``, length ``d_i``; the last one ends at
    ``t_far``), computed in ``O(S)`` with prefix sums. Small where the weight sits in one thin
    interval (a surface), large where it spreads along the ray (a fog, or two layers).

    Args:
        weights: ``(R, S)`` compositing weights; t_vals: ``(R, S)`` ascending; t_far: ``(R,)``.
    Returns:
        ``(R,)``.
    """
    nxt = torch.cat([t_vals[:, 1:], t_far[:, None]], -1)
    mid, length = (t_vals + nxt) / 2, (nxt - t_vals).clamp_min(0.0)
    w_mid = weights * mid
    w_before, w_mid_before = torch.cumsum(weights, -1) - weights, torch.cumsum(w_mid, -1) - w_mid
    across = 2.0 * (w_mid * w_before - weights * w_mid_before).sum(-1)
    return across + (weights.square() * length).sum(-1) / 3.0


def render_rays(field: FieldFn, origins: torch.Tensor, dirs: torch.Tensor, box_min: torch.Tensor,
                box_max: torch.Tensor, n_coarse: int, n_importance: int, jitter: Jitter,
                cull_alpha: float = 0.0, occupancy: OccupancyGrid | None = None,
                with_distortion: bool = False) -> dict[str, torch.Tensor]:
    """Render rays through a radiance field restricted to the scene box.

    The coarse samples and the importance samples are evaluated once each and merged
    (sorted) before compositing (EG3D style), so every field evaluation contributes.

    Args:
        field: see :data:`FieldFn`.
        origins, dirs: ``(B, N, 3)`` world rays (unit directions).
        box_min, box_max: ``(3,)`` scene box.
        n_coarse, n_importance: samples per ray.
        jitter: stratified/random sampling (training) or deterministic (evaluation); see :data:`Jitter`.
        cull_alpha: rays whose coarse opacity is below this get no importance samples
            (their coarse samples still count); 0 disables culling.
        occupancy: a refreshed grid: rays that meet no occupied cell are not sampled (they
            render transparent) and the others are sampled between their first and last
            occupied cell only; ``None``: the whole box segment of every ray.
    Returns:
        dict with ``features (B, N, F)`` (premultiplied by alpha), ``alpha (B, N)``,
        ``depth (B, N)`` (expected distance where opaque, ``t_far`` blend elsewhere; misses 0),
        ``depth_raw (B, N)`` = sum w t, ``t_far (B, N)`` (the box exit) and, ``with_distortion``,
        ``distortion (B, N)`` (:func:`distortion`; 0 for rays not marched).
    """
    b, n, _ = origins.shape
    o = origins.reshape(b * n, 3)
    d = dirs.reshape(b * n, 3)
    t_near, box_far, hit = ray_box_intersect(o, d, box_min, box_max)
    t_far = box_far
    if occupancy is not None:
        t_near, t_far, hit = occupancy.ray_bounds(o, d, t_near, box_far, hit)
    rows = _rows_to_march(hit, b)
    if rows is None:
        marched = _march(field, o, d, t_near, t_far, hit, b, n_coarse, n_importance, jitter, cull_alpha, None,
                         with_distortion)
    else:
        keep, valid = rows
        sub = _march(field, o[keep], d[keep], t_near[keep], t_far[keep], hit[keep], b, n_coarse, n_importance,
                     jitter, cull_alpha, (keep, b * n), with_distortion)
        marched = {name: _scatter_rows(v, keep, valid, b * n) for name, v in sub.items()}
    alpha, depth_raw = marched["alpha"], marched["depth"]
    out = {
        "features": marched["features"].reshape(b, n, -1),
        "alpha": alpha.reshape(b, n),
        "depth": (depth_raw + (1.0 - alpha) * box_far).reshape(b, n),
        "depth_raw": depth_raw.reshape(b, n),
        "t_far": box_far.reshape(b, n),
    }
    if with_distortion:
        out["distortion"] = marched["distortion"].reshape(b, n)
    return out


RowSubset = tuple[torch.Tensor, int]
"""``(rows, rays)``: the marched rays are rows ``rows (R',)`` of ``rays`` frame-major rays."""


def _march(field: FieldFn, o: torch.Tensor, d: torch.Tensor, t_near: torch.Tensor, t_far: torch.Tensor,
           hit: torch.Tensor, b: int, n_coarse: int, n_importance: int, jitter: Jitter, cull_alpha: float,
           subset: RowSubset | None, with_distortion: bool = False) -> dict[str, torch.Tensor]:
    """Coarse + importance sampling and compositing of rays ``(R, 3)`` (``b`` equal frame blocks).

    Returns ``features (R, F)``, ``alpha (R,)``, ``depth (R,)`` (unnormalised, sum w t) and,
    ``with_distortion``, ``distortion (R,)`` (:func:`distortion`).
    """
    rows, rays = subset if subset is not None else (None, None)
    t_c = stratified_samples(t_near, t_far, n_coarse, jitter, rows, rays)  # (R, Sc)
    sig_c, feat_c = _eval(field, o, d, t_c, b)
    if n_importance > 0:
        res_c = composite(sig_c.detach(), feat_c[..., :1].detach(), t_c, t_far, hit)
        edges = torch.cat([t_near[:, None], t_c], -1)
        active = (res_c["alpha"] >= cull_alpha) & hit
        if cull_alpha <= 0.0 or bool(active.all()):
            t_f = importance_samples(edges, res_c["weights"], n_importance, jitter, rows, rays)
            sig_f, feat_f = _eval(field, o, d, t_f, b)
        else:
            t_f, sig_f, feat_f = _culled_fine(field, o, d, edges, res_c["weights"], t_far, active, b,
                                              n_importance, jitter, feat_c.shape[-1], subset)
        t_all, order = torch.cat([t_c, t_f], -1).sort(-1)
        sig = torch.cat([sig_c, sig_f], -1).gather(1, order)
        feat_all = torch.cat([feat_c, feat_f], 1)
        feat = feat_all.gather(1, order[..., None].expand(-1, -1, feat_all.shape[-1]))
    else:
        t_all, sig, feat = t_c, sig_c, feat_c
    res = composite(sig, feat, t_all, t_far, hit)
    out = {"features": res["features"], "alpha": res["alpha"], "depth": res["depth"]}
    if with_distortion:
        out["distortion"] = distortion(res["weights"], t_all, t_far)
    return out


def _rows_to_march(active: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The active rays of each of ``b`` frame blocks, padded to the largest count (``None``: all
    rays are active, or too few are not for a gather to pay).

    Returns ``rows (b * k,)`` (frame-major, each block's active rays first) and ``valid (b * k,)``
    (false for the padding).
    """
    r = active.shape[0]
    per = r // b
    act = active.view(b, per)
    counts = act.sum(1)
    k = int(counts.max())
    if k > 0.9 * per:
        return None
    k = max(k, 1)
    block, index = act.nonzero(as_tuple=True)  # active rays, block by block, in ray order
    slot = torch.arange(block.numel(), device=act.device) - (counts.cumsum(0) - counts)[block]
    first = torch.arange(b, device=act.device)[:, None] * per
    rows = first.expand(b, k).clone()  # padding: the block's first ray (marched, then dropped)
    rows[block, slot] = first[block, 0] + index
    valid = torch.zeros(b, k, dtype=torch.bool, device=act.device)
    valid[block, slot] = True
    return rows.reshape(-1), valid.reshape(-1)


def _scatter_rows(values: torch.Tensor, rows: torch.Tensor, valid: torch.Tensor, total: int) -> torch.Tensor:
    """Per-ray results of the marched ``rows`` -> all ``total`` rays (zeros elsewhere)."""
    full = values.new_zeros(total, *values.shape[1:])
    return full.index_put((rows[valid],), values[valid])


def _eval(field: FieldFn, o: torch.Tensor, d: torch.Tensor, t: torch.Tensor,
          b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluate the field at ``o + t d``: ``o, d (R, 3)``, ``t (R, S)`` -> ``(R, S)``, ``(R, S, F)``."""
    r, s = t.shape
    pts = (o[:, None, :] + t[..., None] * d[:, None, :]).reshape(b, (r // b) * s, 3)
    sigma, feat = field(pts)
    return sigma.reshape(r, s), feat.reshape(r, s, -1)


def _culled_fine(field: FieldFn, o: torch.Tensor, d: torch.Tensor, edges: torch.Tensor, weights: torch.Tensor,
                 t_far: torch.Tensor, active: torch.Tensor, b: int, n: int, jitter: Jitter,
                 n_feat: int, subset: RowSubset | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Importance samples for the active rays only (per batch entry, padded to the largest count).

    Inactive rays get ``n`` empty samples at ``t_far`` (zero density and features), which do
    not change their compositing. Returns ``t (R, n)``, ``sigma (R, n)``, ``features (R, n, F)``.
    """
    r = active.shape[0]
    t_full = t_far[:, None].expand(r, n).clone()
    sig_full = t_far.new_zeros(r, n)
    feat_full = t_far.new_zeros(r, n, n_feat)
    if not bool(active.any()):
        return t_full, sig_full, feat_full
    rows, valid = _rows_to_march(active, b) or (torch.arange(r, device=active.device), active)
    noise_rows, rays = (rows, r) if subset is None else (subset[0][rows], subset[1])
    t_sub = importance_samples(edges[rows], weights[rows], n, jitter, rows=noise_rows, rays=rays)
    sig_sub, feat_sub = _eval(field, o[rows], d[rows], t_sub, b)
    keep = rows[valid]
    t_full[keep] = t_sub[valid]
    sig_full = sig_full.to(sig_sub.dtype).index_put((keep,), sig_sub[valid])  # dtypes differ under autocast
    feat_full = feat_full.to(feat_sub.dtype).index_put((keep,), feat_sub[valid])
    return t_full, sig_full, feat_full
