"""Files written whole: what every output of the library (checkpoints, videos, meshes, renders, metrics) is
written through, so that an interrupted, killed or failed write never leaves a part of a file at its name.

- :class:`PendingFile` / :func:`atomic_path`: the file is written to a hidden temporary file in the target's own
  folder (``.STEM.PID.TOKEN.tmp.SUFFIX``: the suffix kept, so writers that choose a format by it still do), flushed
  to disk, renamed over the target and the folder synced. Before the rename the target is the previous file, or
  nothing; on any error, ``KeyboardInterrupt`` included, the temporary file is removed and an ``OSError`` names
  the target. A process killed by SIGKILL leaves only a hidden temporary file, swept by the next writer.
- :func:`probe_folder`: the folder made and a small file written and synced in it, so that a read-only folder or
  a full disk fails before minutes of work, naming the folder.
- :func:`hold`: one writer per output across processes (``flock`` on a hidden lock file beside it, released when
  the process ends, even by SIGKILL); a second writer is refused at once, naming the process that holds it.
- :func:`atomic_folder` / :func:`remove_folder`: a folder of files written whole, the same way: filled as a hidden
  temporary folder (``.NAME.PID.TOKEN.tmpdir``), then renamed into place, the folder there before renamed aside and
  only then removed; a killed writer leaves the previous folder whole and a hidden temporary, swept by the next.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

__all__ = [
    "OutputBusyError",
    "PendingFile",
    "atomic_folder",
    "atomic_path",
    "fsync_folder",
    "hold",
    "is_temporary",
    "lock_file",
    "probe_folder",
    "remove_folder",
    "sweep_folder_temporaries",
    "write_atomic",
]

PROBE_BYTES = 4096  # one filesystem block: a full disk refuses it
_TEMPORARY = re.compile(r"\.\d+(\.[0-9a-f]+)?\.tmp(\.[^.]*)?$")  # ours, and the checkpoints of older versions
# A temporary folder: ".tmpdir", never ".tmp", so that the sweeps of temporary files (hold, a run folder's) never
# meet a folder, which they would fail to unlink.
_FOLDER_TEMPORARY = re.compile(r"\.(?P<name>.+)\.\d+\.[0-9a-f]+\.tmpdir")


class OutputBusyError(RuntimeError):
    """An output (a file, a run folder) another process is writing: refused rather than written by two."""


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of :class:`PendingFile`'s temporary files (a writer's, or a killed writer's)."""
    return bool(_TEMPORARY.search(name))


def _temporaries(path: Path) -> list[Path]:
    """The temporary files of writers of ``path`` (in its folder)."""
    mine = re.compile(rf"\.{re.escape(path.stem)}\.\d+\.[0-9a-f]+\.tmp{re.escape(path.suffix)}")
    return [p for p in path.parent.glob(f".{path.stem}.*.tmp{path.suffix}") if mine.fullmatch(p.name)]


class PendingFile:
    """``path`` being written: write :attr:`temporary` (created empty, in ``path``'s folder), then :meth:`commit`
    renames it over ``path``, or :meth:`discard` removes it. ``what`` names the file in errors (an argument
    name: "out", "checkpoint")."""

    def __init__(self, path: str | os.PathLike, what: str = "out") -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"{what}: expected a file path, got {type(path).__name__}")
        self.path, self.what = Path(path), what
        name = f".{self.path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{self.path.suffix}"
        self.temporary = self.path.with_name(name)
        try:  # exclusive, and with the permissions the caller's umask gives any new file
            os.close(os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as error:
            raise _named(error, f"{what}: cannot write {self.path}") from error

    def commit(self) -> Path:
        """The temporary file synced and renamed over ``path``; returns ``path``."""
        try:
            descriptor = os.open(self.temporary, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            os.replace(self.temporary, self.path)
        except BaseException as error:
            self.discard()
            if isinstance(error, OSError):
                raise _named(error, f"{self.what}: could not write {self.path}") from error
            raise
        fsync_folder(self.path.parent)
        return self.path

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, what: str = "out") -> Iterator[Path]:
    """A temporary path to write ``path``'s content to; renamed over ``path`` when the block ends without an error,
    removed when it raises (see the module docstring).

        with atomic_path("out/mesh.ply") as temporary:
            temporary.write_bytes(data)
    """
    pending = PendingFile(path, what)
    try:
        yield pending.temporary
    except BaseException as error:
        pending.discard()
        if isinstance(error, OSError) and not str(error).startswith(f"{what}: "):
            raise _named(error, f"{what}: could not write {pending.path}") from error
        raise
    pending.commit()


def write_atomic(path: str | os.PathLike, data: bytes | str, what: str = "out") -> Path:
    """``data`` (text as UTF-8) written whole to ``path``; returns the path."""
    with atomic_path(path, what) as temporary:
        temporary.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def _named(error: OSError, context: str) -> OSError:
    return OSError(error.errno, f"{context} ({error.strerror or error})")


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (not possible everywhere: then the rename stands as it is)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def probe_folder(folder: str | os.PathLike, what: str = "out") -> Path:
    """``folder``, made if needed and probed: a file of :data:`PROBE_BYTES` written, synced and removed. A
    read-only folder, a file in the way or a full disk raises an ``OSError`` naming ``what`` and the folder."""
    folder = Path(folder)
    probe = folder / f".probe.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * PROBE_BYTES)
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        raise _named(error, f"{what}: cannot write in {folder}") from error
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
    return folder


def lock_file(path: Path, busy: Callable[[str], str]) -> IO[str]:
    """``path`` opened and locked with ``flock`` (exclusive, without waiting), this process's id written in it;
    a held lock raises ``OutputBusyError(busy(holder))``, ``holder`` the id written by the process holding it.
    Closing the returned file releases the lock."""
    import fcntl  # POSIX; imported here so that importing the library works everywhere

    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise OutputBusyError(busy(holder)) from None
        try:  # the file locked is still the one at ``path`` (a releasing holder may have just removed it)
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


@contextlib.contextmanager
def hold(path: str | os.PathLike, what: str = "out") -> Iterator[Path]:
    """``path`` held by this process for writing while the block runs (its folder must exist): a second holder,
    in any process, raises :class:`OutputBusyError` naming the path and the holder. Taking it removes the temporary files
    that killed writers of ``path`` left (no live writer can own one: writers hold the path)."""
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    try:
        handle = lock_file(
            lock, lambda holder: f"{what}: {path} is being written by another process ({holder}); wait, or give another path"
        )
    except OSError as error:
        raise _named(error, f"{what}: cannot write in {path.parent}") from error
    try:
        for stale in _temporaries(path):
            stale.unlink(missing_ok=True)
        yield path
    finally:
        lock.unlink(missing_ok=True)  # while still locked: a writer waiting on this file will see it gone and retry
        handle.close()


def _folder_temporary(path: Path, scratch: Path) -> Path:
    return scratch / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmpdir"


def sweep_folder_temporaries(scratch: str | os.PathLike, pattern: str) -> None:
    """Remove the temporary folders that killed writers of the folders named ``pattern`` (a glob on names, such as
    ``"iteration_*"``) left in ``scratch`` (:func:`atomic_folder`, :func:`remove_folder`). Call it holding those
    folders: a live writer's temporary folder would go too."""
    for stale in Path(scratch).glob(".*.tmpdir"):
        found = _FOLDER_TEMPORARY.fullmatch(stale.name)  # the whole name before .PID.TOKEN: "o", not "o.v2"'s
        if found and fnmatch.fnmatchcase(found["name"], pattern) and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def remove_folder(path: str | os.PathLike, scratch: str | os.PathLike | None = None, what: str = "out") -> None:
    """The folder ``path`` removed: renamed first to a hidden temporary folder in ``scratch`` (default: ``path``'s
    folder; the same filesystem), then deleted there, so that a process killed while deleting never leaves part of
    it at its name (the temporary is :func:`sweep_folder_temporaries`'s)."""
    path = Path(path)
    aside = _folder_temporary(path, path.parent if scratch is None else Path(scratch))
    try:
        os.rename(path, aside)
    except OSError as error:
        raise _named(error, f"{what}: could not remove {path}") from error
    fsync_folder(path.parent)
    shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, what: str = "out", scratch: str | os.PathLike | None = None) -> Iterator[Path]:
    """A new empty folder to write the files of the folder ``path`` into: when the block ends without an error it
    takes ``path``'s place (the folder there before renamed aside, then removed); when it raises, it is removed.
    It is hidden (``.NAME.PID.TOKEN.tmpdir``) in ``scratch`` (default: ``path``'s folder; the same filesystem).
    Call it holding ``path`` (:func:`hold`): the temporary folders that killed writers of ``path`` left are removed
    first. A writer killed at any point leaves at ``path`` the previous folder, whole, except between the two
    renames that swap the folders (microseconds), when there is none. Write the files through :func:`atomic_path`
    (synced), and refuse a ``path`` that is not the caller's own before: what was there is deleted.

        with hold("out/frames"), atomic_folder("out/frames") as folder:
            write_atomic(folder / "00000.png", png)
    """
    path = Path(path)
    scratch = path.parent if scratch is None else Path(scratch)
    sweep_folder_temporaries(scratch, glob.escape(path.name))
    temporary = _folder_temporary(path, scratch)
    try:
        temporary.mkdir()
    except OSError as error:
        raise _named(error, f"{what}: cannot write in {scratch}") from error
    try:
        yield temporary
        _swap_in(temporary, path, scratch, what)
    except BaseException as error:
        shutil.rmtree(temporary, ignore_errors=True)
        if isinstance(error, OSError) and not (error.strerror or "").startswith(f"{what}: "):
            raise _named(error, f"{what}: could not write {path}") from error
        raise


def _swap_in(temporary: Path, path: Path, scratch: Path, what: str) -> None:
    """``temporary`` renamed to ``path``, the folder there before renamed aside first and removed after."""
    aside = None
    if path.is_symlink() or path.exists():
        if path.is_symlink() or not path.is_dir():
            raise OSError(errno.ENOTDIR, f"{what}: {path} is in the way: not a folder")
        aside = _folder_temporary(path, scratch)
        os.rename(path, aside)
    try:
        os.rename(temporary, path)
    except BaseException:
        if aside is not None:  # the previous folder back at its name
            os.rename(aside, path)
        raise
    fsync_folder(path.parent)
    if scratch != path.parent:
        fsync_folder(scratch)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
