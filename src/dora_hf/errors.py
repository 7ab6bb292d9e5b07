"""User-facing errors.

Anything raised as a :class:`DoraUserError` is a problem with the user's input (a file, a
folder, a configuration key) rather than a bug: the command line prints its message on one
line and exits non-zero, without a traceback.
"""


class DoraUserError(Exception):
    """An input problem the user can fix; the message names the file, key or value at fault."""
