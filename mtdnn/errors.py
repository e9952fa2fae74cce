"""The one exception type a user can cause: the CLI prints its message and exits non-zero."""


class MTDNNError(Exception):
    """A problem with the user's input (config, data, paths) stated in one paragraph.

    The message must say what was wrong, where (file, line, key) and what to do about it.
    """
