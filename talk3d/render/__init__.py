"""Rendering: driving audio -> frames, camera paths, video/depth/alpha/stereo outputs, MPIs.

Entry point: :func:`talk3d.render.driver.render` with a :class:`talk3d.render.config.RenderConfig`.
"""

from talk3d.render.config import RenderConfig, RenderResult

__all__ = ["RenderConfig", "RenderResult"]
