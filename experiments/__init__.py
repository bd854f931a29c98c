"""Experiments: run from the repository root as `python -m experiments.<kind>.<name>`; they import the
installed jaxvoc and conversion packages."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")  # the committed speech recordings (data, not test code)


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name)
