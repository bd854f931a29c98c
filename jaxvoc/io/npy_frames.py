"""A .npy mel [n_mels, T] (or [1, n_mels, T]) read by frames: ``NpyFrames(path)[a:b]`` -> float32 [b - a, n_mels],
reading only those frames from the file (positioned reads, no memory map), so that a mel of any length is
synthesized in the memory of one window (``jaxvoc synth --window``)."""

from __future__ import annotations

import os

import numpy as np

from jaxvoc.errors import UserError

CHECK_FRAMES = 65536  # frames per read when scanning a file for NaN / Inf


class NpyFrames:
    def __init__(self, path: str, num_mels: int):
        self.path = path
        try:
            with open(path, "rb") as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(f)
                self.offset = f.tell()
        except (ValueError, OSError, EOFError) as e:
            raise UserError(f"cannot read {path} as a .npy array ({str(e).splitlines()[0][:120]})") from None
        if not np.issubdtype(dtype, np.number) or dtype.hasobject:
            raise UserError(f"{path} is not a numeric array; give a mel [n_mels, T]")
        if len(shape) == 3 and shape[0] == 1:
            shape = shape[1:]
        if len(shape) != 2:
            raise UserError(f"{path} has shape {shape}; a mel must be [n_mels, T] or [1, n_mels, T]")
        if shape[0] != num_mels:
            raise UserError(f"{path} has {shape[0]} mel bands, the model takes {num_mels}; "
                            f"give a mel of shape [{num_mels}, T]")
        if shape[1] < 1:
            raise UserError(f"{path} has no frames")
        self.num_mels, self.frames = shape
        self.fortran = fortran
        self.dtype = dtype
        if os.path.getsize(path) < self.offset + self.frames * self.num_mels * dtype.itemsize:
            raise UserError(f"{path} is shorter than its header says; the file is truncated")

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, sl: slice) -> np.ndarray:
        a, b, step = sl.indices(self.frames)
        assert step == 1
        n, M, isz = max(0, b - a), self.num_mels, self.dtype.itemsize
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if self.fortran:  # frames contiguous
                raw = os.pread(fd, n * M * isz, self.offset + a * M * isz)
                out = np.frombuffer(raw, self.dtype).reshape(n, M)
            else:  # band rows contiguous
                out = np.empty((M, n), self.dtype)
                for m in range(M):
                    raw = os.pread(fd, n * isz, self.offset + (m * self.frames + a) * isz)
                    out[m] = np.frombuffer(raw, self.dtype)
                out = out.T
        finally:
            os.close(fd)
        return np.ascontiguousarray(out, dtype=np.float32)

    def check_finite(self) -> None:
        for a in range(0, self.frames, CHECK_FRAMES):
            if not np.all(np.isfinite(self[a:a + CHECK_FRAMES])):
                raise UserError(f"{self.path} contains NaN or Inf; give a finite log-mel")


def npy_frames(path: str) -> int | None:
    """The frame count of a .npy mel from its header alone (None when the header cannot be read; the full
    reader gives the error)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape = read(f)[0]
        return int(shape[-1]) if len(shape) in (2, 3) else None
    except (ValueError, OSError, EOFError):
        return None
