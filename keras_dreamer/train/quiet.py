"""Keeps TensorFlow's native start-up notices off the command's stderr.

TensorFlow's C++ libraries print notices while they load, before any setting
of theirs can hide them (`TF_CPP_MIN_LOG_LEVEL` does not):

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1700000000.000000    1234 port.cc:153] oneDNN custom operations are on. ...
    I0000 00:00:1700000000.000000    1234 cpu_feature_guard.cc:227] This TensorFlow binary ...
    To enable the following instructions: AVX2 ..., rebuild TensorFlow with the ...

and env processes, which import TensorFlow again, print them once each. So
`filtered_stderr()` points file descriptor 2 of the command (inherited by its
child processes) at a pipe read by a small filter process, which drops these
lines and passes every other byte through. A separate process, not a thread,
so a crash's last words (a segfault's traceback) still get through.

Run as a script (`python -I quiet.py`) this module is that filter; it imports
nothing from the package.
"""  # noqa: E501

import contextlib
import os
import re
import signal
import subprocess
import sys

# The notices, matched on whole lines.
NOTICES = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IWE]\d{4} [\d:.]+ +\d+ (port|cpu_feature_guard|util)\.cc:\d+\] .*oneDNN"
    rb"|[IWE]\d{4} [\d:.]+ +\d+ cpu_feature_guard\.cc:\d+\] "
    rb"|To enable the following instructions: .*rebuild TensorFlow)"
)


@contextlib.contextmanager
def filtered_stderr(enabled=True):
    """Drops TensorFlow's native notices from this process's stderr meanwhile.

    Does nothing when `enabled` is False, when TensorFlow is not installed,
    or when the filter process cannot be started.

    Args:
        enabled: filter (True) or leave stderr alone.

    Examples:
        >>> with filtered_stderr():
        ...     print("kept", file=sys.stderr)  # everything else passes
    """
    if not enabled or not _tensorflow_installed():
        yield
        return
    sys.stderr.flush()
    try:
        original = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    try:
        filter_process = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=original,
            stderr=original,
        )
    except (OSError, ValueError):
        os.close(original)
        yield
        return
    os.dup2(filter_process.stdin.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)
        os.close(original)
        filter_process.stdin.close()
        try:  # it ends once every writer (env processes too) has closed the pipe
            filter_process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _tensorflow_installed():
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


def _forward(source, sink):
    """Copies `source` to `sink` (file descriptors), dropping notice lines.

    Output goes on at every line end ("\\n" or "\\r"), so progress lines
    pass through as they come.
    """
    pending = b""
    while True:
        chunk = os.read(source, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = re.split(rb"(?<=[\r\n])", pending)
        kept = b"".join(line for line in lines if not NOTICES.match(line))
        if kept:
            _write_all(sink, kept)
    if pending and not NOTICES.match(pending):
        _write_all(sink, pending)


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data) :]


if __name__ == "__main__":
    # Ctrl-C and `kill` go to the command; this ends when the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _forward(0, 1)
