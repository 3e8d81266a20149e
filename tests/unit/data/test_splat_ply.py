"""The 3D Gaussian Splatting PLY (``headfields.data.splat_ply``): round trips, the bytes against a reader written here
from the format's description, a hand-written file in another property order and precision, and bad input."""

import math
import re

import numpy as np
import pytest
import torch

from headfields.data.splat_ply import (
    BINDING,
    SH_C0,
    Splats,
    read_bound_splat_ply,
    read_splat_ply,
    write_bound_splat_ply,
    write_splat_ply,
)

from helpers import raises_naming

OFFICIAL_ORDER = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
TAIL = ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]

# Two splats of degree 1 (K = 4) with values known by hand; sh[i, j, c] = 100 i + 10 j + c, so that every
# coefficient is distinct and a transposed f_rest reads back different numbers.
KNOWN = Splats(
    means=torch.tensor([[0.1, -0.2, 0.3], [1.5, 2.5, -3.5]]),
    quats=torch.tensor([[2.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]),  # not unit: written normalised
    scales=torch.tensor([[0.5, 1.0, 2.0], [math.e, 0.1, 3.0]]),
    opacities=torch.tensor([0.25, 0.9]),
    sh=torch.tensor([[[100.0 * i + 10 * j + c for c in range(3)] for j in range(4)] for i in range(2)]),
)
KNOWN_UNIT_QUATS = [[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5]]
# f_rest channel-major: red of coefficients 1, 2, 3, then green, then blue.
KNOWN_F_REST = [[10, 20, 30, 11, 21, 31, 12, 22, 32], [110, 120, 130, 111, 121, 131, 112, 122, 132]]


def random_splats(n: int, k: int, seed: int = 0) -> Splats:
    g = torch.Generator().manual_seed(seed)
    quats = torch.randn(n, 4, generator=g)
    return Splats(
        means=torch.randn(n, 3, generator=g),
        quats=quats / quats.norm(dim=1, keepdim=True),
        scales=torch.exp(torch.randn(n, 3, generator=g) - 3),
        opacities=torch.sigmoid(3 * torch.randn(n, generator=g)),
        sh=torch.randn(n, k, 3, generator=g),
    )


def parse_ply(path):
    """A reader from the format's description: the header's ascii lines by hand, the rows as a structured array."""
    data = path.read_bytes()
    header, separator, body = data.partition(b"end_header\n")
    assert separator
    lines = header.decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    elements = [line.split() for line in lines if line.startswith("element ")]
    assert len(elements) == 1 and elements[0][1] == "vertex"
    count = int(elements[0][2])
    properties = [line.split()[1:] for line in lines if line.startswith("property ")]
    types = {kind for kind, _ in properties}
    dtype = np.dtype([(name, {"float": "<f4", "double": "<f8"}[kind]) for kind, name in properties])
    assert len(body) == count * dtype.itemsize
    return [name for _, name in properties], types, np.frombuffer(body, dtype=dtype, count=count)


def write_hand_ply(path, columns: dict, kind: str = "double", fmt: str = "binary_little_endian") -> None:
    """A splat PLY written here, with the properties of ``columns`` in its order, of PLY type ``kind``."""
    names = list(columns)
    count = len(next(iter(columns.values())))
    header = ["ply", f"format {fmt} 1.0", f"element vertex {count}"] + [f"property {kind} {n}" for n in names]
    table = np.stack([np.asarray(columns[n], dtype=np.float64) for n in names], axis=1)
    if fmt == "ascii":
        body = "".join(" ".join(repr(float(v)) for v in row) + "\n" for row in table).encode()
    else:
        body = table.astype({"double": "<f8", "float": "<f4"}[kind]).tobytes()
    path.write_bytes(("\n".join(header + ["end_header"]) + "\n").encode("ascii") + body)


def known_columns() -> dict:
    """KNOWN in the file's encoding, computed here from the format's description."""
    columns = {name: KNOWN.means[:, i].tolist() for i, name in enumerate("xyz")}
    columns |= {f"n{axis}": [0.0, 0.0] for axis in "xyz"}
    columns |= {f"f_dc_{c}": KNOWN.sh[:, 0, c].tolist() for c in range(3)}
    columns |= {f"f_rest_{m}": [row[m] for row in KNOWN_F_REST] for m in range(9)}
    columns["opacity"] = [math.log(0.25 / 0.75), math.log(0.9 / 0.1)]
    columns |= {f"scale_{i}": [math.log(float(s)) for s in KNOWN.scales[:, i]] for i in range(3)}
    columns |= {f"rot_{i}": [q[i] for q in KNOWN_UNIT_QUATS] for i in range(4)}
    return columns


def assert_splats_close(got: Splats, want: Splats) -> None:
    for field in ("means", "quats", "scales", "opacities", "sh"):
        value = getattr(got, field)
        assert value.dtype == torch.float32 and value.device.type == "cpu", field
        torch.testing.assert_close(value, getattr(want, field).float(), msg=lambda m, f=field: f"{f}: {m}")


@pytest.mark.parametrize("k", [1, 4, 16])
def test_round_trip(tmp_path, k):
    splats = random_splats(300, k, seed=k)
    splats.means.requires_grad_()  # written detached
    path = write_splat_ply(tmp_path / "deep" / "folder" / "splats.ply", splats)
    assert path == tmp_path / "deep" / "folder" / "splats.ply"
    back = read_splat_ply(path)
    assert_splats_close(back, splats)
    assert back.degree == math.isqrt(k) - 1
    assert [p.name for p in path.parent.iterdir()] == ["splats.ply"]  # no temporary file left


def test_bytes_match_the_format(tmp_path):
    names, types, rows = parse_ply(write_splat_ply(tmp_path / "known.ply", KNOWN))
    assert names == OFFICIAL_ORDER + [f"f_rest_{m}" for m in range(9)] + TAIL
    assert types == {"float"}
    want = known_columns()
    for name in names:
        np.testing.assert_allclose(rows[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
    # The DC term is what viewers turn into a base colour.
    colour = 0.5 + SH_C0 * np.stack([rows[f"f_dc_{c}"] for c in range(3)], axis=1)
    np.testing.assert_allclose(colour, 0.5 + SH_C0 * KNOWN.sh[:, 0].numpy(), rtol=1e-6)


def test_sibr_reads_the_count_on_the_third_line(tmp_path):
    """SIBR's Gaussian viewer (its loadPly) skips two lines and reads the third as ``element vertex N``, then
    seeks the binary data after ``end_header``: the count must stand there, not behind a comment."""
    splats = random_splats(37, 4, seed=3)
    data = write_splat_ply(tmp_path / "sibr.ply", splats).read_bytes()
    lines = data[: data.index(b"end_header")].decode("ascii").splitlines()
    assert lines[:2] == ["ply", "format binary_little_endian 1.0"]
    words = lines[2].split()
    assert words[:2] == ["element", "vertex"] and int(words[2]) == 37
    properties = [line.split()[-1] for line in lines if line.startswith("property")]
    body = data[data.index(b"end_header\n") + len(b"end_header\n") :]
    table = np.frombuffer(body, dtype="<f4").reshape(37, len(properties))
    np.testing.assert_allclose(table[:, :3], splats.means.numpy(), rtol=1e-6)


def test_degree_zero_has_no_f_rest(tmp_path):
    splats = random_splats(5, 1)
    names, _, _ = parse_ply(write_splat_ply(tmp_path / "dc.ply", splats))
    assert names == OFFICIAL_ORDER + TAIL


def test_other_order_and_double(tmp_path):
    columns = known_columns()
    backwards = list(reversed(columns))
    shuffled = backwards[::2] + backwards[1::2]  # rot_3 first, f_rest_8 before f_rest_6, ...
    # An extra property a viewer might add, and one normal left out: neither is needed.
    order = ["extra"] + [n for n in shuffled if n != "ny"]
    write_hand_ply(tmp_path / "shuffled.ply", {n: columns.get(n, [7.0, 8.0]) for n in order}, kind="double")
    back = read_splat_ply(tmp_path / "shuffled.ply")
    want = Splats(KNOWN.means, torch.tensor(KNOWN_UNIT_QUATS), KNOWN.scales, KNOWN.opacities, KNOWN.sh)
    assert_splats_close(back, want)


def bad(field: str, value) -> Splats:
    splats = random_splats(4, 4)
    setattr(splats, field, value)
    return splats


@pytest.mark.parametrize(
    ("splats", "name"),
    [
        (bad("means", torch.tensor([[0.0, 0.0, 0.0]] * 3 + [[float("nan"), 0.0, 0.0]])), "means"),
        (bad("scales", torch.tensor([[1.0, 1.0, 1.0]] * 3 + [[1.0, 0.0, 1.0]])), "scales"),
        (bad("scales", torch.tensor([[1.0, 1.0, 1.0]] * 3 + [[1.0, 1.0, -0.5]])), "scales"),
        (bad("opacities", torch.tensor([0.5, 0.5, 0.5, 0.0])), "opacities"),
        (bad("opacities", torch.tensor([0.5, 1.0, 0.5, 0.5])), "opacities"),
        (bad("opacities", torch.tensor([0.5, 0.5, 2.0, 0.5])), "opacities"),
        (bad("opacities", torch.tensor([float("nan"), 0.5, 0.5, 0.5])), "opacities"),
        (bad("quats", torch.tensor([[1.0, 0.0, 0.0, 0.0]] * 3 + [[0.0, 0.0, 0.0, 0.0]])), "quats"),
        (bad("sh", torch.zeros(4, 5, 3)), "sh"),
    ],
)
def test_bad_splats(tmp_path, splats, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        write_splat_ply(tmp_path / "bad.ply", splats)
    assert not (tmp_path / "bad.ply").exists()


def test_missing_property(tmp_path):
    columns = known_columns()
    del columns["opacity"]
    path = tmp_path / "no_opacity.ply"
    write_hand_ply(path, columns, kind="float")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: missing vertex properties opacity \("):
        read_splat_ply(path)


def test_ascii_ply(tmp_path):
    path = tmp_path / "ascii.ply"
    write_hand_ply(path, known_columns(), kind="float", fmt="ascii")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: expected format binary_little_endian.*got ascii"):
        read_splat_ply(path)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "scale_0",
            200.0,
            r"scale_0 of row 1 is 200, whose exponential \(the scale\) \(7.2\d*e\+86\) is beyond float32's largest",
        ),
        ("scale_2", 1000.0, r"scale_2 of row 1 is 1000, whose exponential \(the scale\) \(inf\) is beyond float32's largest"),
        ("scale_1", -200.0, r"scale_1 of row 1 is -200, whose exponential \(the scale\) \(1.38\d*e-87\) is rounded to 0"),
        ("x", 1e300, r"x of row 1 is 1e\+300, beyond float32's largest magnitude"),
        ("f_rest_4", -1e39, r"f_rest_4 of row 1 is -1e\+39, beyond float32's largest magnitude"),
    ],
)
def test_values_finite_in_the_file_but_not_after_decoding_are_named(tmp_path, name, value, message):
    """A double finite in the file whose float32 (or whose exponential, a scale) is inf or 0 was returned as inf or
    0: it is refused, naming the file, the property and the row."""
    columns = known_columns()
    columns[name] = [columns[name][0], value]
    path = tmp_path / "overflow.ply"
    write_hand_ply(path, columns, kind="double")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: {message}"):
        read_splat_ply(path)


def test_extreme_but_finite_quaternions_keep_their_direction(tmp_path):
    """A double quaternion of 1e300s (its squared norm overflows) or 1e-300s (it underflows) was normalised to zeros
    or NaN, and the Gaussian vanished: both read as the unit quaternion of their direction, and write so too."""
    columns = known_columns()
    for i in range(4):
        columns[f"rot_{i}"] = [1e300 * KNOWN_UNIT_QUATS[0][i], 1e-300 * KNOWN_UNIT_QUATS[1][i]]
    path = tmp_path / "extreme.ply"
    write_hand_ply(path, columns, kind="double")
    torch.testing.assert_close(read_splat_ply(path).quats, torch.tensor(KNOWN_UNIT_QUATS))
    splats = Splats(**{f: getattr(KNOWN, f).double() for f in ("means", "quats", "scales", "opacities", "sh")})
    splats.quats = torch.tensor([[1e300, 0, 0, 0], [1e-300, 1e-300, 1e-300, 1e-300]], dtype=torch.float64)
    write_splat_ply(tmp_path / "written.ply", splats)
    torch.testing.assert_close(read_splat_ply(tmp_path / "written.ply").quats, torch.tensor(KNOWN_UNIT_QUATS))


@pytest.mark.parametrize(("field", "index", "name"), [("means", (1, 1), "y of row 1"), ("sh", (0, 2, 1), "f_rest_4 of row 0")])
def test_float64_input_beyond_float32_is_refused_before_writing(tmp_path, field, index, name):
    """Writing float64 values float32 cannot hold wrote inf with only numpy's warning: refused, nothing written
    (sh[0, 2, 1], coefficient 2 of green, is f_rest_{3 + 2 - 1}: channel-major)."""
    splats = Splats(**{f: getattr(KNOWN, f).double() for f in ("means", "quats", "scales", "opacities", "sh")})
    value = getattr(splats, field).clone()
    value[index] = -1e300
    setattr(splats, field, value)
    path = tmp_path / "big.ply"
    with pytest.raises(ValueError, match=rf"^splats: {name} is -1e\+300 in the file's encoding, beyond float32's largest"):
        write_splat_ply(path, splats)
    assert not path.exists()


@pytest.mark.parametrize(
    ("scale", "dtype", "log", "why"),
    [
        (3.4028234663852886e38, torch.float32, r"88.7228", r"\(3.40282e\+38\) is beyond float32's largest magnitude"),
        (1e39, torch.float64, r"89.8008", r"\(1e\+39\) is beyond float32's largest magnitude \(3.403e\+38\)"),
        (1e-46, torch.float64, r"-105.919", r"\(9.99999e-47\) is rounded to 0 by float32 \(under half its smallest"),
    ],
    ids=["float32-largest", "1e39", "1e-46"],
)
def test_the_writer_refuses_a_scale_its_reader_refuses(tmp_path, scale, dtype, log, why):
    """The reader refuses a scale_i whose exponential float32 cannot hold; the writer wrote such logs (float32's
    largest scale among them: its log rounds up in float32). One check decides both: the writer refuses, writing
    nothing, what the reader refuses in the same file written by hand; just inside the bounds, a round trip."""
    splats = Splats(**{f: getattr(KNOWN, f).to(dtype, copy=True) for f in ("means", "quats", "scales", "opacities", "sh")})
    splats.scales[1, 0] = scale
    decoded = rf", whose exponential \(the scale\) {why}"
    with pytest.raises(ValueError, match=rf"^splats: scale_0 of row 1 is {log} in the file's encoding{decoded}"):
        write_splat_ply(tmp_path / "big.ply", splats)
    assert not (tmp_path / "big.ply").exists()
    columns = known_columns()
    columns["scale_0"] = [columns["scale_0"][0], float(np.float32(math.log(scale)))]  # what the writer would write
    write_hand_ply(tmp_path / "hand.ply", columns, kind="float")
    with pytest.raises(ValueError, match=rf"hand\.ply: scale_0 of row 1 is {log}{decoded}"):
        read_splat_ply(tmp_path / "hand.ply")
    splats.scales = torch.tensor([[3.4e38, 1e-44, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64)  # just inside
    back = read_splat_ply(write_splat_ply(tmp_path / "inside.ply", splats))
    torch.testing.assert_close(back.scales, splats.scales.float(), rtol=1e-5, atol=0)  # a float32 log's precision


@pytest.mark.parametrize("count", ["-1", "-5", "2.0", "two"])
def test_a_header_count_that_is_not_a_count_is_refused(tmp_path, count):
    """'element vertex -1' was read as every row there is."""
    path = tmp_path / "count.ply"
    write_hand_ply(path, known_columns(), kind="float")
    path.write_bytes(path.read_bytes().replace(b"element vertex 2", b"element vertex " + count.encode(), 1))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: cannot parse the header line 'element vertex {count}'"):
        read_splat_ply(path)


def test_a_file_carrying_a_binding_is_read_only_as_bound(tmp_path):
    """Issue 80: GaussianAvatars' PLY (binding_0, written as a float like every property) holds values local to each
    Gaussian's face: read_splat_ply refuses it, read_bound_splat_ply returns those values and the faces."""
    columns = known_columns() | {BINDING: [3.0, 0.0]}
    write_hand_ply(tmp_path / "bound.ply", columns, kind="float")
    with pytest.raises(ValueError, match=r"bound\.ply: carries a binding \(binding_0.*not world values; read it with read_bound"):
        read_splat_ply(tmp_path / "bound.ply")
    local, binding = read_bound_splat_ply(tmp_path / "bound.ply")
    assert binding.dtype == torch.int64 and binding.tolist() == [3, 0]
    assert_splats_close(local, Splats(KNOWN.means, torch.tensor(KNOWN_UNIT_QUATS), KNOWN.scales, KNOWN.opacities, KNOWN.sh))
    write_splat_ply(tmp_path / "world.ply", KNOWN)  # ours: world values, no binding
    with pytest.raises(ValueError, match=r"world\.ply: carries no binding \(binding_0\).*read it with read_splat_ply"):
        read_bound_splat_ply(tmp_path / "world.ply")
    for face, shown in ((1.5, "1.5"), (-1.0, "-1")):
        write_hand_ply(tmp_path / "odd.ply", known_columns() | {BINDING: [0.0, face]}, kind="float")
        with pytest.raises(ValueError, match=rf"binding_0 of row 1 is {shown}: expected a face index"):
            read_bound_splat_ply(tmp_path / "odd.ply")


def test_the_bound_writer_round_trips_in_gaussian_avatars_order(tmp_path):
    """Issue 80: write_bound_splat_ply writes local values as write_splat_ply writes world ones, then binding_0 last
    and as a float (scene/gaussian_model.py construct_list_of_attributes, save_ply's 'f4' for every property)."""
    splats = random_splats(5, 16)
    binding = torch.tensor([4, 0, 2**24 - 1, 7, 7])  # the largest face a float32 holds exactly
    path = write_bound_splat_ply(tmp_path / "point_cloud.ply", splats, binding)
    names, types, _ = parse_ply(path)
    assert names == [*OFFICIAL_ORDER, *[f"f_rest_{i}" for i in range(45)], *TAIL, BINDING] and types == {"float"}
    assert path.read_bytes().split(b"\n")[2] == b"element vertex 5"  # SIBR's rule: the count on line 3
    local, read = read_bound_splat_ply(path)
    assert read.tolist() == binding.tolist()
    assert_splats_close(local, splats)


def test_the_bound_writer_names_a_bad_binding(tmp_path):
    """A binding of another length, of floats, below 0 or beyond float32's exact integers; local values not Splats."""
    splats = Splats(
        torch.zeros(2, 3), torch.tensor([[1.0, 0, 0, 0]] * 2), torch.ones(2, 3), torch.full((2,), 0.5), torch.zeros(2, 1, 3)
    )
    for binding in (torch.tensor([0]), torch.tensor([0.0, 1.0]), torch.tensor([0, -1]), torch.tensor([0, 2**24])):
        with raises_naming("binding"):
            write_bound_splat_ply(tmp_path / "bad.ply", splats, binding)
    with raises_naming("local"):
        write_bound_splat_ply(tmp_path / "bad.ply", "splats", torch.tensor([0, 1]))
    assert not (tmp_path / "bad.ply").exists()
