"""Errors that mean "the user can fix this": the command line prints them on one line and
exits with status 2."""


class UserError(Exception):
    """Bad input from the user: a config value, a path, a checkpoint. The message says what to do."""


class DataError(UserError):
    """Missing, corrupt or unreadable data."""


class ConfigError(UserError):
    """A bad configuration key or value."""


class DivergenceError(Exception):
    """Training produced a non-finite loss or parameter."""
