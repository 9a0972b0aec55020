"""Error types for user mistakes.

Every error a user can cause derives from :class:`PQXError` *and* from the builtin that
fits (``ValueError`` or ``TypeError``), so ``except ValueError`` keeps working and the CLI can
turn any of them into one line on stderr with exit code 2.
"""


class PQXError(Exception):
    """Base of every error caused by input or options, not by a bug."""


class InvalidParameter(PQXError, ValueError):
    """A value is out of range or inconsistent; the message names the parameter and the fix."""


class InvalidType(PQXError, TypeError):
    """A value has the wrong type, dtype or dimensionality."""


class DataFileError(PQXError, ValueError):
    """A data file is missing, truncated or malformed; the message names the file."""
