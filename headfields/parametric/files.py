"""Reading official FLAME / SMPL-X model files (``.pkl``, ``.npz``) without chumpy or scipy installed.

Official pickles were written in Python 2 with chumpy arrays (``chumpy.ch.Ch``) and scipy sparse matrices
(``J_regressor``). The unpickler here maps those classes to stubs without importing either library, then turns
every stub into a plain numpy array. Unpickling can run arbitrary code, so any other class outside numpy and a
few builtins is refused; object arrays inside ``.npz`` files go through the same unpickler.
"""

from __future__ import annotations

import _compat_pickle
import copy
import hashlib
import importlib
import io
import os
import pickle
import threading
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

# Classes a model pickle may name: numpy arrays and scalars, and the builtins pickle itself uses for them.
_BUILTINS = {
    ("builtins", name)
    for name in ("object", "dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes")
} | {("builtins", "bytearray"), ("copyreg", "_reconstructor"), ("_codecs", "encode"), ("codecs", "encode")}
_COLLECTIONS = {("collections", "OrderedDict"): OrderedDict}
# numpy moved numpy.core to numpy._core in 2.0; pickles name either.
_NUMPY_CORE = {"multiarray": {"_reconstruct", "scalar"}, "numeric": {"_frombuffer"}}
_NUMPY_TOP = {"ndarray": np.ndarray, "dtype": np.dtype}
_SPARSE_FORMATS = {"csc", "csr", "coo"}  # csc_matrix, csr_array, ... (old scipy.sparse.csc and new scipy.sparse._csc)
# Decoding a model pickle is slow (FLAME's 43 MB: a quarter of a second, its arrays stored as latin-1 text) and a
# process reads the same files again and again (a run's model, its subject's, its evaluation's): the last pickles
# decoded are kept by the digest of their bytes (never stale), and every read returns a copy of its own.
_DECODED_PICKLES = 4
_decoded: OrderedDict[bytes, Any] = OrderedDict()
_decoded_lock = threading.Lock()


class _Stub:
    """Stand-in for a chumpy or scipy.sparse object: keeps the pickled state, converted after loading."""

    origin = ""  # "module.Class" of the pickled object

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        # Objects with __slots__ pickle (dict, slots); chumpy and scipy pickle a plain __dict__.
        self.state = state[0] if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict) else state


class _ChumpyStub(_Stub):
    pass


class _SparseStub(_Stub):
    fmt = ""


def _stub_class(base: type[_Stub], module: str, name: str, **attrs: Any) -> type[_Stub]:
    return type(name, (base,), {"origin": f"{module}.{name}", "__module__": __name__, **attrs})


def _numpy_core(submodule: str, name: str) -> Any:
    for module in (f"numpy._core.{submodule}", f"numpy.core.{submodule}"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"numpy.core.{submodule}.{name} is not available in numpy {np.__version__}")


class _Refused(pickle.UnpicklingError):
    """A pickle naming a class that is not part of a model file (kept apart from corrupt files)."""


class _ModelUnpickler(pickle.Unpickler):
    """Resolves only numpy, a few builtins, and chumpy / scipy.sparse stubs; refuses everything else."""

    def __init__(self, file: Any, path: Path):
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names (copy_reg, __builtin__) as the base class would map them.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module == "chumpy" or module.startswith("chumpy."):
            return _stub_class(_ChumpyStub, module, name)
        if module.startswith("scipy.sparse"):
            fmt, _, kind = name.partition("_")
            if fmt in _SPARSE_FORMATS and kind in ("matrix", "array"):
                return _stub_class(_SparseStub, module, name, fmt=fmt)
        if module == "numpy" and name in _NUMPY_TOP:
            return _NUMPY_TOP[name]
        for sub, names in _NUMPY_CORE.items():
            if module in (f"numpy.core.{sub}", f"numpy._core.{sub}") and name in names:
                return _numpy_core(sub, name)
        if (module, name) in _COLLECTIONS:
            return _COLLECTIONS[(module, name)]
        if (module, name) in _BUILTINS:
            return super().find_class(module, name)
        raise _Refused(
            f"path: {self.path} refers to {module}.{name}, which is not part of a model file "
            "(only numpy arrays, builtins, chumpy arrays and scipy sparse matrices are read: unpickling can run code)"
        )


def _densify(stub: _SparseStub, path: Path) -> np.ndarray:
    state = stub.state if isinstance(stub.state, dict) else {}
    shape = state.get("_shape", state.get("shape"))
    if shape is None or "data" not in state:
        raise ValueError(f"path: {path} holds a {stub.origin} without data or shape (keys: {sorted(state)})")
    data = np.asarray(_convert(state["data"], path))
    dense = np.zeros(tuple(int(s) for s in shape), dtype=data.dtype)
    if stub.fmt == "coo":
        coords = state.get("coords", (state.get("row"), state.get("col")))
        rows, cols = (np.asarray(_convert(c, path), dtype=np.int64) for c in coords)
    else:
        indptr = np.asarray(_convert(state["indptr"], path), dtype=np.int64)
        minor = np.asarray(_convert(state["indices"], path), dtype=np.int64)
        major = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
        rows, cols = (minor, major) if stub.fmt == "csc" else (major, minor)
    np.add.at(dense, (rows, cols), data)  # sparse formats sum duplicate entries
    return dense


def _convert(obj: Any, path: Path) -> Any:
    """Replace every stub in ``obj`` (dicts, lists, tuples) by a numpy array."""
    if isinstance(obj, _ChumpyStub):
        state = obj.state
        if not isinstance(state, dict) or "x" not in state:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(
                f"path: {path} holds a chumpy object {obj.origin} without an 'x' array ({keys}); "
                "only plain chumpy arrays (Ch) can be read without chumpy"
            )
        return np.asarray(_convert(state["x"], path))
    if isinstance(obj, _SparseStub):
        return _densify(obj, path)
    if isinstance(obj, dict):
        return type(obj)((k, _convert(v, path)) for k, v in obj.items())
    if isinstance(obj, list | tuple):
        return type(obj)(_convert(v, path) for v in obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        out = np.empty(obj.shape, dtype=object)  # filled one by one: np.array would stack same-shape elements
        for index, value in np.ndenumerate(obj):
            out[index] = _convert(value, path)
        return out
    return obj


def _unpickle(data: bytes, path: Path) -> Any:
    return _convert(_ModelUnpickler(io.BytesIO(data), path).load(), path)


def _decoded_pickle(data: bytes, path: Path) -> Any:
    """``_unpickle(data, path)``, from the last pickles decoded where ``data`` is one of them: shared with later
    reads, so the caller copies what it returns."""
    key = hashlib.sha256(data).digest()
    with _decoded_lock:
        content = _decoded.get(key)
        if content is not None:
            _decoded.move_to_end(key)
    if content is None:
        content = _unpickle(data, path)
        with _decoded_lock:
            _decoded[key] = content
            while len(_decoded) > _DECODED_PICKLES:
                _decoded.popitem(last=False)
    return content


def _read_npy(raw: bytes, path: Path) -> np.ndarray:
    """One ``.npy`` member: plain arrays through numpy (allow_pickle off), object arrays through the safe unpickler."""
    fp = io.BytesIO(raw)
    version = np.lib.format.read_magic(fp)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:  # version 3.0 headers (utf-8 field names): numpy reads them
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    shape, fortran, dtype = read_header(fp)
    if not dtype.hasobject:
        return np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    array = _unpickle(raw[fp.tell() :], path)
    if not isinstance(array, np.ndarray):
        raise ValueError(f"path: {path} holds an object member that is not an array")
    return array.reshape(shape, order="F" if fortran else "C")


def _read_npz(path: Path, keys: set[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            key = member.removesuffix(".npy")
            if keys is None or key in keys:
                out[key] = _read_npy(archive.read(member), path)
    return out


# What a corrupt pickle or archive raises besides ValueError (a garbled length: MemoryError; a garbled opcode's
# argument: TypeError, IndexError, KeyError).
_CORRUPT = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, TypeError, MemoryError, IndexError, KeyError)


def read_model_file(path: str | Path, keys: set[str] | None = None) -> dict[str, Any]:
    """The arrays of a model file (``.pkl`` pickle read as latin1, or ``.npz``) as a dict of numpy arrays.

    chumpy arrays and scipy sparse matrices (e.g. FLAME's ``J_regressor``) become dense numpy arrays, with
    neither library imported. ``keys`` reads only those members of an ``.npz`` (a pickle is always read
    whole, then filtered). A pickle naming any other class is refused (``pickle.UnpicklingError``): unpickling
    can run code. A corrupt or truncated file raises a ValueError naming it.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: expected a model file path, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: model file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".pkl"):
        raise ValueError(f"path: expected a .pkl or .npz model file, got {path} (extension {path.suffix!r})")
    try:
        if suffix == ".npz":
            return _read_npz(path, keys)
        content = _decoded_pickle(path.read_bytes(), path)
    except _Refused:
        raise  # already names the path and the refused class
    except (*_CORRUPT, ValueError) as error:
        if str(error).startswith("path: "):  # our own messages about the content
            raise
        # The error's type only: a corrupt pickle's message can quote the file's bytes.
        raise ValueError(
            f"path: {path}: cannot read it as a {suffix} model file (corrupt or truncated? {type(error).__name__})"
        ) from error
    if not isinstance(content, dict):
        raise ValueError(f"path: expected {path} to hold a dict of arrays, got {type(content).__name__}")
    return {str(k): copy.deepcopy(v) for k, v in content.items() if keys is None or k in keys}  # the caller's own
