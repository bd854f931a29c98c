"""Atomic outputs: every file or folder jaxvoc writes appears whole or not at all. Content goes to a temporary
sibling (same folder, so the final rename is atomic) that replaces the target at the end and vanishes on any
failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
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
            remove_tree(tmp)


def remove_tree(path: str, settle: float = 0.5, timeout: float = 10.0) -> None:
    """Removes the folder ``path`` for good. After a failed write, writer threads still in flight (Orbax's
    tensorstore writes outlive the error they raised) may create files in it during or after the removal; so
    the folder is removed again until it has stayed absent for ``settle`` seconds (at most ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        shutil.rmtree(path, ignore_errors=True)
        gone_at = time.monotonic()
        while not os.path.exists(path) and time.monotonic() - gone_at < settle:
            time.sleep(0.05)
        if not os.path.exists(path) or time.monotonic() > deadline:
            return


class AllOrNothing:
    """Several output files that appear together or not at all (``jaxvoc synth``, ``encode``, ``decode``).

    ``stage(path, suffix)`` gives a temporary path beside ``path`` to write to; ``commit()`` renames every
    temporary to its target. On any failure (while writing, or in a rename, e.g. a folder in the way of the
    last target) the temporaries are removed and the targets already renamed are put back as they were (an
    earlier file restored, a new one removed), so that no output of a failed run remains. Use as a context
    manager: leaving the block by an exception discards, leaving it normally commits.

    ``out_dir`` is checked at once, without creating anything (a path below a file, or a folder that cannot
    be written, fails before any work is done); it is created when the first file is staged and removed again
    on failure when this run created it."""

    def __init__(self, out_dir: str | None = None):
        self.staged: list[tuple[str, str]] = []  # (temporary, target)
        self.created: list[str] = []  # folders this run made, deepest last
        if out_dir is not None:
            check_writable_dir(out_dir)

    def stage(self, path: str, suffix: str = "") -> str:
        folder = os.path.dirname(os.path.abspath(path))
        missing = []
        f = folder
        while not os.path.isdir(f) and f != os.path.dirname(f):
            missing.append(f)
            f = os.path.dirname(f)
        os.makedirs(folder, exist_ok=True)
        self.created += [m for m in reversed(missing) if m not in self.created]
        fd, tmp = tempfile.mkstemp(suffix=suffix, dir=folder, prefix=".tmp-")
        os.close(fd)
        self.staged.append((tmp, path))
        return tmp

    def commit(self) -> None:
        backups: dict[str, str] = {}  # target -> hard link (or copy) of the file it replaces
        done: list[str] = []
        try:
            for tmp, path in self.staged:
                if os.path.isfile(path):
                    folder = os.path.dirname(os.path.abspath(path))
                    backup = os.path.join(folder, f".old-{os.getpid()}-{len(backups)}-{os.path.basename(path)}")
                    try:
                        os.link(path, backup)
                    except OSError:
                        shutil.copy2(path, backup)
                    backups[path] = backup
            for tmp, path in self.staged:
                chmod_from_umask(tmp)
                try:
                    os.replace(tmp, path)
                except OSError as e:  # name the output, not the temporary
                    raise OSError(e.errno, e.strerror, path) from None
                done.append(path)
        except BaseException:
            for path in reversed(done):
                if path in backups:
                    os.replace(backups.pop(path), path)
                elif os.path.isfile(path):
                    os.remove(path)
            self.discard()
            self._remove_created()
            raise
        finally:
            for backup in backups.values():
                if os.path.exists(backup):
                    os.remove(backup)
            self.discard()

    def discard(self) -> None:
        for tmp, _ in self.staged:
            if os.path.exists(tmp):
                os.remove(tmp)
        self.staged = []

    def _remove_created(self) -> None:
        for folder in reversed(self.created):
            try:
                os.rmdir(folder)  # only when empty
            except OSError:
                pass
        self.created = []

    def __enter__(self) -> "AllOrNothing":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
            self._remove_created()


@contextlib.contextmanager
def naming(path: str) -> Iterator[None]:
    """An OSError without a file name (a full disk seen by f.write) gets the folder of ``path``: the one line
    the CLI prints then says where."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, os.path.dirname(os.path.abspath(path))) from None
        raise


def check_writable_dir(path: str) -> None:
    """Raises the OSError that writing into folder ``path`` would raise (a file in the way: ENOTDIR or
    EEXIST; no write permission: EACCES), without creating it."""
    import errno

    path = os.path.abspath(path)
    f = path
    while not os.path.exists(f):
        f = os.path.dirname(f)
    if not os.path.isdir(f):
        code = errno.EEXIST if f == path else errno.ENOTDIR
        raise OSError(code, "a file is in the way of the output folder" if f == path else
                      "a part of the output path is a file, not a folder", path)
    if not os.access(f, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "permission denied", f)
