"""talk3d: personal 3D talking avatars from talking-head video.

Stages: ``prep`` (video -> tracked dataset), ``fit`` (dataset -> avatar),
``render`` (audio -> video at any head angle), ``eval`` (quality and speed report).
"""

__version__ = "0.1.0"
