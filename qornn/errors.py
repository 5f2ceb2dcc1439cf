"""One exception type for every user-facing problem; the CLI prints it as one line."""


class QornnError(Exception):
    """A problem with the user's input or files, reported without a traceback."""
