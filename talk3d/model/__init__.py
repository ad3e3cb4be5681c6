"""The avatar model: identity triplane, deltaplane U-Net, volume renderer, super-resolution.

Public API: :class:`ModelConfig`, :class:`Avatar`, :func:`frame_conditioning`,
:func:`conditioning_for`, :class:`LossWeights`, :func:`compute_losses`.
"""

from talk3d.model.avatar import Avatar
from talk3d.model.conditioning import frame_conditioning
from talk3d.model.config import ModelConfig
from talk3d.model.drive import conditioning_for
from talk3d.model.losses import LossWeights, compute_losses

__all__ = ["Avatar", "LossWeights", "ModelConfig", "compute_losses", "conditioning_for", "frame_conditioning"]
