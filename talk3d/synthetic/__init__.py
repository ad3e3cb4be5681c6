"""Ground-truth synthetic talking head for the demo and for tests.

A textured FaceMesh bust built from ``skimage.data.astronaut()``, rendered by a small torch
z-buffer rasteriser, driven by known head poses, a speech-like audio signal (mouth opening
follows its loudness) and blinks. See ``docs/synthetic.md``.

    from talk3d.synthetic import SyntheticConfig, make_clip
    clip = make_clip("sample", SyntheticConfig(seconds=12))
    clip.poses(), clip.mouth(), clip.view_frame(30.0, 0)
    clip.scene().render(10, yaw=-30.0).rgb
"""

from talk3d.synthetic.clip import (
    GroundTruth,
    SyntheticClip,
    SyntheticConfig,
    SyntheticScene,
    ground_truth,
    load_clip,
    make_clip,
    view_name,
)
from talk3d.synthetic.raster import Fragments, rasterize
from talk3d.synthetic.scene import Rendered

__all__ = [
    "Fragments", "GroundTruth", "Rendered", "SyntheticClip", "SyntheticConfig", "SyntheticScene",
    "ground_truth", "load_clip", "make_clip", "rasterize", "view_name",
]
