"""The one error a training job reports as a configuration problem."""


class ConfigError(ValueError):
    """A configuration that cannot run (reported in one line, exit code 2).

    Examples:
        >>> import tempfile
        >>> from keras_dreamer.train.job import train
        >>> try:
        ...     train(logdir=tempfile.mkdtemp(), steps=10, steps_per_epoch=3)
        ... except ConfigError as error:
        ...     print(str(error).splitlines()[0])  # gin adds a line naming `train`
        train.steps=10 must be a multiple of train.steps_per_epoch=3.
    """
