"""Errors a user can act on."""


class InputError(ValueError):
    """A missing or malformed input named by the user (a flag's file, a column): launchers print
    its one-line message and exit with status 2 instead of a traceback."""


class LostDataError(RuntimeError):
    """The runner returned fewer events than it read (stats.json's `unaccounted_events`): the
    output is incomplete, and saying so beats training on it silently."""
