"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a file, a shape, a config. The message names the problem and the fix."""


def require(cond: bool, message: str) -> None:
    if not cond:
        raise UserError(message)


def warn(message: str) -> None:
    """A user-facing warning: one line on stderr (not Python's warnings machinery, which filters may hide)."""
    import sys

    print(f"jaxvoc: warning: {message}", file=sys.stderr)
