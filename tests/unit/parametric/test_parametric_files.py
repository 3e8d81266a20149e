"""read_model_file on pickles that really reference chumpy and scipy.sparse (written with stand-in modules,
then read with both unimportable), on .npz files, and on files it must refuse."""

import os
import pickle
import re
import sys
import types
import zipfile

import numpy as np
import pytest
import scipy.sparse
import torch

from headfields.parametric import load_model, read_model_file

from model_files import flame_arrays, random_parameters, smplx_flame, smplx_flame_output, write_flame

# Real scipy classes, captured before any test hides scipy.
_SPARSE = {"csc": scipy.sparse.csc_matrix, "coo": scipy.sparse.coo_matrix, "csr": scipy.sparse.csr_matrix}


class FakeCh:
    """Mimics chumpy.ch.Ch's pickling: default object protocol, state = __dict__ minus _parents and _cache."""

    __module__, __qualname__ = "chumpy.ch", "Ch"  # pickled under chumpy's name

    def __init__(self, x, **attrs):
        self.x = x
        self._parents = {"not": "pickled"}
        self._cache = {"not": "pickled"}
        self.__dict__.update(attrs)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_parents", "_cache")}


class FakeTranspose(FakeCh):
    """A chumpy operator node: no 'x' in its state."""

    __module__, __qualname__ = "chumpy.reordering", "transpose"

    def __getstate__(self):
        return {"a": self.x, "axes": (1, 0)}


class OldCsc:
    """An old scipy (Python 2 era) csc_matrix as pickled: 'shape' rather than '_shape'."""

    __module__, __qualname__ = "scipy.sparse.csc", "csc_matrix"

    def __init__(self, m):
        self.data, self.indices, self.indptr, self.shape, self.format = m.data, m.indices, m.indptr, m.shape, "csc"


class OldCoo:
    """An old scipy coo_matrix: 'row' and 'col' rather than 'coords'."""

    __module__, __qualname__ = "scipy.sparse.coo", "coo_matrix"

    def __init__(self, m):
        self.row, self.col, self.data, self.shape = m.row, m.col, m.data, m.shape


def _register(monkeypatch, module: str, **classes):
    """Put a stand-in module into sys.modules holding ``classes`` under their names (for pickling only)."""
    fake = types.ModuleType(module)
    for name, cls in classes.items():
        assert (cls.__module__, cls.__qualname__) == (module, name)
        setattr(fake, name, cls)
    monkeypatch.setitem(sys.modules, module, fake)


@pytest.fixture
def chumpy_pickle(monkeypatch):
    """A function pickling ``obj`` as if chumpy (chumpy.ch.Ch) and old scipy (scipy.sparse.csc) were installed."""

    def dump(obj, protocol=2) -> bytes:
        with monkeypatch.context() as m:
            _register(m, "chumpy")
            _register(m, "chumpy.ch", Ch=FakeCh)
            _register(m, "chumpy.reordering", transpose=FakeTranspose)
            _register(m, "scipy.sparse.csc", csc_matrix=OldCsc)
            _register(m, "scipy.sparse.coo", coo_matrix=OldCoo)
            return pickle.dumps(obj, protocol=protocol)

    yield dump


@pytest.fixture
def hide_chumpy_and_scipy(monkeypatch):
    """A function after which, until the test ends, ``import chumpy`` and ``import scipy.sparse`` fail."""

    def hide() -> None:
        for name in ("chumpy", "chumpy.ch", "scipy", "scipy.sparse"):
            monkeypatch.setitem(sys.modules, name, None)
        with pytest.raises(ImportError):
            import chumpy  # noqa: F401
        with pytest.raises(ImportError):
            import scipy.sparse  # noqa: F401, F811

    return hide


def _flame_with_chumpy(arrays: dict) -> dict:
    """The FLAME arrays as the official pickle holds them: chumpy arrays (one nested), a sparse regressor."""
    out = dict(arrays)
    out["v_template"] = FakeCh(arrays["v_template"], label="v_template", dterms=("x",))
    out["shapedirs"] = FakeCh(FakeCh(arrays["shapedirs"]))  # 'x' itself a Ch
    out["posedirs"] = FakeCh(arrays["posedirs"])
    out["weights"] = FakeCh(arrays["weights"])
    out["J_regressor"] = scipy.sparse.csc_matrix(arrays["J_regressor"])  # today's scipy: scipy.sparse._csc
    return out


@pytest.mark.parametrize("protocol", [0, 2])
def test_chumpy_flame_pickle_loads_without_chumpy(tmp_path, chumpy_pickle, hide_chumpy_and_scipy, protocol):
    arrays = flame_arrays()
    data = chumpy_pickle(_flame_with_chumpy(arrays), protocol)
    assert b"chumpy" in data and b"scipy.sparse" in data
    path = tmp_path / "FLAME_NEUTRAL.pkl"
    path.write_bytes(data)
    hide_chumpy_and_scipy()
    loaded = read_model_file(path)
    assert set(loaded) == set(arrays)
    for key, value in arrays.items():
        if isinstance(value, np.ndarray):
            assert isinstance(loaded[key], np.ndarray) and loaded[key].dtype == value.dtype, key
            np.testing.assert_array_equal(loaded[key], value, err_msg=key)
        else:
            assert loaded[key] == value
    assert sys.modules["chumpy"] is None and sys.modules["scipy.sparse"] is None  # nothing was imported


def test_python2_names(tmp_path, chumpy_pickle, hide_chumpy_and_scipy):
    """Pickles written by Python 2 and numpy 1 name copy_reg, __builtin__ and numpy.core.multiarray."""
    arrays = flame_arrays()
    data = chumpy_pickle(_flame_with_chumpy(arrays), 0)
    assert b"copy_reg\n_reconstructor" in data and b"__builtin__\nobject" in data  # Python 3 writes these too
    assert b"numpy._core.multiarray\n" in data
    data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path = tmp_path / "py2.pkl"
    path.write_bytes(data)
    hide_chumpy_and_scipy()
    loaded = read_model_file(path)
    for key in ("v_template", "shapedirs", "J_regressor"):
        np.testing.assert_array_equal(loaded[key], arrays[key], err_msg=key)


def test_old_scipy_paths_and_coo(tmp_path, chumpy_pickle, hide_chumpy_and_scipy):
    rng = np.random.default_rng(0)
    dense = rng.random((5, 7)) * (rng.random((5, 7)) > 0.6)
    path = tmp_path / "m.pkl"
    path.write_bytes(
        chumpy_pickle(
            {"old_csc": OldCsc(_SPARSE["csc"](dense)), "old_coo": OldCoo(_SPARSE["coo"](dense)), "csr": _SPARSE["csr"](dense)}
        )
    )
    hide_chumpy_and_scipy()
    loaded = read_model_file(path)
    for key in ("old_csc", "old_coo", "csr"):
        np.testing.assert_array_equal(loaded[key], dense, err_msg=key)


def test_new_coo_coords_and_duplicates(tmp_path):
    """Today's coo keeps 'coords'; duplicate entries add up, as scipy's todense does."""
    m = scipy.sparse.coo_matrix(([1.0, 2.0, 5.0], ([0, 0, 2], [1, 1, 3])), shape=(3, 4))
    path = tmp_path / "coo.pkl"
    path.write_bytes(pickle.dumps({"m": m, "a": scipy.sparse.csr_array(m)}))
    loaded = read_model_file(path)
    np.testing.assert_array_equal(loaded["m"], m.toarray())
    np.testing.assert_array_equal(loaded["a"], m.toarray())


def test_chumpy_pickle_loads_through_load_model_like_smplx(tmp_path, chumpy_pickle, hide_chumpy_and_scipy):
    """The chumpy pickle through load_model matches smplx on the same model written as a clean pickle."""
    arrays = flame_arrays(4)
    clean = write_flame(tmp_path / "clean", 4, arrays=arrays)
    dirty = write_flame(tmp_path / "chumpy", 4, arrays=arrays)
    (dirty / "FLAME_NEUTRAL.pkl").write_bytes(chumpy_pickle(_flame_with_chumpy(arrays)))
    reference = smplx_flame(clean, 12, 8)
    hide_chumpy_and_scipy()
    model = load_model(dirty, num_shape=12, num_expression=8)
    params = random_parameters(model, 9, 2, 0.6)
    torch.testing.assert_close(model(*params).vertices, smplx_flame_output(reference, *params).vertices, atol=1e-5, rtol=0)


def test_chumpy_object_without_x_is_an_error(tmp_path, chumpy_pickle):
    path = tmp_path / "op.pkl"
    path.write_bytes(chumpy_pickle({"shapedirs": FakeTranspose(np.zeros((2, 3)))}))
    with pytest.raises(ValueError, match=r"^path: .*op\.pkl holds a chumpy object chumpy\.reordering\.transpose without an 'x'"):
        read_model_file(path)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_other_classes_are_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": Exploit()}))
    with pytest.raises(pickle.UnpicklingError, match=r"^path: .*evil\.pkl refers to (posix|nt|os)\.system"):
        read_model_file(path)
    path.write_bytes(pickle.dumps({"x": torch.zeros(2)}))
    with pytest.raises(pickle.UnpicklingError, match=r"refers to torch\."):
        read_model_file(path)
    # The same guard covers object arrays inside .npz files.
    npz = tmp_path / "evil.npz"
    np.savez(npz, ok=np.arange(3), bad=np.array([Exploit()], dtype=object))
    with pytest.raises(pickle.UnpicklingError, match=r"refers to"):
        read_model_file(npz)
    assert read_model_file(npz, keys={"ok"})["ok"].tolist() == [0, 1, 2]


def test_npz(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        "v_template": rng.random((4, 3)),
        "f": np.arange(6, dtype=np.uint32).reshape(2, 3),
        "fortran": np.asfortranarray(rng.random((3, 5))),
    }
    path = tmp_path / "m.npz"
    np.savez_compressed(path, **arrays, names=np.array([{"a": 1}, "b"], dtype=object))
    loaded = read_model_file(path)
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype
        np.testing.assert_array_equal(loaded[key], value)
    assert loaded["names"].tolist() == [{"a": 1}, "b"]
    assert set(read_model_file(path, keys={"f"})) == {"f"}


def test_missing_file_and_extension(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"^path: model file .*absent\.pkl does not exist"):
        read_model_file(tmp_path / "absent.pkl")
    (tmp_path / "model.obj").write_text("v 0 0 0\n")
    with pytest.raises(ValueError, match=r"^path: expected a \.pkl or \.npz model file, got .*model\.obj \(extension '\.obj'\)"):
        read_model_file(tmp_path / "model.obj")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"^path: expected .*list\.pkl to hold a dict"):
        read_model_file(tmp_path / "list.pkl")


def _object_array(shape, values):
    out = np.empty(shape, dtype=object)
    for index, value in zip(np.ndindex(shape), values, strict=True):
        out[index] = value
    return out


@pytest.mark.parametrize("suffix", [".pkl", ".npz"])
def test_object_arrays_of_same_shape_arrays(tmp_path, chumpy_pickle, suffix):
    """Elements that are same-shape arrays (or chumpy arrays) stay elements: no stacking into a deeper array."""
    rng = np.random.default_rng(2)
    parts = [rng.random(3) for _ in range(6)]
    path = tmp_path / f"m{suffix}"
    if suffix == ".pkl":
        grid = _object_array((2, 3), [FakeCh(p) for p in parts])  # stubs turned into arrays on reading
        path.write_bytes(chumpy_pickle({"pair": _object_array((2,), parts[:2]), "grid": grid}))
    else:
        np.savez(path, pair=_object_array((2,), parts[:2]), grid=_object_array((2, 3), parts))
    loaded = read_model_file(path)
    assert loaded["pair"].shape == (2,) and loaded["grid"].shape == (2, 3)
    assert loaded["pair"].dtype == object and loaded["grid"].dtype == object
    for got, expected in zip(loaded["grid"].ravel(), parts, strict=True):
        assert isinstance(got, np.ndarray)
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(loaded["pair"][1], parts[1])


def _truncated_member_npz(path):
    """A well-formed zip whose .npy member stops halfway through the array data."""
    np.savez(path, a=np.arange(100.0))
    with zipfile.ZipFile(path) as archive:
        raw = archive.read("a.npy")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.npy", raw[: len(raw) // 2])


def test_corrupt_files_are_named(tmp_path):
    good = pickle.dumps(flame_arrays(), protocol=2)
    files = {
        "truncated.pkl": lambda p: p.write_bytes(good[: len(good) // 2]),  # pickle data was truncated
        "empty.pkl": lambda p: p.write_bytes(b""),  # EOFError
        "garbage.pkl": lambda p: p.write_bytes(b"\x80\x02this is not a pickle at all"),
        "garbage.npz": lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"),  # BadZipFile
        "member.npz": _truncated_member_npz,  # numpy's ValueError about the array data
    }
    for name, write in files.items():
        path = tmp_path / name
        write(path)
        with pytest.raises(ValueError, match=rf"^path: {re.escape(str(path))}: cannot read"):
            read_model_file(path)
    # Refusing a class stays its own, clear error.
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"v_template": Exploit()}))
    with pytest.raises(pickle.UnpicklingError, match=rf"^path: {re.escape(str(evil))} refers to"):
        read_model_file(evil)


def test_a_pickle_read_again_is_a_copy_and_a_rewritten_one_is_read_anew(tmp_path):
    """Pickles decoded are kept by their bytes' digest: a second read returns equal arrays of its own, a file
    rewritten in place (same size, any modification time) returns the new arrays."""
    path = tmp_path / "m.pkl"
    first = {"v_template": np.full((4, 3), 2.0), "nested": {"a": np.arange(3)}}
    path.write_bytes(pickle.dumps(first, protocol=2))
    a, b = read_model_file(path), read_model_file(path)
    np.testing.assert_array_equal(a["v_template"], first["v_template"])
    assert not np.shares_memory(a["v_template"], b["v_template"])
    a["v_template"] += 1.0  # the caller's copy: the next read is unchanged
    a["nested"]["a"][0] = 7
    c = read_model_file(path)
    np.testing.assert_array_equal(c["v_template"], first["v_template"])
    np.testing.assert_array_equal(c["nested"]["a"], [0, 1, 2])
    stat = path.stat()
    second = {"v_template": np.full((4, 3), 4.0), "nested": {"a": np.arange(3) + 1}}  # bytes of equal length
    path.write_bytes(pickle.dumps(second, protocol=2))
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same size and time: only the bytes differ
    np.testing.assert_array_equal(read_model_file(path)["v_template"], second["v_template"])
