"""Paste rendered crops back into the source video's full frame (``talk3d render --full-frame``).

Prep cuts one fixed square ``crop_box = [x0, y0, side]`` (decoded source pixels) out of every
frame and the avatar renders that square. :class:`Placement` maps a rendered crop of any side
onto a full frame of any size (the source decoded at its own resolution); :class:`Compositor`
blends each rendered frame into its plate (the source frame it stands for):

* only where a person is: the render's own opacity, united with the plate's person mask (so
  the recorded head cannot show beside a turned one), softened by a few pixels;
* feathered to zero at the crop's sides that lie inside the frame (smoothstep over
  ``feather`` pixels), so the plate's torso continues into the render's;
* colour-matched: the mean colour difference between plate and render where both show the
  person, smoothed over time, is added to the render before blending.

Outside the blend weight the output is the plate itself. :func:`seam_step` measures the seam.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

FEATHER_FRACTION = 0.04
"""Feather width as a fraction of the crop side (in output pixels)."""
SOFTEN_FRACTION = 0.008
"""Person-mask softening (dilation and blur radius) as a fraction of the crop side."""
COLOUR_LIMIT = 12.0 / 255.0
"""Largest colour correction per channel (a bigger difference is content, not a colour cast)."""
COLOUR_SMOOTHING = 0.9
"""Weight of the previous frames' colour correction (exponential moving average)."""


@dataclass(frozen=True)
class Placement:
    """Where the crop sits in the output frame.

    Continuous coordinates (pixel ``i`` covers ``[i, i + 1)``): crop point ``u`` of a render of
    side ``S`` lands at ``x0 + u * side / S`` (and ``y0 + v * side / S``) in output pixels.
    """

    frame_size: tuple[int, int]
    """Output frame ``(width, height)`` in pixels."""
    box: tuple[float, float, float]
    """Crop ``(x0, y0, side)`` in output pixels (may extend past the frame with prep's padding)."""

    @classmethod
    def from_manifest(cls, manifest, frame_size: tuple[int, int]) -> Placement:
        """Placement of a dataset's crop (:meth:`talk3d.dataset.Manifest.crop_origin` and side, in
        decoded ``source_size`` pixels) in a frame of ``frame_size`` (the source at another size)."""
        return cls.of_box((*manifest.crop_origin(), manifest.crop_box[2]), manifest.source_size, frame_size)

    @classmethod
    def of_box(cls, box: tuple[float, float, float], source_size: list[int], frame_size: tuple[int, int]) -> Placement:
        """Placement of ``box = (x0, y0, side)`` in ``source_size`` pixels in a frame of ``frame_size``."""
        sx = frame_size[0] / float(source_size[0])
        sy = frame_size[1] / float(source_size[1])
        x0, y0, side = (float(v) for v in box)
        return cls((int(frame_size[0]), int(frame_size[1])), (x0 * sx, y0 * sy, side * 0.5 * (sx + sy)))

    @property
    def roi(self) -> tuple[int, int, int, int]:
        """Pixel rectangle ``(x_lo, y_lo, x_hi, y_hi)`` of the frame the crop touches (clipped)."""
        x0, y0, side = self.box
        w, h = self.frame_size
        x_lo, y_lo = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
        x_hi, y_hi = min(w, int(np.ceil(x0 + side))), min(h, int(np.ceil(y0 + side)))
        if x_hi <= x_lo or y_hi <= y_lo:
            raise ValueError(f"the crop {self.box} lies outside the {w}x{h} frame")
        return x_lo, y_lo, x_hi, y_hi

    def affine(self, render_side: int) -> np.ndarray:
        """``(2, 3)`` float64 map from render pixel indices to ROI pixel indices (for ``cv2.warpAffine``)."""
        x0, y0, side = self.box
        x_lo, y_lo, _, _ = self.roi
        a = side / float(render_side)
        return np.array([[a, 0.0, x0 + 0.5 * a - 0.5 - x_lo],
                         [0.0, a, y0 + 0.5 * a - 0.5 - y_lo]], dtype=np.float64)

    def warp(self, image: np.ndarray, interpolation: int | None = None) -> np.ndarray:
        """A square crop-space image ``(S, S[, C])`` resampled onto the ROI ``(h, w[, C])`` (uint8
        stays uint8, anything else becomes float32)."""
        import cv2

        x_lo, y_lo, x_hi, y_hi = self.roi
        img = np.asarray(image)
        if img.dtype != np.uint8:
            img = img.astype(np.float32, copy=False)
        target = int(round(self.box[2]))
        if target < 0.75 * img.shape[0]:  # shrinking: area-average first (a warp would alias)
            img = cv2.resize(img, (target, target), interpolation=cv2.INTER_AREA)
        flags = cv2.INTER_LINEAR if interpolation is None else interpolation
        return cv2.warpAffine(img, self.affine(img.shape[0]), (x_hi - x_lo, y_hi - y_lo), flags=flags,
                              borderMode=cv2.BORDER_REPLICATE)

    def unwarp(self, frame: np.ndarray, render_side: int) -> np.ndarray:
        """The crop of a full ``frame (H, W, 3)`` uint8 resampled to ``(S, S, 3)`` uint8 (the
        inverse of :meth:`warp`; edge pixels repeat where the crop leaves the frame)."""
        import cv2

        x_lo, y_lo, x_hi, y_hi = self.roi
        return cv2.warpAffine(frame[y_lo:y_hi, x_lo:x_hi], self.affine(render_side), (render_side, render_side),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)

    def border_distance(self) -> np.ndarray:
        """``(h, w)`` float32 distance in pixels from each ROI pixel centre to the nearest crop side
        that lies inside the frame (infinite when every side is at or past the frame's edge)."""
        x0, y0, side = self.box
        w, h = self.frame_size
        x_lo, y_lo, x_hi, y_hi = self.roi
        xs = np.arange(x_lo, x_hi, dtype=np.float32) + 0.5
        ys = np.arange(y_lo, y_hi, dtype=np.float32)[:, None] + 0.5
        dist = np.full((y_hi - y_lo, x_hi - x_lo), np.inf, dtype=np.float32)
        for inside, d in ((x0 > 0.5, xs - x0), (x0 + side < w - 0.5, x0 + side - xs),
                          (y0 > 0.5, ys - y0), (y0 + side < h - 0.5, y0 + side - ys)):
            if inside:
                dist = np.minimum(dist, np.broadcast_to(d, dist.shape))
        return dist

    def feather_width(self) -> float:
        """Feather width in output pixels."""
        return max(2.0, FEATHER_FRACTION * self.box[2])


@functools.lru_cache(maxsize=8)
def _soft_kernel(side: int) -> np.ndarray:
    """Elliptic dilation kernel of the person-mask softening for a crop of ``side`` pixels (made once)."""
    import cv2

    radius = max(1, int(round(SOFTEN_FRACTION * side)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def smoothstep(x: np.ndarray) -> np.ndarray:
    """``3x^2 - 2x^3`` of ``x`` clipped to [0, 1]."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


class Compositor:
    """Blend rendered crops into plates, frame after frame (the colour match carries over).

    Args:
        placement: where the crop goes.
        colour_match: add the smoothed plate-minus-render colour difference to the render.
    """

    def __init__(self, placement: Placement, colour_match: bool = True):
        self.placement = placement
        self.colour_match = colour_match
        # the crop's outermost pixels (centre half a pixel in) are the plate's own
        self.border = smoothstep((placement.border_distance() - 0.5) / placement.feather_width())[..., None]
        self.offset = np.zeros(3, dtype=np.float32)
        self._frames = 0

    def _masks(self, person: np.ndarray, plate_person: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Crop-space ``(S, S)`` softened person union and the "both show the person" mask."""
        import cv2

        s = person.shape[0]
        person = np.asarray(person, dtype=np.float32)
        union, both = person, person > 0.5
        if plate_person is not None:
            plate_person = np.asarray(plate_person, dtype=np.float32)
            if plate_person.shape[0] != s:
                plate_person = cv2.resize(plate_person, (s, s), interpolation=cv2.INTER_LINEAR)
            union = np.maximum(union, plate_person)
            both = both & (plate_person > 0.5)
        kernel = _soft_kernel(s)
        union = cv2.dilate(np.clip(union, 0.0, 1.0), kernel)
        return cv2.GaussianBlur(union, kernel.shape[::-1], 0), both

    def person_union(self, person: np.ndarray, plate_person: np.ndarray | None) -> np.ndarray:
        """``(h, w)`` where the render or the plate shows the person over the ROI, softened.

        Args:
            person: ``(S, S)`` the render's person opacity in [0, 1].
            plate_person: ``(M, M)`` the plate's person mask in [0, 1] (crop space), or ``None``.
        """
        return self.placement.warp(self._masks(person, plate_person)[0])

    def weights(self, person: np.ndarray, plate_person: np.ndarray | None) -> np.ndarray:
        """``(h, w, 1)`` blend weight in [0, 1] of the render over the plate in the ROI
        (:meth:`person_union` feathered at the crop's sides inside the frame)."""
        return self.person_union(person, plate_person)[..., None] * self.border

    def compose(self, plate: np.ndarray, render: np.ndarray, person: np.ndarray,
                plate_person: np.ndarray | None = None) -> np.ndarray:
        """One output frame.

        The masks and the colour match are worked out in crop space (the render's pixels), then
        colour and weight are resampled onto the frame in one warp.

        Args:
            plate: ``(H, W, 3)`` uint8 full frame (not modified).
            render: ``(S, S, 3)`` uint8 or float in [0, 1] rendered crop.
            person: ``(S, S)`` float the render's person opacity.
            plate_person: ``(M, M)`` the plate's person mask in crop space (``None``: unknown).
        Returns:
            ``(H, W, 3)`` uint8.
        """
        import cv2

        x_lo, y_lo, x_hi, y_hi = self.placement.roi
        rgb = np.asarray(render)
        if rgb.dtype != np.uint8:
            rgb = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
        union, both = self._masks(person, plate_person)
        if self.colour_match:
            offset = self._update_offset(rgb, self.placement.unwarp(plate, rgb.shape[0]), both)
            rgb = cv2.add(rgb, tuple(float(v) * 255.0 for v in offset) + (0.0,))  # saturating
        weight = self.placement.warp(union)[..., None] * self.border  # (h, w, 1) float32
        weight = np.ascontiguousarray(weight[..., 0])
        out = plate.copy()
        out[y_lo:y_hi, x_lo:x_hi] = cv2.blendLinear(self.placement.warp(rgb), np.ascontiguousarray(
            plate[y_lo:y_hi, x_lo:x_hi]), weight, 1.0 - weight)
        return out

    def _update_offset(self, rgb: np.ndarray, plate_crop: np.ndarray, both: np.ndarray) -> np.ndarray:
        """The smoothed per-channel plate-minus-render difference (in [0, 1] units) where both
        show the person (crop space: ``rgb``, ``plate_crop (S, S, 3)`` uint8, ``both (S, S)`` bool)."""
        import cv2

        mask = both.astype(np.uint8)
        if cv2.countNonZero(mask) >= 64:
            diff = (np.subtract(cv2.mean(plate_crop, mask)[:3], cv2.mean(rgb, mask)[:3]) / 255.0)
            diff = diff.clip(-COLOUR_LIMIT, COLOUR_LIMIT)
            keep = COLOUR_SMOOTHING if self._frames else 0.0
            self.offset = (keep * self.offset + (1.0 - keep) * diff).astype(np.float32)
            self._frames += 1
        return self.offset


def seam_step(frame: np.ndarray, placement: Placement, positions: np.ndarray | None = None,
              strip: int = 3) -> float:
    """Mean absolute colour step (0-255 levels) across the crop's sides inside the frame.

    For each position along a side, the mean colour of a ``strip``-pixel band just outside the
    crop is compared with that of a band just inside the feather (``feather_width`` in): a
    render that does not match its plate shows up as a step here, on top of the source's own
    gradient over the same distance (measure the source frame the same way to compare).

    Args:
        frame: ``(H, W, 3)`` uint8.
        positions: ``(h, w)`` bool over the ROI selecting where along the sides to measure (e.g.
            where the person crosses the border); ``None``: everywhere.
    Returns:
        the mean step, or NaN when no side lies inside the frame.
    """
    x0, y0, side = placement.box
    w, h = placement.frame_size
    x_lo, y_lo, x_hi, y_hi = placement.roi
    depth = int(round(placement.feather_width()))
    img = frame.astype(np.float32)
    steps: list[np.ndarray] = []
    sel = np.ones((y_hi - y_lo, x_hi - x_lo), bool) if positions is None else positions
    # (edge pixel index, inward direction, axis); axis 1: a vertical side (left/right)
    sides = [(int(round(x0)), 1, 1), (int(round(x0 + side)) - 1, -1, 1),
             (int(round(y0)), 1, 0), (int(round(y0 + side)) - 1, -1, 0)]
    for edge, inward, axis in sides:
        limit = w if axis == 1 else h
        outer = [edge - inward * (k + 1) for k in range(strip)]
        inner = [edge + inward * (depth + k) for k in range(strip)]
        if min(outer + inner) < 0 or max(outer + inner) >= limit:
            continue  # this side is at the frame's edge: nothing outside to blend into
        if axis == 1:
            span = slice(y_lo, y_hi)
            a, b = img[span][:, outer].mean(1), img[span][:, inner].mean(1)  # (h, 3)
            mask = sel[:, min(max(inner[0] - x_lo, 0), sel.shape[1] - 1)]
        else:
            span = slice(x_lo, x_hi)
            a, b = img[outer][:, span].mean(0), img[inner][:, span].mean(0)  # (w, 3)
            mask = sel[min(max(inner[0] - y_lo, 0), sel.shape[0] - 1)]
        if mask.any():
            steps.append(np.abs(a - b)[mask].mean(1))
    return float(np.concatenate(steps).mean()) if steps else float("nan")
