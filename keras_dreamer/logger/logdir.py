"""The run-directory check shared by `DreamerReportCallback` and `train()`."""

import os


def check_logdir(logdir):
    """Creates `logdir` if needed and checks that a run can write to it.

    Args:
        logdir: the run directory.

    Returns:
        The path, as a string.

    Raises:
        OSError: `logdir` is a file, cannot be created or is not writable
            (the message names the path and the reason).

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "run")
        >>> check_logdir(path) == path and os.path.isdir(path)
        True
        >>> file = os.path.join(path, "file")
        >>> open(file, "w").close()
        >>> check_logdir(file)
        Traceback (most recent call last):
        ...
        NotADirectoryError: logdir '...' exists and is not a directory.
    """
    logdir = os.fspath(logdir)
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise NotADirectoryError(f"logdir {logdir!r} exists and is not a directory.")
    try:
        os.makedirs(logdir, exist_ok=True)
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(f"Cannot create logdir {logdir!r}: {reason}.") from error
    if not os.access(logdir, os.W_OK | os.X_OK):
        raise PermissionError(f"logdir {logdir!r} is not writable.")
    return logdir
