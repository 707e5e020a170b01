"""Errors that mean "the user can fix this": the command line prints them on one line and
exits with status 2; and :func:`first_line`, how a message quotes an exception it caught."""

__all__ = ["UserError", "DataError", "ConfigError", "DivergenceError", "first_line"]


class UserError(Exception):
    """Bad input from the user: a config value, a path, a checkpoint. The message says what to do."""


class DataError(UserError):
    """Missing, corrupt or unreadable data."""


class ConfigError(UserError):
    """A bad configuration key or value."""


class DivergenceError(Exception):
    """Training produced a non-finite loss or parameter."""


def first_line(e: BaseException) -> str:
    """The first non-empty line of ``str(e)``, stripped; the exception's type name when the
    message is empty. How a one-line error message quotes the exception it caught (a torch or
    YAML error can run to many lines).

    >>> first_line(ValueError("\\n  bad value  \\n(details)")), first_line(KeyError()), first_line(OSError(""))
    ('bad value', 'KeyError', 'OSError')
    """
    for line in str(e).splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__
