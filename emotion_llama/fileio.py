"""Atomic writes: a file either has its old content or its complete new content, never half of it.

What is written gets the permissions any new file gets under the process's umask (``0644``/``0755`` for
the usual ``022``), not the private ``0600``/``0700`` of the temporary files and folders it is written
through, so that results are readable by whoever can read the folder they land in.

The final renames run with SIGINT and SIGTERM held back (see :func:`signals_deferred`): a Ctrl-C during
them takes effect once the outputs are complete, so an interrupted command leaves the old outputs or the
new ones, never a mix.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

_DEFERRED = {signal.SIGINT, signal.SIGTERM}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open``/``mkdir`` give a new file (``0o666``) or folder (``0o777``) under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def _share(path: Path, mask: int) -> None:
    """Give ``path`` (and, for a folder, everything in it) the permissions the umask ``mask`` allows, keeping
    execute bits only where the file already had one."""
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        os.chmod(path, 0o777 & ~mask)
        for child in path.iterdir():
            _share(child, mask)
    else:
        executable = st.st_mode & 0o111
        os.chmod(path, (0o777 if executable else 0o666) & ~mask)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration of the block (main thread only; elsewhere a no-op);
    one that arrived meanwhile is delivered when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if os.path.exists(tmp):
            os.chmod(tmp, default_mode())  # mkstemp makes it 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | os.PathLike, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; it becomes ``path`` (replacing an old one when ``replace``) only
    if the block succeeds, so a reader never sees a half-written folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = path.with_name(f"{tmp.name}.old")
    try:
        yield tmp
        _share(tmp, _umask())  # mkdtemp makes it 0700; some writers (safetensors) make 0600 files
        with signals_deferred():
            if replace and path.exists():
                path.rename(old)
            tmp.rename(path)
            if old.exists():
                shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextmanager
def atomic_files(folder: str | os.PathLike, remove: Iterable[str] = ()) -> Iterator[Path]:
    """Yield a temporary folder inside ``folder``; when the block succeeds, every file written into it
    moves into ``folder`` together (replacing files of the same name; the folder's other files stay), so
    a set of outputs (metrics, predictions, figures) is never left half old, half new, or half written.
    ``remove``: names of files of the set that this run does not write (an earlier run's): deleted in the same
    step, unless written into the temporary folder after all."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".outputs.", suffix=".tmp", dir=folder))
    try:
        yield tmp
        _share(tmp, _umask())
        with signals_deferred():
            written = {item.name for item in tmp.iterdir()}
            for name in remove:
                stale = folder / name
                if name not in written and (stale.is_file() or stale.is_symlink()):
                    stale.unlink()
            for item in sorted(tmp.iterdir()):
                target = folder / item.name
                if item.is_dir() and target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def json_text(value: object, **kwargs) -> str:
    """``value`` as JSON that every reader accepts: a NaN or infinite number (a metric of an empty class, say)
    becomes null, never the bare ``NaN`` that ``json.dumps`` would write."""
    return json.dumps(_finite(value), allow_nan=False, **kwargs)


def _finite(value: object) -> object:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value
