"""User-facing error types.

Every mistake a user can make (a typo in a config, a broken data line, a run directory that is
already taken) raises a subclass of :class:`JumokError` whose message names the file, line or
field and says what was expected. The command line prints that one message and exits non-zero;
anything else is a bug in jumok and keeps its traceback.
"""


class JumokError(Exception):
    """An error caused by user input, reported as one clear message."""


class ConfigError(JumokError):
    """A config file or ``--set`` override is invalid."""


class DataError(JumokError):
    """A data file is missing or malformed."""


class RunDirError(JumokError):
    """A run directory or checkpoint cannot be used as asked."""


class WriteError(JumokError):
    """A file cannot be written (a full disk, no permission); what was on disk is unchanged."""


class DivergedError(JumokError):
    """Training produced a non-finite loss; the files saved before it are kept as they were."""
