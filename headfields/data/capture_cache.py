"""Decoded captures kept on disk: a split's decoded images, depths, labels and meshes as ``.npy`` arrays that load
memory-mapped, so a capture of thousands of frames decodes once (in parallel) and opens in seconds after.

An entry lives under ``$XDG_CACHE_HOME/headfields/captures`` (default ``~/.cache/headfields/captures``), one
folder a capture folder and split, and is named by them; its ``manifest.json`` holds the size, modification and
change times, inode and device of every source file it was decoded from (images, depths, labels, meshes, the
transforms). A source that changed, appeared or went makes the entry stale: it is decoded anew and replaced, never
read. The change time is what a same-size edit cannot hide: ``cp -p``, ``rsync -t``, ``tar`` and ``touch -r`` put
the modification time back, nothing but the system clock sets the change time (a ``chmod`` or a rename of the file
changes it too: a miss, decoded once more). A source changed within :data:`RACY_NS` of its stat may change again
within the same tick of the file system's clock: its key holds a hash of its contents as well, as git does for its
"racily clean" files. An entry is written in a temporary folder and renamed into place, so a reader never sees
half of one.

An entry is verified before it is read: the manifest carries a checksum of itself, and each array's shape, dtype,
file size, modification and change times and inode as written. An entry that fails (an array edited, truncated,
replaced or gone, even with its modification time put back; a manifest changed by hand) is named in a warning,
decoded anew and replaced, so a bad entry never blocks a later load. (The arrays' bytes are not hashed: that would
read gigabytes at every load the cache exists to spare.)

An entry keeps what the reader computes from the decoding too, so that a load from the cache only maps files:
arrays that depend on the sources alone (the foreground masks) and their summaries (the label codes present) are
part of the decoding; arrays that depend on an argument of the load as well (the images composited over the
background asked) are *derived* arrays, kept with the key they were computed for. A load that asks for another
key computes its array from the cached decoding and puts it in the entry in place of the old one: a load never
gets an array computed for another background.

Only captures whose decoded arrays are large are cached (``CACHE_MIN_BYTES``): a small one decodes faster than
its entry would be checked, and the tests' thousands of tiny captures leave nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import numpy as np

from ..kernels import num_cpu_threads
from .frames import SPLITS

__all__ = ["CACHE_MIN_BYTES", "RACY_NS", "cache_folder", "caches", "clear_capture_cache", "load_or_decode", "parallel_map"]

CACHE_MIN_BYTES = 256 * 2**20  # decoded arrays below this are decoded each time (about 2 s on one core)
_VERSION = 6  # bump when what an entry holds changes: older entries are then stale (6: change times, inodes)
# A source whose change time is this recent when its key is taken is keyed by its contents too: a file system's clock
# ticks every 1-10 ms on Linux before 6.13 (1-2 s on some), so an edit in the same tick would leave every time as it was.
RACY_NS = 2 * 10**9

T = TypeVar("T")
# A derived array: the key it depends on besides the sources (JSON-able), and how it is computed from the decoding.
Derived: TypeAlias = tuple[Any, Callable[[dict[str, np.ndarray]], np.ndarray]]


def parallel_map(fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
    """``[fn(x) for x in items]`` on a thread pool of the process's cores (Pillow's decoders and numpy release the
    GIL), in order; the first error raised is raised."""
    if len(items) < 2 or num_cpu_threads() == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=num_cpu_threads(), thread_name_prefix="headfields-decode") as pool:
        return list(pool.map(fn, items))


def cache_folder() -> Path:
    """Where headfields caches what it computes from inputs (the synthetic videos, decoded captures)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "headfields"


def _entry(root: Path, split: str) -> Path:
    digest = hashlib.sha1(f"{root.resolve()}\0{split}".encode()).hexdigest()[:16]
    return cache_folder() / "captures" / f"{root.name}-{split}-{digest}"


def _sources_key(sources: Sequence[Path], hashed: frozenset[str] = frozenset()) -> list[list]:
    """What identifies the sources' contents without reading them: path, size, modification and change times (ns),
    inode and device; and a hash of the contents of each source changed within :data:`RACY_NS` or named in
    ``hashed`` (those an entry's key holds a hash of: its key is taken the same way at each load)."""
    now = time.time_ns()  # before the stats: a change after it shows as a later change time or a recent one
    key = []
    for path in sources:
        stat = path.stat()
        name = os.path.abspath(path)  # the same key from any working folder
        row = [name, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev]
        if name in hashed or stat.st_ctime_ns > now - RACY_NS:
            row.append(hashlib.sha256(path.read_bytes()).hexdigest())
        key.append(row)
    return key


def _hashed_sources(stored: Any) -> frozenset[str]:
    """The sources whose contents the key of manifest ``stored`` (as read: any JSON) holds a hash of."""
    try:
        return frozenset(row[0] for row in stored["key"]["sources"] if len(row) > 6)
    except (KeyError, TypeError, IndexError):  # no manifest, or not this version's: the keys differ anyway
        return frozenset()


def clear_capture_cache(root: str | os.PathLike, split: str | None = None) -> None:
    """Remove the cached decoding of capture folder ``root`` (of ``split``, or of every split)."""
    root = Path(root)
    for s in [split] if split is not None else SPLITS:
        shutil.rmtree(_entry(root, s), ignore_errors=True)


def load_or_decode(
    root: Path,
    split: str,
    sources: Sequence[Path],
    decode: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
    size_estimate: int,
    cache: bool | None,
    derived: dict[str, Derived] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``decode()``'s arrays and metadata (JSON-able), from the cache when an entry of ``root``'s ``split`` was
    decoded from ``sources`` as they are now; otherwise decoded and, when ``cache`` (None: when
    ``size_estimate`` bytes reach ``CACHE_MIN_BYTES``), written for next time. Cached arrays are memory-mapped
    copy-on-write: pages are read as they are touched, and writing to them changes no file.

    ``derived``: ``{name: (key, compute)}``, arrays computed from the decoded ones (``compute(arrays)``) that depend
    on ``key`` besides the sources; they come back among the arrays, from the entry when it holds them for that
    key, else computed and put in the entry (see the module's docstring)."""
    derived = derived or {}
    if not caches(cache, size_estimate):
        arrays, meta = decode()
        return {**arrays, **{name: compute(arrays) for name, (_, compute) in derived.items()}}, meta
    entry = _entry(root, split)
    manifest = entry / "manifest.json"
    unreadable = None
    try:
        stored = json.loads(manifest.read_text())
    except (FileNotFoundError, NotADirectoryError):
        stored = None  # no entry yet (or no cache folder: a file in its way, said when the entry is written)
    except (OSError, ValueError) as error:
        stored, unreadable = None, str(error)
    key = {"version": _VERSION, "sources": _sources_key(sources, _hashed_sources(stored))}
    if unreadable is not None:
        stored = {"key": key, "unreadable": unreadable}  # verified below: named, then replaced
    if isinstance(stored, dict) and stored.get("key") == key:
        try:
            arrays, meta = _verified(entry, stored)
        except ValueError as error:
            warnings.warn(f"{error}; the capture is decoded anew and the entry replaced", stacklevel=3)
        else:
            kept = stored.get("derived", {})
            missing = {name: d for name, d in derived.items() if name not in kept or kept[name] != _json_key(d[0])}
            return (_add_derived(entry, stored, arrays, missing) if missing else arrays), meta
    arrays, meta = decode()
    arrays.update({name: compute(arrays) for name, (_, compute) in derived.items()})
    keys = {name: _json_key(k) for name, (k, _) in derived.items()}
    return _write_entry(entry, {"key": key, "derived": keys}, arrays, meta), meta


def caches(cache: bool | None, size_estimate: int) -> bool:
    """Whether :func:`load_or_decode` keeps the decoding given ``cache`` and ``size_estimate`` (see there)."""
    return size_estimate >= CACHE_MIN_BYTES if cache is None else cache


def _json_key(key: Any) -> Any:
    """``key`` as the manifest gives it back (tuples as lists), so that a key read compares equal to one asked."""
    return json.loads(json.dumps(key))


def _checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _array_record(path: Path, array: np.ndarray) -> dict[str, Any]:
    """What the manifest holds of an entry's array file: the change time and inode catch an edit (in place or a
    file put in its place) whose size and modification time were put back."""
    stat = path.stat()
    return {
        "shape": list(array.shape),
        "dtype": array.dtype.str,
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
    }


def _verified(entry: Path, stored: dict) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays and metadata of the entry whose manifest is ``stored``, each checked against what was written
    (see the module's docstring); a ValueError naming the file that differs otherwise."""
    manifest = entry / "manifest.json"
    if "unreadable" in stored:
        raise ValueError(f"{manifest}: the capture cache's manifest cannot be read ({stored['unreadable']})")
    body = {k: v for k, v in stored.items() if k != "checksum"}
    if stored.get("checksum") != _checksum(body) or not isinstance(stored.get("arrays"), dict):
        raise ValueError(f"{manifest}: the capture cache's manifest changed since it was written (its checksum differs)")
    arrays = {}
    for name, record in stored["arrays"].items():
        path = entry / f"{name}.npy"
        try:
            arrays[name] = np.load(path, mmap_mode="c")
            found = _array_record(path, arrays[name])
        except (OSError, ValueError) as error:  # gone, truncated, not an array
            raise ValueError(f"{path}: a cached array of the capture cannot be read ({error})") from None
        if found != record:
            differs = ", ".join(f"{k} {found[k]} (written: {record.get(k)})" for k in found if found[k] != record.get(k))
            raise ValueError(f"{path}: a cached array of the capture changed since it was written: {differs}")
    return arrays, stored["meta"]


def _write_entry(entry: Path, head: dict, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """The entry in a temporary folder beside its place, then renamed there (``head``: its key and the derived
    arrays' keys); the arrays come back mapped from it, so the decoded copies can be freed. A cache that cannot
    be written (a full disk, a read-only home) is said in a warning: the capture was decoded all the same."""
    temporary = entry.with_name(f".{entry.name}.{uuid.uuid4().hex}")
    try:
        temporary.mkdir(parents=True)
        records = {}
        for name, array in arrays.items():
            np.save(temporary / f"{name}.npy", array)
            records[name] = _array_record(temporary / f"{name}.npy", np.asarray(array))  # renaming the folder keeps these
        body = {**head, "arrays": records, "meta": meta}
        (temporary / "manifest.json").write_text(json.dumps({**body, "checksum": _checksum(body)}))
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(temporary, entry)
        return {name: np.load(entry / f"{name}.npy", mmap_mode="c") for name in arrays}
    except OSError as error:
        warnings.warn(f"{entry}: the decoded capture could not be cached ({error}); it is decoded at each load", stacklevel=3)
        return arrays
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _add_derived(entry: Path, stored: dict, arrays: dict[str, np.ndarray], missing: dict[str, Derived]) -> dict[str, np.ndarray]:
    """``arrays`` (the entry's, whose manifest is ``stored``) with the derived arrays ``missing`` computed from them
    and put in the entry: each written beside its place and renamed there (a process that maps the old one keeps
    it), then the manifest replaced the same way. Where the entry cannot be written, the computed arrays come back
    all the same."""
    records, keys = dict(stored["arrays"]), dict(stored.get("derived", {}))
    computed = {name: compute(arrays) for name, (_, compute) in missing.items()}
    temporary = entry / f".{uuid.uuid4().hex}"  # the one name each file is written under before it is renamed
    try:
        for name, array in computed.items():
            np.save(temporary.with_suffix(".npy"), array)
            os.replace(temporary.with_suffix(".npy"), entry / f"{name}.npy")  # a rename changes the file's change time
            records[name], keys[name] = _array_record(entry / f"{name}.npy", array), _json_key(missing[name][0])
            computed[name] = np.load(entry / f"{name}.npy", mmap_mode="c")
        body = {"key": stored["key"], "derived": keys, "arrays": records, "meta": stored["meta"]}
        temporary.with_suffix(".json").write_text(json.dumps({**body, "checksum": _checksum(body)}))
        os.replace(temporary.with_suffix(".json"), entry / "manifest.json")
    except OSError as error:
        warnings.warn(f"{entry}: a computed array could not be cached ({error}); it is computed at each load", stacklevel=4)
    finally:
        for suffix in (".npy", ".json"):
            temporary.with_suffix(suffix).unlink(missing_ok=True)
    return {**arrays, **computed}
