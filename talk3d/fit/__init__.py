"""Fitting an avatar: presets/config, training batches, the training loop, checkpoints and runs.

Entry points: :func:`talk3d.fit.config.preset`, :func:`talk3d.fit.trainer.fit`,
:func:`talk3d.fit.checkpoint.load_run`.
"""
