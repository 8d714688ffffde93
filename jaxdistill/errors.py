"""Errors a user can cause, each naming the file, line or key at fault.

Everything the library raises for bad *input* (configs, data files, workdirs)
derives from `JaxdistillError`; the CLIs print these as one clear message
instead of a traceback.
"""


class JaxdistillError(Exception):
    """Base class for user-facing errors."""


class ConfigError(JaxdistillError, KeyError):
    """A config key is unknown, missing or has an invalid value."""

    def __str__(self):  # KeyError would otherwise repr() the message.
        return str(self.args[0]) if self.args else ''


class DataError(JaxdistillError, ValueError):
    """A data file is missing, empty, malformed or inconsistent."""


class CheckpointMismatchError(JaxdistillError):
    """The workdir holds a checkpoint written with an incompatible config."""


class NonFiniteLossError(JaxdistillError, FloatingPointError):
    """Training produced a NaN or Inf loss."""


class PluginError(JaxdistillError, TypeError):
    """A method, task or model of the user's own (docs/extending.md) breaks
    the library's side of the face: a member missing, a result of the wrong
    kind, a name registered twice."""
