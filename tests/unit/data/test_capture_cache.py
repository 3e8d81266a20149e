"""The decoded-capture cache (issue 39: frames where the step reads them): a second load maps what the first
decoded, a changed source file is decoded anew (never read stale), small captures leave nothing behind, and a
cache that cannot be written is said and skipped."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import headfields.data.insta_reader as insta_reader
from headfields.data import _insta_decoding, capture_cache, clear_capture_cache, load_insta_dataset
from headfields.data.capture_cache import cache_folder


@pytest.fixture
def capture(tiny_video, tmp_path, monkeypatch):
    """A copy of the tiny synthetic video (its files may be changed) and a cache folder of the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return shutil.copytree(tiny_video[0].root, tmp_path / "capture")


def _entries():
    folder = cache_folder() / "captures"
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def _same(a, b):
    for name in ("images", "masks", "depths", "segmentation", "mesh_vertices", "mesh_faces"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert torch.equal(x, y), name
    assert torch.equal(a.cameras.camera_to_world, b.cameras.camera_to_world)


def test_a_second_load_maps_the_first_s_decoding(capture, monkeypatch):
    plain = load_insta_dataset(capture, "train", cache=False)
    assert _entries() == []
    first = load_insta_dataset(capture, "train", cache=True)
    assert len(_entries()) == 1
    monkeypatch.setattr(_insta_decoding, "decode", lambda *a, **k: pytest.fail("decoded again: the cache was not used"))
    second = load_insta_dataset(capture, "train", cache=True)
    _same(plain, first)
    _same(plain, second)
    assert second.images.data_ptr() != first.images.data_ptr()
    second.images[0, 0, 0] = 7  # copy-on-write: the cached file does not change
    _same(plain, load_insta_dataset(capture, "train", cache=True))


@pytest.mark.parametrize("changed", ["file_path", "depth_path", "seg_mask_path", "mesh_path"])
def test_a_changed_source_file_is_decoded_anew(capture, changed):
    load_insta_dataset(capture, "train", cache=True)
    frames = load_insta_dataset(capture, "train", cache=False)
    meta = json.loads((capture / "transforms_train.json").read_text())
    path = capture / meta["frames"][0][changed]
    if changed == "mesh_path":
        lines = path.read_text().splitlines()
        k = next(i for i, line in enumerate(lines) if line.startswith("v "))
        x, y, z = map(float, lines[k].split()[-3:])
        lines[k] = f"v {x + 0.01} {y} {z}"
        path.write_text("\n".join(lines) + "\n")
    else:
        image = np.array(Image.open(path))
        image[0, 0] = image[0, 0] // 2 + 1
        Image.fromarray(image).save(path)
    os.utime(path, ns=(1, 1))  # even a file whose size and time of change could match: the time differs
    fresh = load_insta_dataset(capture, "train", cache=True)
    _same(load_insta_dataset(capture, "train", cache=False), fresh)
    attribute = {"file_path": "images", "depth_path": "depths", "seg_mask_path": "segmentation", "mesh_path": "mesh_vertices"}
    assert not torch.equal(getattr(fresh, attribute[changed]), getattr(frames, attribute[changed]))


def _put_times_back(path, before):
    """``path``'s access and modification times as ``before`` (an os.stat_result): as ``cp -p``, ``rsync -t``, ``tar``
    and ``touch -r`` leave a file they rewrote."""
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _first_image_stored(capture):
    """The first training image's path, rewritten stored rather than deflated: any pixels take the same bytes."""
    path = capture / json.loads((capture / "transforms_train.json").read_text())["frames"][0]["file_path"]
    Image.fromarray(np.array(Image.open(path))).save(path, compress_level=0)
    return path


def _edit_at_the_same_size(path):
    image = np.array(Image.open(path))
    image[0, 0] = 255 - image[0, 0]
    Image.fromarray(image).save(path, compress_level=0)


def test_a_same_size_source_edit_with_its_time_put_back_is_decoded_anew(capture):
    """The key was path, size and modification time: an image rewritten at the same size with its time put back
    loaded the old pixels from the cache. Its change time tells the edit."""
    path = _first_image_stored(capture)
    before = load_insta_dataset(capture, "train", cache=True)
    old = path.stat()
    _edit_at_the_same_size(path)
    _put_times_back(path, old)
    new = path.stat()
    assert (new.st_size, new.st_mtime_ns, new.st_ino) == (old.st_size, old.st_mtime_ns, old.st_ino)
    fresh = load_insta_dataset(capture, "train", cache=True)
    _same(load_insta_dataset(capture, "train", cache=False), fresh)
    assert not torch.equal(fresh.images, before.images)


def test_a_source_edited_within_a_tick_of_the_clock_is_told_by_its_contents(capture, monkeypatch):
    """A file system's clock ticks every few milliseconds (a second on some): a source changed again within the
    tick of its last change keeps every time. A source changed that recently when its key is taken is keyed by
    its contents too (``RACY_NS``); here the stats the cache sees do not change at all."""
    monkeypatch.setattr(capture_cache, "RACY_NS", 10**15)  # recent however slow the machine: the image is rewritten now
    path = _first_image_stored(capture)
    before = load_insta_dataset(capture, "train", cache=True)
    old, stat = path.stat(), Path.stat
    _edit_at_the_same_size(path)
    monkeypatch.setattr(Path, "stat", lambda self, **kw: old if os.path.abspath(self) == str(path) else stat(self, **kw))
    fresh = load_insta_dataset(capture, "train", cache=True)
    assert not torch.equal(fresh.images, before.images)


def test_small_captures_are_not_cached_by_default(capture):
    load_insta_dataset(capture, "train")
    assert _entries() == []


def test_a_cache_that_cannot_be_written_is_said_and_the_capture_still_loads(capture, tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file where the cache folder would be")
    with pytest.warns(UserWarning, match="could not be cached"):
        frames = load_insta_dataset(capture, "train", cache=True)
    _same(load_insta_dataset(capture, "train", cache=False), frames)


def test_clear_capture_cache_removes_the_entries(capture):
    load_insta_dataset(capture, "train", cache=True)
    load_insta_dataset(capture, "test", cache=True)
    assert len(_entries()) == 2
    clear_capture_cache(capture, "test")
    assert len(_entries()) == 1
    clear_capture_cache(capture)
    assert _entries() == []


def _spoil_array(entry, name):
    array = np.load(entry / f"{name}.npy")
    np.save(entry / f"{name}.npy", np.flip(array, axis=1).copy())  # same shape and size: a changed decoding


def _spoil_array_keep_times(entry, name):
    before = (entry / f"{name}.npy").stat()
    _spoil_array(entry, name)  # in place: the same inode and size
    _put_times_back(entry / f"{name}.npy", before)


def _spoil_shape(entry, name):
    np.save(entry / f"{name}.npy", np.load(entry / f"{name}.npy")[:1])


def _truncate(entry, name):
    path = entry / f"{name}.npy"
    path.write_bytes(path.read_bytes()[:200])


def _spoil_manifest(entry, name):
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["meta"]["kinds"] = manifest["meta"]["kinds"][:1]  # the kinds of one image: every load failed after
    (entry / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "spoil, named",
    [
        (_spoil_array, "rgb.npy: a cached array of the capture changed since it was written"),
        (_spoil_array_keep_times, "rgb.npy: a cached array of the capture changed since it was written: ctime_ns"),
        (_spoil_shape, "rgb.npy: a cached array of the capture changed since it was written: shape"),
        (_truncate, "rgb.npy: a cached array of the capture cannot be read"),
        (_spoil_manifest, "manifest.json: the capture cache's manifest changed since it was written"),
    ],
)
def test_a_cache_entry_that_changed_is_named_and_rebuilt(capture, monkeypatch, spoil, named):
    """An entry whose arrays (or manifest) changed after it was written was read as it was: a changed image
    trained silently, a bad one failed every later load. It is named in a warning, decoded anew and replaced."""
    plain = load_insta_dataset(capture, "train", cache=False)
    load_insta_dataset(capture, "train", cache=True)
    (entry,) = _entries()
    spoil(cache_folder() / "captures" / entry, "rgb")
    with pytest.warns(UserWarning, match=f"{entry}/{named}.*decoded anew and the entry replaced"):
        rebuilt = load_insta_dataset(capture, "train", cache=True)
    _same(plain, rebuilt)
    monkeypatch.setattr(_insta_decoding, "decode", lambda *a, **k: pytest.fail("decoded again: the entry was not replaced"))
    _same(plain, load_insta_dataset(capture, "train", cache=True))


def _fail(what):
    def fail(*args, **kwargs):
        pytest.fail(f"{what}: the cache was not used")

    return fail


def test_the_cached_images_over_each_background_match_a_fresh_decoding(capture, monkeypatch):
    """The entry keeps the images composited over the background a load asked (issue 78: compositing ran again at
    every load); a load over another background gets its own pixels, composited from the cached decoding, never
    the first background's."""
    grey, red = (0.5, 0.5, 0.5), (1.0, 0.0, 0.0)
    plain = {bg: load_insta_dataset(capture, "train", background=bg, cache=False) for bg in (grey, red, None)}
    assert plain[grey].masks is not None and not torch.equal(plain[grey].images, plain[red].images)
    _same(plain[grey], load_insta_dataset(capture, "train", background=grey, cache=True))  # decoded, then kept
    monkeypatch.setattr(_insta_decoding, "decode", _fail("decoded again"))
    _same(plain[red], load_insta_dataset(capture, "train", background=red, cache=True))  # composited from the entry
    monkeypatch.setattr(insta_reader, "composite_images", _fail("composited again"))
    monkeypatch.setattr(insta_reader, "_label_codes", _fail("label codes counted again"))
    for bg in (red, None):  # the images over red are the entry's now, and the decoded ones are kept
        _same(plain[bg], load_insta_dataset(capture, "train", background=bg, cache=True))
    with pytest.raises(pytest.fail.Exception, match="composited again"):
        load_insta_dataset(capture, "train", background=grey, cache=True)  # replaced by red's: composited anew


def test_an_entry_of_an_older_version_is_decoded_anew(capture, monkeypatch):
    """An entry written by an older headfields (another ``_VERSION``: other arrays, other meanings) is stale: it is
    decoded anew and replaced, never read as if it were this version's."""
    plain = load_insta_dataset(capture, "train", background=(1.0, 1.0, 1.0), cache=False)
    load_insta_dataset(capture, "train", background=(1.0, 1.0, 1.0), cache=True)
    (entry,) = _entries()
    manifest = cache_folder() / "captures" / entry / "manifest.json"
    stored = json.loads(manifest.read_text())
    stored["key"]["version"] -= 1  # as the older version wrote it: a checksum of its own, every array intact
    body = {k: v for k, v in stored.items() if k != "checksum"}
    manifest.write_text(json.dumps({**body, "checksum": capture_cache._checksum(body)}))
    decoded = []
    decode = _insta_decoding.decode
    monkeypatch.setattr(_insta_decoding, "decode", lambda *a, **k: decoded.append(1) or decode(*a, **k))
    _same(plain, load_insta_dataset(capture, "train", background=(1.0, 1.0, 1.0), cache=True))
    assert decoded == [1]
    assert json.loads(manifest.read_text())["key"]["version"] == stored["key"]["version"] + 1
    _same(plain, load_insta_dataset(capture, "train", background=(1.0, 1.0, 1.0), cache=True))
    assert decoded == [1]


@pytest.mark.parametrize("cache", [False, True])
def test_frames_without_pixels_are_a_full_load_s_but_the_pixels(capture, cache, monkeypatch):
    """``pixels=False`` (issue 78: ``render --camera orbit`` decoded every image it never showed): no colour or
    depth image decoded unless the capture is cached (then mapped, not read); cameras, tracking and labels as a
    full load's, the images zeros that take no memory."""
    from headfields.data import _io

    full = load_insta_dataset(capture, "train", background=(1.0, 1.0, 1.0), cache=cache)
    reads = []
    for name in ("read_color_image", "read_uint16"):
        read = getattr(_io, name)
        monkeypatch.setattr(_io, name, lambda path, read=read: reads.append(path) or read(path))
    bare = load_insta_dataset(capture, "train", background=(1.0, 1.0, 1.0), cache=cache, pixels=False)
    assert reads == [] and not bare.pixels and full.pixels
    assert bare.masks is None and bare.depths is None and full.masks is not None and full.depths is not None
    assert bare.images.shape == full.images.shape and bare.images.dtype == torch.uint8
    assert bare.images.stride() == (0, 0, 0, 0) and not bare.images.any()
    for name in ("segmentation", "mesh_vertices", "mesh_faces", "expression"):
        assert torch.equal(getattr(bare, name), getattr(full, name)), name
    assert torch.equal(bare.cameras.camera_to_world, full.cameras.camera_to_world)
    assert bare.segmentation_labels == full.segmentation_labels
