"""Errors that are the user's to fix.

A :class:`UserError` is printed by the CLI as one line (no traceback) and exits non-zero.
Its message says what is wrong and what to do about it.
"""


class UserError(Exception):
    """A problem with the user's input or environment, reported as one line."""


class DatasetError(UserError):
    """A prepared dataset is missing, incomplete or of another format version."""


class CheckpointError(UserError):
    """A run folder or checkpoint is missing, incomplete or of another format version."""
