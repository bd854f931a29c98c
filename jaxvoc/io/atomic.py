"""Atomic outputs: every file or folder jaxvoc writes appears whole or not at all. Content goes to a temporary
sibling (same folder, so the final rename is atomic) that replaces the target at the end and vanishes on any
failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from jaxvoc.errors import UserError


def chmod_from_umask(path: str) -> None:
    """mkstemp creates files 0600; give a finished output the mode an ordinary open() would (0666 & ~umask)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_file(path: str, suffix: str = "") -> Iterator[str]:
    """Yields a temporary path beside ``path`` (its folder created); when the block succeeds the file there
    gets an ordinary file mode and is renamed to ``path``; otherwise it is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=suffix, dir=folder, prefix=".tmp-")
    os.close(fd)
    try:
        yield tmp
        chmod_from_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(out_dir: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary folder that replaces ``out_dir`` when the block succeeds, and vanishes otherwise."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not overwrite:
        raise UserError(f"{out_dir} exists; remove it or pass --overwrite")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(out_dir) + "-", dir=parent)
    try:
        yield tmp
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
