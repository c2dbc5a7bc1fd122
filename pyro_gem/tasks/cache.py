"""Where decoded datasets are kept between runs, and when a cached copy is stale.

Readers decode images once (Omniglot's PNGs, a miniImageNet CSV copy's JPEGs) and keep the
tensors in a cache directory, keyed by a fingerprint of every source file (path, size,
modification time) and of how they were processed: a changed or replaced file, another image
size or a new version of the preprocessing makes another key.

Example::

    key = fingerprint(files, "omniglot", 28)
    path = cache_directory() / "omniglot" / f"processed-{key}.pt"
    if not path.is_file():
        save_atomically({"images": images}, path)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import torch

__all__ = ["FORMAT_VERSION", "cache_directory", "fingerprint", "save_atomically"]

#: Part of every key: raise it when a reader's preprocessing changes.
FORMAT_VERSION = 1


def cache_directory(cache_dir: str | Path | None = None) -> Path:
    """Where unpacked and preprocessed data go: ``cache_dir``, else ``$PYRO_GEM_CACHE``, else
    ``~/.cache/pyro_gem``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("PYRO_GEM_CACHE", Path.home() / ".cache" / "pyro_gem"))


def fingerprint(files: Iterable[Path], *extra) -> str:
    """A short hash of the files' paths, sizes and modification times, the preprocessing
    version and ``extra`` (e.g. the image size)."""
    h = hashlib.sha256(repr((FORMAT_VERSION, extra)).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def save_atomically(obj, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
