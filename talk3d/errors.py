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


def describe_os_error(exc: OSError) -> str:
    """One line for a file-system error the user can act on (full disk, read-only folder...)."""
    import errno
    import os

    where = exc.filename if exc.filename is not None else "the output"
    folder = os.path.dirname(os.path.abspath(where)) if exc.filename is not None else "the output folder"
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the disk holding '{folder}' while writing '{where}': free some space "
                f"and run the same command again (prep and fit resume from their finished steps)")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write '{where}' ({reason}): choose a writable output folder or fix its permissions"
    return f"file error on '{where}' ({reason}): check the path and run the command again"
