"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user: a file, a shape, a config. The message names the problem and the fix."""


def require(cond: bool, message: str) -> None:
    if not cond:
        raise UserError(message)


def read_json(path: str, what: str, fix: str):
    """The parsed JSON file at ``path``; a missing file, a folder or text that is not JSON is one UserError
    naming ``what`` the file should be and ending in ``fix``."""
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}; {fix}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a {what} file; {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); {fix}") from None


def warn(message: str) -> None:
    """A user-facing warning: one line on stderr (not Python's warnings machinery, which filters may hide)."""
    import sys

    print(f"jaxvoc: warning: {message}", file=sys.stderr)
