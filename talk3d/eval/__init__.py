"""Evaluation of fitted avatars: metrics, suites, plots, side-by-side video, report.

Entry point: :func:`talk3d.eval.report.evaluate` with :class:`talk3d.eval.report.EvalConfig`.
Submodules are imported lazily by their users (this package imports nothing heavy).
"""
