"""The one exception type that reaches users as a single clear line."""


class GenforgeError(Exception):
    """Bad input or an impossible request: the CLI prints the message alone and exits non-zero.

    Raise it with a message that names the problem and, where useful, the fix:
    ``GenforgeError(f"{path}: not a PNG image (truncated or corrupt)")``.
    """
