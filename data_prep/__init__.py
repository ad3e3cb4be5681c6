"""Video, audio and face processing that turns a talking-head video into a dataset.

Entry point: :func:`talk3d_prep.pipeline.run_prep` with :class:`talk3d_prep.pipeline.PrepConfig`.
Modules: ``video`` (probe + streamed decoding with the bundled ffmpeg), ``track`` (FaceMesh
over the video, gap filling, crop), ``masks`` (segmentation, head/torso labels, background
plate), ``frames`` (second pass writing frames and masks), ``preview`` (contact sheet, pose
plot), ``pipeline`` (steps, resuming, output-folder rules).
"""
