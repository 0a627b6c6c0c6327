"""Write a project directory atomically and safely.

The tree is built in a temporary sibling of the output directory and renamed onto it at the end (a
failed build leaves nothing). Nothing of the user's is ever removed:

* a missing path or an empty directory: the new tree takes its place;
* a previous flexllm project (its ``marker`` file, ``flexllm_build.json``, is present): replaced whole;
* anything else (a file, a directory with other files): refused with :class:`OutputDirError`, unless
  ``force`` -- then the project's files are moved into the directory and every existing entry is kept
  (an entry the project would overwrite is refused, naming it).

A lock (``fcntl.flock`` on ``.<name>.lock`` next to the output) makes a second build to the same
directory fail at once, naming the directory. Directories get the mode the umask gives (``mkdtemp``
alone would leave them 0700).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from .config import ConfigError


class OutputDirError(ConfigError):
    pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def owned_entries(out: Path, marker: str) -> Optional[set]:
    """Top-level names the previous project at ``out`` wrote (its marker's ``entries``; all of them when an
    older marker does not list them), or None when ``out`` is not a project."""
    path = Path(out) / marker
    if not path.is_file():
        return None
    try:
        listed = json.loads(path.read_text()).get("entries")
    except (ValueError, OSError, AttributeError):
        listed = None
    names = {p.name for p in Path(out).iterdir()}
    return names if not isinstance(listed, list) else (set(listed) | {marker}) & names


def check_output_dir(out: Path, marker: str, force: bool = False) -> str:
    """How ``out`` would be written: ``new`` (missing or empty), ``replace`` (a previous project, nothing
    else in it) or ``merge`` (a previous project with files of the user's, or ``force`` on a non-empty
    directory: the user's entries stay). Raises OutputDirError otherwise."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputDirError(f"output path {out} exists and is not a directory; flexllm never overwrites it "
                             "(choose another --out)")
    if not out.exists():
        return "new"
    try:
        entries = sorted(p.name for p in out.iterdir())
    except PermissionError:
        raise OutputDirError(f"output directory {out} is not readable") from None
    if not entries:
        return "new"
    owned = owned_entries(out, marker)
    if owned is not None:
        return "replace" if owned == set(entries) else "merge"
    if force:
        return "merge"
    shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
    raise OutputDirError(f"output directory {out} is not empty and is not a flexllm project (no {marker}; holds "
                         f"{shown}); choose another --out, or pass --force to add the project to it (its files "
                         "are kept)")


def _check_writable(parent: Path) -> None:
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"cannot create the output's parent directory {parent}: {e.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputDirError(f"output directory's parent {parent} is not writable")


@contextlib.contextmanager
def output_lock(out: Path):
    """Exclusive lock for building ``out`` (fails at once if another build holds it)."""
    import fcntl

    lock_path = out.parent / f".{out.name}.lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise OutputDirError(f"another flexllm build is writing {out} (lock {lock_path}); wait for it to "
                                     "finish or choose another --out") from None
            raise
        try:        # the lock file may have been unlinked by the previous holder: lock the current one
            if os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(out: Path, marker: Optional[str] = None, force: bool = False):
    """Yield a temporary sibling of ``out`` to fill; on success it takes the place of ``out`` as the
    module docstring says; on any error it is removed and ``out`` is untouched. Without ``marker`` (hls4ml's
    writer: its OutputDir is its own) an existing ``out`` is replaced whole."""
    out = Path(os.path.abspath(out))
    mode = check_output_dir(out, marker, force) if marker else ("replace" if out.exists() else "new")
    _check_writable(out.parent)
    with output_lock(out):
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        os.chmod(tmp, 0o777 & ~_umask())
        try:
            yield tmp
            mode = check_output_dir(out, marker, force) if marker else mode     # unchanged since the start?
            if not out.exists():
                os.replace(tmp, out)
            elif marker and (mode in ("merge", "new") or _holds_cwd(out)):
                # an existing directory keeps its inode (and mode, and anyone's working directory in it):
                # the entries move into it
                _merge(tmp, out, (owned_entries(out, marker) if marker else None) or set())
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
                os.replace(out, old / "prj")
                os.replace(tmp, out)
                shutil.rmtree(old)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _holds_cwd(out: Path) -> bool:
    try:
        cwd = Path(os.getcwd()).resolve()
    except FileNotFoundError:
        return False
    return cwd == out.resolve() or out.resolve() in cwd.parents


def _merge(tmp: Path, out: Path, owned: set) -> None:
    """Replace the ``owned`` entries of ``out`` by the entries of ``tmp``, keeping every other entry;
    refuse before changing anything if a new entry would overwrite one that is not owned."""
    clashes = sorted(p.name for p in tmp.iterdir()
                     if p.name not in owned and ((out / p.name).exists() or (out / p.name).is_symlink()))
    if clashes:
        raise OutputDirError(f"the files of {out} are kept, but the project would overwrite "
                             f"{', '.join(clashes)}; move them or choose another --out")
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    for name in sorted(owned):
        os.replace(out / name, old / name)
    for p in sorted(tmp.iterdir()):
        os.replace(p, out / p.name)
    tmp.rmdir()
    shutil.rmtree(old)
