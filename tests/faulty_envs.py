"""Envs that fail on purpose, importable by env processes.

`FaultyCatch` is the embedded Catch env that, after `fail_after` steps in its
process, raises, hangs or ends its own process, once or again and again.
"""

import os
import time

from keras_dreamer.envs import Catch


class FaultyCatch(Catch):
    """Catch that fails on purpose in `step`.

    Args:
        mode: "raise" (a `ZeroDivisionError`), "hang" (sleeps an hour) or
            "exit" (the process ends with status 3).
        fail_after: steps that work before the first failure, counted from
            the env's construction (so a restarted env works again first).
        fail_every: after the first failure, fail again every this many
            steps (0: only once per env).
        **kwargs: `Catch` options.
    """

    def __init__(self, mode="raise", fail_after=5, fail_every=0, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        self.fail_after = fail_after
        self.fail_every = fail_every
        self.steps_here = 0

    def _step(self, action):
        self.steps_here += 1
        late = self.steps_here - self.fail_after - 1
        if late == 0 or (late > 0 and self.fail_every and late % self.fail_every == 0):
            if self.mode == "raise":
                return 1 / 0
            if self.mode == "hang":
                time.sleep(3600)
            if self.mode == "exit":
                os._exit(3)
        return super()._step(action)


class FaultyResetCatch(Catch):
    """Catch whose `fail_reset`-th reset in its process raises (once).

    Args:
        fail_reset: which reset fails, counted from 1 in the env's process
            (a restarted process counts again from 1).
        **kwargs: `Catch` options.
    """

    def __init__(self, fail_reset=2, **kwargs):
        super().__init__(**kwargs)
        self.fail_reset = fail_reset
        self.resets_here = 0

    def _reset(self, seed):
        self.resets_here += 1
        if self.resets_here == self.fail_reset:
            raise ZeroDivisionError("a reset that fails on purpose")
        return super()._reset(seed)
