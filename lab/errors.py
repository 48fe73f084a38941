"""Errors that mean "the user asked for something that cannot work".

lab.run prints these as one line (no traceback) and exits with status 2.
"""


class LabError(Exception):
    """A problem with the user's input, config or files, explained in one line."""


class DataNotFoundError(LabError):
    """Dataset files are missing and could not be downloaded."""


class ConfigError(LabError):
    """A config value that cannot work."""


class ResumeError(LabError):
    """resume=/resume_sweep= names a folder that cannot be resumed (not a run, no checkpoint, ...)."""


class NonFiniteLossError(LabError):
    """The training loss became nan or inf: the run stops instead of training on garbage."""
