"""Multi-resolution hash grid encoding (instant-ngp, Müller et al. 2022) with Warp forward and backward kernels.

Level ``l`` is a grid of resolution ``r_l = floor(base * b^l)`` with ``b = exp((ln finest - ln base) / (levels - 1))``
over the unit cube, whose ``(r_l + 1)^3`` vertices each hold ``features_per_level`` trainable features. A point
is encoded by trilinear interpolation of the features at the 8 corners of its cell on every level; the
levels' features are concatenated (level-major: ``out[:, l*F:(l+1)*F]`` is level ``l``).

Parameter layout: one float32 table ``[rows, F]`` with the levels stacked. A level whose ``(r_l + 1)^3`` vertices
fit in ``2^log2_table_size`` rows is stored densely (vertex ``(x, y, z)`` at ``x + (r+1) (y + (r+1) z)``), so it
uses exactly that many rows; a finer level gets ``2^log2_table_size`` rows and the instant-ngp spatial hash
``(x * 1) xor (y * 2654435761) xor (z * 805459861)`` (uint32 arithmetic) modulo that size.

Gradients reach the table (a scatter-add over the corners) and the points (for normals or an eikonal term).
Second derivatives are not supported: asking for a gradient with ``create_graph=True`` raises an error
(rather than returning a gradient that is silently constant). Points outside ``[0, 1]^3`` are clamped onto
the cube, so their gradient is zero along each clamped axis.

Half-precision table (``HashGridConfig(table_dtype="float16")``, tiny-cuda-nn's default): the parameter stays a
float32 master copy, which the optimiser updates; each forward rounds it to a float16 copy that the kernels
read (half the memory traffic of the random corner reads), and the interpolation, the features and both
gradients stay float32. The encoding is then that of the float32 grid with the rounded table (relative error
2^-11 a value), and the table gradient is the float32 one (it does not depend on the table's values). Meant for
CUDA; CPU accepts it too (there, at INSTA's size, the forward measured 1.2-1.5x faster than with the float32
table), which is also where the tests check it.
"""

# No `from __future__ import annotations` here: the kernels that `_kernels` makes are annotated with its local
# vector types, which Warp must receive as objects (it cannot resolve a local name from a string annotation).
import functools
import math
from dataclasses import dataclass
from typing import Literal, no_type_check

import torch
import warp as wp
from jaxtyping import Float
from torch import Tensor, nn

from .. import kernels
from ..backends.cpu.hashgrid_lanes import encode_in_lanes, lane_kernel
from ..checks import check_count, check_finite, check_float
from ..device_paths import takes_cuda_path

# The default grid: instant-ngp's NeRF grid (its testbed.cu default network config: 16 levels of 2 features,
# base resolution 16; the finest level's 2048 cells over the unit cube are testbed.cu's `desired_resolution`)
# with 2^18 rows a level (instant-ngp: 2^19). INSTA (Zielonka et al. 2023, configs/nerf/main.json) has the same
# levels, base, finest and rows but 8 features a level: `headfields.models.insta.INSTA_HASH_GRID`.
# tiny-cuda-nn (grid_scale, grid_resolution) puts level l's lattice at scale base * b^l - 1 with a half-cell
# offset, here at floor(base * b^l) cells from 0: the same growth b, vertices a fraction of a cell apart.
LEVELS, FEATURES_PER_LEVEL, LOG2_TABLE_SIZE, BASE_RESOLUTION, FINEST_RESOLUTION = 16, 2, 18, 16, 2048
# instant-ngp's spatial-hash primes (Teschner et al. 2003); the first is 1 so that neighbours along x stay
# close in memory.
PRIME_Y = wp.constant(wp.uint32(2654435761))
PRIME_Z = wp.constant(wp.uint32(805459861))
# instant-ngp initialises the table uniformly in +-1e-4: small enough that the MLP starts from a near-constant input.
INIT_SCALE = 1e-4
# floor(base * b^l) of an exact integer (the finest level) must not round down to n - 1 through exp/log.
RESOLUTION_ROUNDING = 1e-9
MAX_LEVELS, MAX_FEATURES, MAX_LOG2_TABLE, MAX_RESOLUTION = 32, 8, 24, 2**20
SPATIAL_DIMS = 3
CORNERS = 2**SPATIAL_DIMS
# Consecutive points a thread of the table's gradient adds up before it adds into the table (see `table_grad`).
TABLE_GRADIENT_RUN = 16
# The table types the kernels read (HashGridConfig.table_dtype), as torch and Warp types.
TABLE_DTYPES = {"float32": (torch.float32, wp.float32), "float16": (torch.float16, wp.float16)}
TableDtype = Literal["float32", "float16"]

SECOND_DERIVATIVE_ERROR = (
    "HashGrid: second derivatives are not supported (the gradient was requested with create_graph=True); "
    "use the gradient as a constant (detach it) or a finite-difference normal instead"
)

_vec8i = wp.types.vector(length=CORNERS, dtype=wp.int32)
_vec8f = wp.types.vector(length=CORNERS, dtype=wp.float32)


@dataclass(frozen=True)
class HashGridConfig:
    """Hash grid hyper-parameters; the defaults are instant-ngp's NeRF grid with 2^18 rows a level (INSTA's grid
    has 8 features a level: ``headfields.models.insta.INSTA_HASH_GRID``)."""

    levels: int = LEVELS
    features_per_level: int = FEATURES_PER_LEVEL
    log2_table_size: int = LOG2_TABLE_SIZE  # rows per hashed level: 2^log2_table_size
    base_resolution: int = BASE_RESOLUTION  # cells per axis on the coarsest level
    finest_resolution: int = FINEST_RESOLUTION  # cells per axis on the finest level
    # The table the kernels read: float16 halves its memory traffic (tiny-cuda-nn's default on CUDA); the
    # parameter stays float32 and the interpolation and gradients float32 (see the module docstring).
    table_dtype: TableDtype = "float32"

    def __post_init__(self) -> None:
        if self.table_dtype not in TABLE_DTYPES:
            raise ValueError(f"table_dtype: expected one of {', '.join(map(repr, TABLE_DTYPES))}, got {self.table_dtype!r}")
        check_count("levels", self.levels, 1, MAX_LEVELS)
        check_count("features_per_level", self.features_per_level, 1, MAX_FEATURES)
        check_count("log2_table_size", self.log2_table_size, 1, MAX_LOG2_TABLE)
        check_count("base_resolution", self.base_resolution, 1, MAX_RESOLUTION)
        check_count("finest_resolution", self.finest_resolution, self.base_resolution, MAX_RESOLUTION)
        if self.levels == 1 and self.finest_resolution != self.base_resolution:
            raise ValueError(
                f"finest_resolution: expected base_resolution ({self.base_resolution}) with a single level, "
                f"got {self.finest_resolution}"
            )

    @property
    def per_level_scale(self) -> float:
        """``b``: the factor between consecutive levels' resolutions (``(2048 / 16) ** (1 / 15)``, about 1.38, for
        INSTA and instant-ngp: testbed.cu derives it from the finest resolution the same way)."""
        if self.levels == 1:
            return 1.0
        return math.exp((math.log(self.finest_resolution) - math.log(self.base_resolution)) / (self.levels - 1))

    @property
    def table_size(self) -> int:
        return 2**self.log2_table_size

    @property
    def out_dim(self) -> int:
        return self.levels * self.features_per_level

    def resolutions(self) -> list[int]:
        """Cells per axis of each level, ``floor(base * b^l)``."""
        b = self.per_level_scale
        return [math.floor(self.base_resolution * b**level + RESOLUTION_ROUNDING) for level in range(self.levels)]

    def dense(self) -> list[bool]:
        """Which levels are stored densely: those whose ``(r + 1)^3`` vertices fit in the table."""
        return [(r + 1) ** SPATIAL_DIMS <= self.table_size for r in self.resolutions()]

    def level_rows(self) -> list[int]:
        """Table rows of each level: ``(r + 1)^3`` when dense, else ``2^log2_table_size``."""
        return [(r + 1) ** SPATIAL_DIMS if d else self.table_size for r, d in zip(self.resolutions(), self.dense(), strict=True)]


# ------------------------------------------------------------------------------------------------ kernels


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.func
def _corner_row(x: int, y: int, z: int, res: int, dense: int, offset: int, rows: int) -> int:
    if dense != 0:
        side = res + 1
        return offset + x + side * (y + side * z)
    h = wp.uint32(x) ^ (wp.uint32(y) * PRIME_Y) ^ (wp.uint32(z) * PRIME_Z)
    return offset + wp.int32(h % wp.uint32(rows))


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.func
def _axis_cell(p: float, res: int) -> int:
    # The cell's lower vertex; a point on the far face (p = 1) belongs to the last cell, at fraction 1.
    return wp.min(int(wp.floor(p * float(res))), res - 1)


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.func
def _level_corners(point: wp.vec3, res: int, dense: int, offset: int, rows: int):
    """Table rows and trilinear weights of the 8 corners of the cell of ``point`` (clamped to the unit cube),
    and the fractions inside it."""
    p = wp.min(wp.max(point, wp.vec3(0.0)), wp.vec3(1.0))
    cx = _axis_cell(p[0], res)
    cy = _axis_cell(p[1], res)
    cz = _axis_cell(p[2], res)
    scale = float(res)
    f = wp.vec3(p[0] * scale - float(cx), p[1] * scale - float(cy), p[2] * scale - float(cz))
    row = _vec8i()
    weight = _vec8f()
    for c in range(CORNERS):
        bx = c & 1
        by = (c >> 1) & 1
        bz = (c >> 2) & 1
        wx = wp.where(bx == 1, f[0], 1.0 - f[0])
        wy = wp.where(by == 1, f[1], 1.0 - f[1])
        wz = wp.where(bz == 1, f[2], 1.0 - f[2])
        row[c] = _corner_row(cx + bx, cy + by, cz + bz, res, dense, offset, rows)
        weight[c] = wx * wy * wz
    return row, weight, f


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.func
def _same_rows(a: _vec8i, b: _vec8i) -> bool:
    for c in range(CORNERS):
        if a[c] != b[c]:
            return False
    return True


@no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
@wp.func
def _level_of(levels: wp.array2d(dtype=wp.int32), level: int):
    """A level's resolution, dense flag, first table row and rows (a row of ``_Levels.table``)."""
    return levels[level, 0], levels[level, 1], levels[level, 2], levels[level, 3]


# Every level of every point in one launch (`kernels.launch_grid`), a thread a (level, point), level-major: a
# level's table (at most 2^18 x F floats: 2 MiB at F = 2, 8 MiB for INSTA's F = 8) then stays in cache and the
# TLB while its points read it, which on CPU ran about 2x faster (at F = 2) than visiting all levels per point.
# On CUDA that is instant-ngp's grid of (points, levels) blocks: one launch a pass instead of one a level. On CPU
# the grid is split over the thread pool a level at a time for the encoding and the points' gradient (all
# threads read the same table; a level a thread ran INSTA's forward 1.6x slower), and a level a task for the
# table's gradient (each thread scatters into its own level's rows: no per-thread buffers to zero and sum).
# Against the per-level launches on the 2-core CPU (2^18 points, medians of 8): INSTA's 16 x 8 grid 1.14x forward
# and 1.13x forward + table gradient; the 16 x 2 grid 0.96x and 0.98x, within the machine's noise.
#
# A table row is one Warp vector of F floats, so the kernels are made per F (`_kernels`): a corner is one vector
# load or one vector atomic add instead of F scalar ones with their index arithmetic. At INSTA's F = 8 on CPU
# this ran the forward 2-3x and the table gradient about 2x faster than a loop over the row's F scalars.
# Tried and not kept (no measurable gain at F = 8 on CPU): Morton-sorting the points first, and masking the
# hash with rows - 1 instead of the modulo. The CPU encodes rows of up to 4 float32 features in SIMD lanes instead
# (hashgrid_lanes: 1.6-1.7x this kernel at F = 2).


@dataclass(frozen=True)
class _Kernels:
    """The Warp kernels of one (features a level, table type) pair."""

    encode: wp.Kernel
    table_grad: wp.Kernel
    points_grad: wp.Kernel


@functools.cache
def _kernels(features: int, table_dtype: str) -> _Kernels:
    """The kernels for ``features`` a level reading a ``table_dtype`` table (one Warp module per pair, compiled
    on first use); their arithmetic is float32 whatever the table's type."""
    vec = wp.types.vector(length=features, dtype=wp.float32)
    corner_rows = wp.types.matrix(shape=(CORNERS, features), dtype=wp.float32)
    row_vec = wp.types.vector(length=features, dtype=TABLE_DTYPES[table_dtype][1])
    module = f"headfields_hashgrid_f{features}_{table_dtype}"

    @no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
    @wp.kernel(module=module, enable_backward=False)
    def encode(
        table: wp.array(dtype=row_vec),
        levels: wp.array2d(dtype=wp.int32),
        points: wp.array(dtype=wp.vec3),
        encoded: wp.array2d(dtype=vec),  # [N, levels]
        level0: int,
        point0: int,
    ):
        lv, j = wp.tid()
        level, i = level0 + lv, point0 + j
        res, dense, offset, rows = _level_of(levels, level)
        row, weight, f = _level_corners(points[i], res, dense, offset, rows)
        acc = vec()
        for c in range(CORNERS):
            acc += weight[c] * vec(table[row[c]])  # (a float16 row converted to float32)
        encoded[i, level] = acc

    # The table and point gradients are separate kernels: one kernel with both behind flags ran the table-only
    # case (training) twice as slowly on CPU.

    # A thread adds up a run of TABLE_GRADIENT_RUN consecutive points of a level and adds a corner's row into the
    # table only when the run's cell no longer has it: a ray's samples are consecutive, and on the coarse levels most
    # of them share a cell, whose rows every thread would otherwise hit at once; on the finer ones a step to the
    # next cell keeps the shared face's 4 rows (``carry``: 0 flushes all 8 at each change, as the CPU does, where
    # an add is no atomic's contention and the matching would cost more than it saves).
    @no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
    @wp.kernel(module=module, enable_backward=False)
    def table_grad(
        levels: wp.array2d(dtype=wp.int32),
        points: wp.array(dtype=wp.vec3),
        grad_features: wp.array2d(dtype=vec),  # [N, levels]
        grad_table: wp.array(dtype=vec),  # [rows]
        run: int,  # TABLE_GRADIENT_RUN (1: a thread a point and level)
        carry: int,  # 1: rows the next cell shares stay in the thread's sums
        level0: int,
        run0: int,
    ):
        lv, j = wp.tid()
        level = level0 + lv
        first = (run0 + j) * run
        last = wp.min(first + run, points.shape[0])
        res, dense, offset, rows = _level_of(levels, level)
        held = _vec8i()
        acc = corner_rows()  # the run's gradient of each corner's row
        for i in range(first, last):
            row, weight, f = _level_corners(points[i], res, dense, offset, rows)
            if i > first and not _same_rows(row, held):
                kept = corner_rows()
                for d in range(CORNERS):
                    taken = bool(False)
                    if carry != 0:
                        for c in range(CORNERS):  # unrolled, every index known: the sums stay in registers
                            if not taken and row[c] == held[d]:
                                kept[c] = kept[c] + acc[d]
                                taken = True
                    if not taken:
                        wp.atomic_add(grad_table, held[d], acc[d])
                acc = kept
            held = row
            acc += wp.outer(weight, grad_features[i, level])
        if last > first:
            for c in range(CORNERS):
                wp.atomic_add(grad_table, held[c], acc[c])

    @no_type_check  # Warp parameter types are not Python type hints; keep the jaxtyping checker off them.
    @wp.kernel(module=module, enable_backward=False)
    def points_grad(
        table: wp.array(dtype=row_vec),
        levels: wp.array2d(dtype=wp.int32),
        points: wp.array(dtype=wp.vec3),
        grad_features: wp.array2d(dtype=vec),  # [N, levels]
        grad_points: wp.array(dtype=wp.vec3),  # zeroed; every level adds its share
        level0: int,
        point0: int,
    ):
        lv, j = wp.tid()
        level, i = level0 + lv, point0 + j
        res, dense, offset, rows = _level_of(levels, level)
        q = points[i]
        row, weight, f = _level_corners(q, res, dense, offset, rows)
        g = grad_features[i, level]
        grad = wp.vec3(0.0)
        for c in range(CORNERS):
            dot = wp.dot(g, vec(table[row[c]]))
            bx = c & 1
            by = (c >> 1) & 1
            bz = (c >> 2) & 1
            # d(weight)/d(fraction) along each axis: +-1 for that axis times the other two weights.
            wx = wp.where(bx == 1, f[0], 1.0 - f[0])
            wy = wp.where(by == 1, f[1], 1.0 - f[1])
            wz = wp.where(bz == 1, f[2], 1.0 - f[2])
            sx = wp.where(bx == 1, 1.0, -1.0)
            sy = wp.where(by == 1, 1.0, -1.0)
            sz = wp.where(bz == 1, 1.0, -1.0)
            grad += dot * wp.vec3(sx * wy * wz, wx * sy * wz, wx * wy * sz)
        grad *= float(res)
        # Clamped coordinates do not move the encoding.
        for d in range(SPATIAL_DIMS):
            if q[d] < 0.0 or q[d] > 1.0:
                grad[d] = 0.0
        wp.atomic_add(grad_points, i, grad)  # (on CPU a point's levels run on one thread, in turn)

    return _Kernels(encode, table_grad, points_grad)


# ------------------------------------------------------------------------------------------------ autograd


class _HashGridFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, points: Tensor, table: Tensor, levels: Tensor, table_dtype: str) -> Tensor:
        points = points.detach().contiguous()
        # The table the kernels read: the parameter itself, or its float16 copy, made once per call.
        read = table.detach().to(TABLE_DTYPES[table_dtype][0]).contiguous()
        n, device, features, count = points.shape[0], points.device, table.shape[1], levels.shape[0]
        ctx.kernels = _kernels(features, table_dtype)
        out = torch.empty(n, count, features, dtype=torch.float32, device=device)
        # The CPU's narrow float32 rows: eight points a thread in SIMD lanes (hashgrid_lanes), the same values.
        narrow = not takes_cuda_path(device) and table_dtype == "float32"
        lanes = lane_kernel(features, int(PRIME_Y.value), int(PRIME_Z.value)) if narrow else None
        if lanes is not None:
            encode_in_lanes(lanes, read, levels, points, out)
        else:
            kernels.launch_grid(ctx.kernels.encode, count, n, [read, levels, points, out], device, split="rows")
        ctx.save_for_backward(points, read, levels)
        return out.view(n, count * features)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        if torch.is_grad_enabled():
            # create_graph=True: the Warp backward would hand back gradients with no graph, silently constant.
            raise RuntimeError(SECOND_DERIVATIVE_ERROR)
        points, read, levels = ctx.saved_tensors
        want_points, want_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n, device, features, count = points.shape[0], points.device, read.shape[1], levels.shape[0]
        grad_out = grad_out.float().contiguous().view(n, count, features)
        grad_points = grad_table = None
        if want_table:
            grad_table = _table_gradient(ctx.kernels, levels, points, grad_out, read.shape)
        if want_points:
            grad_points = torch.zeros_like(points)
            k = ctx.kernels.points_grad
            kernels.launch_grid(k, count, n, [read, levels, points, grad_out, grad_points], device, split="rows")
        return grad_points, grad_table, None, None


def _table_gradient(
    k: _Kernels, levels: Tensor, points: Tensor, grad_out: Tensor, shape: torch.Size, run: int = TABLE_GRADIENT_RUN
) -> Tensor:
    """The table's gradient from the features' ``grad_out [N, levels, features]``: float32 whatever the table the
    kernels read (the gradient does not depend on its values). ``run``: consecutive points a thread adds up (1: a
    thread a point, for benchmarks/hashgrid.py's comparison)."""
    n, count = points.shape[0], levels.shape[0]
    grad_table = torch.zeros(shape, dtype=torch.float32, device=points.device)
    runs = -(-n // run)
    carry = int(takes_cuda_path(points.device))
    shared = [levels, points, grad_out, grad_table, run, carry]
    kernels.launch_grid(k.table_grad, count, runs, shared, points.device, split="outer")
    return grad_table


class _ReattachedFunction(torch.autograd.Function):
    """Features the grid gave (without autograd) passed on as they are, with the table's gradient at their points."""

    @staticmethod
    def forward(ctx, points: Tensor, table: Tensor, levels: Tensor, features: Tensor, table_dtype: str) -> Tensor:
        ctx.kernels = _kernels(table.shape[1], table_dtype)
        ctx.table_shape = table.shape
        ctx.save_for_backward(points.detach().contiguous(), levels)
        return features.detach().clone()  # a tensor of its own: a caller writing into it leaves the given ones

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[None, Tensor | None, None, None, None]:
        if torch.is_grad_enabled():
            raise RuntimeError(SECOND_DERIVATIVE_ERROR)
        points, levels = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None, None, None, None
        shape = ctx.table_shape
        grad = grad_out.float().contiguous().view(points.shape[0], levels.shape[0], shape[1])
        return None, _table_gradient(ctx.kernels, levels, points, grad, shape), None, None, None


class HashGrid(nn.Module):
    """Multi-resolution hash grid encoding of points in ``[0, 1]^3`` (see the module docstring).

    ``table`` (float32 ``[rows, features_per_level]``) is the trainable parameter, initialised uniformly in
    ``+-1e-4`` from torch's random generator (or ``generator``). Output: float32 ``[N, levels * features_per_level]``.
    With ``config.table_dtype == "float16"`` the kernels read a float16 rounding of ``table``, made each call.

    ```python
    grid = HashGrid(HashGridConfig(features_per_level=8, table_dtype="float16")).cuda()
    features = grid(torch.rand(4096, 3, device="cuda"))  # [4096, 128] float32
    ```
    """

    in_dim = SPATIAL_DIMS

    def __init__(self, config: HashGridConfig | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.config = config if config is not None else HashGridConfig()
        self.out_dim = self.config.out_dim
        c = self.config
        level_rows = c.level_rows()
        self.table = nn.Parameter(torch.empty(sum(level_rows), c.features_per_level, dtype=torch.float32))
        levels = [  # resolution, dense (1) or hashed (0), first table row, table rows
            (r, int(d), sum(level_rows[:level]), rows)
            for level, (r, d, rows) in enumerate(zip(c.resolutions(), c.dense(), level_rows, strict=True))
        ]
        # What the kernels read of each level, [levels, 4] int32: moves with the module, so no copy a call.
        self.register_buffer("level_table", torch.tensor(levels, dtype=torch.int32), persistent=False)
        self.reset_parameters(generator)

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        with torch.no_grad():
            self.table.uniform_(-INIT_SCALE, INIT_SCALE, generator=generator)

    def forward(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, "N F"]:
        device = self.table.device
        check_float("x", x, [None, SPATIAL_DIMS], device=device)
        if self.table.dtype != torch.float32:
            raise TypeError(f"table: expected float32 (the Warp kernels' type), got {self.table.dtype}")
        x32 = x.float()  # keeps the autograd graph back to x's own dtype
        if x.dtype != torch.float32:  # float32 input was checked just above
            check_finite("x", x32, "values within float32 range")
        return _HashGridFunction.apply(x32, self.table, self.level_table, self.config.table_dtype)

    def reattach(self, x: Float[Tensor, "N 3"], features: Float[Tensor, "N F"]) -> Float[Tensor, "N F"]:
        """``features``, this grid's encoding of ``x`` made without autograd (early termination's pass), as a copy
        that trains the table as ``self(x)`` would, without encoding again: its gradient is the table's at ``x`` (none
        for ``x``, which must not need one). For the current table only: after an optimiser step, encode again."""
        check_float("x", x, [None, SPATIAL_DIMS], device=self.table.device)
        check_float("features", features, [x.shape[0], self.out_dim], device=self.table.device)
        if x.requires_grad:
            raise ValueError("x: expected points that need no gradient (reattach trains the table alone), got some that do")
        return _ReattachedFunction.apply(x.float(), self.table, self.level_table, features, self.config.table_dtype)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"levels={c.levels}, features_per_level={c.features_per_level}, log2_table_size={c.log2_table_size}, "
            f"resolution={c.base_resolution}..{c.finest_resolution}, table_dtype={c.table_dtype}"
        )
