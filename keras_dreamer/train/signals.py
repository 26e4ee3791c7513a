"""Stopping the command on SIGINT (Ctrl-C) and SIGTERM (`kill`).

Both signals raise `KeyboardInterrupt` in the main thread, so `fit` unwinds
the same way for either: the callbacks write what is pending, the collector
stops, and the command exits with the signal's code (`EXIT_CODES`). Python's
default SIGTERM would end the process at once, cutting a JSONL line or a
checkpoint being written; this handler lets them finish.

A `KeyboardInterrupt` can be swallowed where it lands: a finalizer, a
native library's callback, or an import guarded by a bare `except` (TensorFlow
and Keras run many while they load and trace). The run then went on as if
nothing happened. So the signal is remembered, and until the command starts
unwinding (`acknowledge()`), a watcher thread delivers it again every
`REPEAT_SECONDS`; `check()` also raises it at every step boundary.
"""

import atexit
import contextlib
import os
import signal
import sys
import threading

# The exit codes of a command stopped by a signal: 128 + the signal number,
# as a shell reports them.
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_installed = []
REPEAT_SECONDS = 1.0
_exit_code = []


class Interrupts:
    """Turns SIGINT and SIGTERM into `KeyboardInterrupt` while installed.

    Args:
        signums: the signals to handle.

    Examples:
        >>> import os, time
        >>> interrupts = Interrupts()
        >>> with interrupts.installed():
        ...     try:
        ...         os.kill(os.getpid(), signal.SIGTERM)
        ...         time.sleep(5)  # the handler interrupts it
        ...     except KeyboardInterrupt:
        ...         interrupts.acknowledge()
        ...         print("stopping")
        stopping
        >>> interrupts.exit_code()
        143
    """

    def __init__(self, signums=(signal.SIGINT, signal.SIGTERM)):
        self.signums = tuple(signums)
        self.received = None
        self.pending = threading.Event()
        self.acknowledged = threading.Event()

    def _handle(self, signum, frame):
        del frame
        if self.acknowledged.is_set():
            return  # already stopping: let the cleanup finish
        if self.received is None:
            self.received = signum
            threading.Thread(
                target=self._repeat, name="keras-dreamer-interrupt", daemon=True
            ).start()
        self.pending.set()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def _repeat(self):
        """Delivers the signal again until the command acknowledges it."""
        while not self.acknowledged.wait(REPEAT_SECONDS):
            if self not in _installed:
                return
            signal.raise_signal(self.received)

    def acknowledge(self):
        """Marks the interrupt as taken: the run is unwinding; no more repeats.

        Further signals are ignored from then on, so the callbacks can write
        what is pending and the collector can stop.
        """
        if self.pending.is_set():
            self.acknowledged.set()

    @contextlib.contextmanager
    def installed(self):
        """Installs the handlers meanwhile (main thread only; else a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in self.signums}
        _installed.append(self)
        try:
            yield self
        finally:
            _installed.remove(self)
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def check(self):
        """Raises `KeyboardInterrupt` if a signal came (again, if it was swallowed)."""
        if self.pending.is_set() and not self.acknowledged.is_set():
            raise KeyboardInterrupt(signal.Signals(self.received).name)

    def exit_code(self):
        """The command's exit code for the signal received (130 if none)."""
        return EXIT_CODES.get(self.received, 130)


def check():
    """Raises `KeyboardInterrupt` if an installed `Interrupts` got a signal.

    Called at every train step boundary (see `keras_dreamer.train.job`), so
    an interrupt swallowed somewhere still stops the run.

    Examples:
        >>> check()  # nothing installed, nothing received
    """
    for interrupts in _installed:
        interrupts.check()


def acknowledge():
    """Marks a received signal as taken by every installed `Interrupts`.

    Examples:
        >>> acknowledge()  # nothing installed: a no-op
    """
    for interrupts in _installed:
        interrupts.acknowledge()


def exit_after_cleanup(code):
    """Ends the process with `code` once the exit handlers ran, skipping teardown.

    For a run stopped by a signal, after it unwound: its logs are written
    and closed, its env processes stopped, its checkpoint untouched. JAX's
    runtime can crash (SIGSEGV) while the interpreter tears its modules down
    after an interrupted step; this handler, registered when this module is
    imported (before the backends register theirs, so it runs after them),
    flushes stdout and stderr and exits with `code` instead.

    Args:
        code: the exit code (`Interrupts.exit_code()`).

    Examples:
        >>> _exit_code.clear()  # what a run that was not interrupted has
    """
    _exit_code[:] = [int(code)]


@atexit.register
def _exit_if_interrupted():
    if not _exit_code:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(_exit_code[0])
