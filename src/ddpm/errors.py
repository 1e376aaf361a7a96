"""The one exception type for errors a user can cause (bad option, missing file, corrupt checkpoint).

The CLI catches it and prints its message as a single line with exit code 2; anything else is a bug.
"""


class DDPMError(Exception):
    """An error caused by user input, reported as one line without a traceback."""
