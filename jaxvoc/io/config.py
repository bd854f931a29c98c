"""Reading the JSON files jaxvoc takes (configs, checkpoint metadata) with one-line errors."""

from __future__ import annotations

from jaxvoc.errors import UserError


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
