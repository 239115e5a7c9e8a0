"""The one exception type that the command line turns into a single clear sentence."""


class UserError(Exception):
    """Bad input from a user (a file, a config, a flag): its message is one sentence that names
    the thing and the reason.  ``mailpulse`` prints it and exits with status 2, no traceback."""
