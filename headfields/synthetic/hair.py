"""A hair volume over the synthetic head's scalp: detail the tracked template lacks, so a benchmark can show what a
volumetric avatar gains over a mesh, and what a shell around the mesh costs.

The volume is defined in the head's canonical frame (metres, y up, the face along +z) and moves rigidly with the
head joint. It is a shell over the scalp in spherical coordinates about the skull's centre ``c``, with the polar
axis ``a`` through the crown: a direction is its polar angle ``chi`` from ``a`` and its angle ``psi`` about it. A
table over (``chi``, ``psi``) in 1-degree cells, interpolated bilinearly, holds per direction:

- the scalp's radius ``r_s``, ray cast from ``c`` on the canonical mesh;
- the hair's thickness ``T``: ``min_thickness`` at the template's hairline, growing smoothly with the height above
  it to ``max_thickness`` ``thickness_ramp`` higher (the crown and the back of the head; half as much over the ears);
- the density's amount ``A = density * coverage * clump``: coverage 0 below the hairline rising to 1 just above it,
  clumps of value noise;
- the shade: a tint (value noise) times the head surface's baked light on the shell's outward direction;
- the strands' waving phase and depth, which depend on ``chi`` only.

A point at radius ``r`` lies ``s = r - r_s`` beyond the scalp along its direction, at height ``q = s / T`` in the
shell. Its extinction coefficient (1/m) and colour are::

    sigma  = A * smoothstep(0, ROOT_RAMP, s) * (1 - smoothstep(OUTER_FADE, 1, q)) * strands   (0: s <= 0 or q >= 1)
    strands = 1 - depth(chi) * (1 - cos(N psi + wave(chi))) / 2
    colour = (root_colour + (tip_colour - root_colour) q) * shade * (ROOT_SHADOW + (1 - ROOT_SHADOW) q)

``strands``: N dense bands about the crown axis, so strands run from the crown down (the flow direction is along
the meridians about ``a``), waving sideways; ``depth`` is ``strand_contrast`` away from the crown and fades to 0
at its whorl, where the meridians meet. ``s`` is radial, so every point with density lies within
``T <= max_thickness`` of the mesh.

:meth:`HairVolume.composite` integrates the emission-absorption model along rays up to a given distance (the
first opaque surface): a midpoint quadrature with segments of equal length at most ``step`` per ray, each with
its midpoint's density and colour, composited front to back (exact for that piecewise constant field, converging
to the integral as ``step`` shrinks). Samples are taken only where the ray crosses a box around the shell (an
ellipsoid and a half-space) and an occupancy grid of 4 mm cells marks possible hair.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import check_count, check_float, check_positive, check_shape
from ..geometry import TriangleMesh, ray_intersect
from ._appearance import AMBIENT, LIGHT_DIRECTION, value_noise
from ._head_mesh import HAIRLINE_BACK_Y, HAIRLINE_FRONT_Y, _front_weight

__all__ = ["HAIR_VOLUME_LABEL", "HairVolume", "HairVolumeConfig", "VolumeComposite"]

HAIR_VOLUME_LABEL = "hair_volume"  # the segmentation label of pixels the volume covers (opacity > 0.5)
HAIR_CENTRE = (0.0, 0.0, 0.0)  # the skull ellipsoid's centre (``_head_mesh``: the head's centre at eye level)
CROWN_AXIS = (0.0, 1.0, -0.4)  # the whorl: up and back (normalised); strands flow from it down
TABLE_ROWS, TABLE_COLUMNS = 181, 361  # 1 degree cells over chi in [0, pi], psi in [-pi, pi]: 1.7 mm on the scalp
SIDE_THINNING = 0.5  # over the ears the hair grows half as far past min_thickness as at the crown
HAIRLINE_SOFTNESS = 0.004  # metres of height over which the coverage rises from 0 to 1 above the hairline
OUTER_FADE = 0.5  # the density is even over the inner half of the shell and fades out over the outer half
# Metres over which the density rises from 0 at the scalp: no step at the skin, where rays end. At 2 mm the
# ramp's slope, cut off by the mesh hit, kept a 3 mm quadrature step 10/255 off the converged image; at 5 mm,
# 1.2/255 (without strands).
ROOT_RAMP = 0.005
STRAND_FADE = (0.45, 0.8)  # polar angles (radians) over which the strands fade in, away from the whorl
WAVE_PHASE, WAVE_COUNT = 3.0, 12.0  # strands wave sideways by 3 rad of band phase, 12 waves from crown to chin
TINT_CELL, TINT_AMPLITUDE = 0.02, 0.15  # brightness noise: 2 cm blotches, +-15%
SCALP, THICKNESS, AMOUNT, SHADE, WAVE, DEPTH = range(6)  # the table's channels
CLUMP_CELL, CLUMP_AMPLITUDE = 0.012, 0.3  # density noise: 1.2 cm clumps, +-30%
ROOT_SHADOW = 0.5  # the roots get this fraction of the light the tips get (light scattered away above them)
BOUND_MARGIN = 0.02  # the ellipsoid bound is this much larger than the farthest table point (bilinear cells)
PLANE_MARGIN = 0.003  # metres: the half-space bound reaches this much past the lowest table point
# Empty-space skipping: 4 mm cells, marked where a cell's centre or a neighbour's has hair. 40% of the samples in
# the bounds fall in no marked cell; the shell is at least 1 cm thick, so a cell it touches has a neighbour whose
# centre lies in it (the tests check the grid holds every point with density).
OCCUPANCY_CELL = 0.004
CHUNK_SAMPLES = 1 << 20  # quadrature samples per batch: bounds the memory of a long ray batch (~100 MB)


@dataclass(frozen=True)
class HairVolumeConfig:
    """The hair volume's shape, look and quadrature (lengths in metres; the defaults: a full head of hair).

    ``density`` (1/m) is the extinction in a strand's centre: 100 makes the hair 99% opaque straight out through
    the crown and the back, 55% over the ears, and lets the skin show through near the hairline. ``strands`` bands
    run round the crown axis, about 4 mm apart at mid-height over the ears (2 to 5 mm over the whole head).
    ``step``: the quadrature's longest segment; at 1.5 mm the images are within 0.3/255 of a 0.1 mm quadrature's,
    and halving it changes no pixel by more than 0.4/255 (front, side, top and back views; at 2 mm the strands
    begin to alias: 1/255)."""

    min_thickness: float = 0.01  # beyond the scalp at the hairline
    max_thickness: float = 0.06  # at the crown and the back of the head
    thickness_ramp: float = 0.05  # height above the hairline where the thickness reaches max_thickness
    density: float = 100.0
    strands: int = 190
    strand_contrast: float = 0.85  # the gaps between strands keep 1 - this of the density
    root_colour: tuple[float, float, float] = (0.17, 0.10, 0.06)
    tip_colour: tuple[float, float, float] = (0.50, 0.33, 0.18)
    step: float = 1.5e-3

    def __post_init__(self) -> None:
        for name in ("min_thickness", "max_thickness", "thickness_ramp", "density", "step"):
            check_positive(name, getattr(self, name))
        if self.max_thickness < self.min_thickness:
            raise ValueError(f"max_thickness: expected at least min_thickness = {self.min_thickness}, got {self.max_thickness}")
        if self.max_thickness > 0.2:
            raise ValueError(f"max_thickness: expected at most 0.2 metres of hair, got {self.max_thickness}")
        check_count("strands", self.strands, 1, 10_000)
        if not 0.0 <= self.strand_contrast <= 1.0:
            raise ValueError(f"strand_contrast: expected a number in [0, 1], got {self.strand_contrast}")
        for name in ("root_colour", "tip_colour"):
            rgb = getattr(self, name)
            if len(rgb) != 3 or not all(isinstance(c, numbers.Real) and 0.0 <= c <= 1.0 for c in rgb):
                raise ValueError(f"{name}: expected three numbers in [0, 1] (linear RGB), got {rgb!r}")
        if self.step > self.min_thickness / 4:
            raise ValueError(f"step: expected at most min_thickness / 4 = {self.min_thickness / 4} metres, got {self.step}")


@dataclass
class VolumeComposite:
    """The volume along each ray up to its far distance: its own light, what it lets through and where it is."""

    rgb: Float[Tensor, "N 3"]  # integral of T(t) sigma(t) colour(t) dt: add transmittance x what lies behind
    transmittance: Float[Tensor, " N"]  # exp(-integral of sigma): 1 where the ray meets no hair
    median_t: Float[Tensor, " N"]  # where the opacity reaches 0.5 (inf where it never does)
    samples: int  # quadrature samples taken (a cost)

    @property
    def opacity(self) -> Float[Tensor, " N"]:
        return 1.0 - self.transmittance


@dataclass
class HairVolume:
    """The hair volume of one head (see the module's docstring), in its canonical frame. Build it with
    :meth:`around`; query it with :meth:`density_colour` (points) and :meth:`composite` (rays).

        hair = HairVolume.around(head.canonical_vertices, head.faces)
        sigma, rgb = hair.density_colour(points)  # [N], [N, 3]
        out = hair.composite(origins, dirs, far)  # over the surface: out.rgb + out.transmittance[:, None] * surface
    """

    config: HairVolumeConfig
    table: Float[Tensor, "1 6 R C"]  # the channels SCALP ... DEPTH over (chi rows, psi columns)
    centre: Float[Tensor, " 3"]
    axes: Float[Tensor, "3 3"]  # rows: e1, e2, the crown axis a
    bound_radii: Float[Tensor, " 3"]  # semi-axes of an ellipsoid about ``centre`` that holds the volume
    plane_offset: float  # the volume lies where (x - centre) . a >= plane_offset
    occupancy: Bool[Tensor, "X Y Z"] | None = None  # OCCUPANCY_CELL cells from ``centre - bound_radii`` that may have hair
    occupancy_margin: Bool[Tensor, "X Y Z"] | None = None  # ... and their neighbours

    @classmethod
    def around(
        cls,
        vertices: Float[Tensor, "V 3"],
        faces: Int[Tensor, "F 3"],
        config: HairVolumeConfig | None = None,
        seed: int = 0,
    ) -> HairVolume:
        """The hair over the canonical synthetic head mesh ``vertices``, ``faces`` (FLAME's, or SMPL-X's with the
        torso): its hairline is the template's (``_head_mesh``), its noise drawn from ``seed``."""
        config = config or HairVolumeConfig()
        check_float("vertices", vertices, [None, 3])
        device = vertices.device
        centre = torch.tensor(HAIR_CENTRE, device=device)
        a = F.normalize(torch.tensor(CROWN_AXIS, device=device), dim=0)
        e1 = F.normalize(torch.linalg.cross(a, torch.tensor([0.0, 0.0, 1.0], device=device)), dim=0)  # +x
        axes = torch.stack([e1, torch.linalg.cross(a, e1), a])
        directions = _table_directions(axes)
        mesh = TriangleMesh(vertices.detach()[None].float(), faces)
        hit = ray_intersect(mesh, centre.expand_as(directions), directions)
        radius = torch.where(hit.hit, hit.t, 0.0)
        scalp = centre + radius[:, None] * directions
        azimuth = torch.atan2(scalp[:, 0], scalp[:, 2]).double().cpu().numpy()  # the template's: 0 at the front
        hairline = HAIRLINE_BACK_Y + (HAIRLINE_FRONT_Y - HAIRLINE_BACK_Y) * _front_weight(azimuth)
        height = scalp[:, 1] - torch.as_tensor(hairline, dtype=scalp.dtype, device=device)
        coverage = torch.where(hit.hit, _smoothstep(0.0, HAIRLINE_SOFTNESS, height), 0.0)
        # Thinner over the ears than at the crown and the back: by the direction's sideways component (smooth
        # everywhere, unlike the azimuth at the crown).
        side = 1.0 - SIDE_THINNING * directions[:, 0] ** 2
        growth = _smoothstep(0.0, config.thickness_ramp, height) * side
        thickness = config.min_thickness + (config.max_thickness - config.min_thickness) * growth
        tint, clump = torch.ones_like(radius), torch.ones_like(radius)
        covered = coverage > 0  # the noise matters only there (and is the costly part): elsewhere the amount is 0
        tint[covered] = 1.0 + TINT_AMPLITUDE * (2.0 * value_noise(scalp[covered] / TINT_CELL, seed).to(tint) - 1.0)
        clump[covered] = 1.0 + CLUMP_AMPLITUDE * (2.0 * value_noise(scalp[covered] / CLUMP_CELL, seed + 1).to(tint) - 1.0)
        light = F.normalize(torch.tensor(LIGHT_DIRECTION, device=device), dim=0)
        lit = AMBIENT + (1.0 - AMBIENT) * (directions @ light).clamp(min=0.0)  # the shell's outward normal
        chi = torch.linspace(0.0, math.pi, TABLE_ROWS, device=device)[:, None].expand(-1, TABLE_COLUMNS).reshape(-1)
        channels = [None] * 6
        channels[SCALP], channels[THICKNESS] = radius, thickness
        channels[AMOUNT] = config.density * coverage * clump
        channels[SHADE] = tint * lit
        channels[WAVE] = WAVE_PHASE * torch.sin(WAVE_COUNT * chi)
        channels[DEPTH] = config.strand_contrast * _smoothstep(*STRAND_FADE, chi)
        table = torch.stack(channels).reshape(1, 6, TABLE_ROWS, TABLE_COLUMNS).float()

        # Bounds from the table's cells that can have hair (a cell next to a covered one: bilinear interpolation).
        near = F.max_pool2d(table[:, AMOUNT : AMOUNT + 1], 3, stride=1, padding=1).reshape(-1) > 0
        if not near.any():
            raise ValueError("vertices: expected the synthetic head, found no scalp above its hairline")
        inner = radius[near, None] * directions[near]
        outer = (radius[near] + thickness[near])[:, None] * directions[near]
        radii = outer.abs().amax(dim=0)
        radii = radii * (outer / radii).norm(dim=1).max() * (1.0 + BOUND_MARGIN)
        plane = float(torch.cat([inner @ a, outer @ a]).min()) - PLANE_MARGIN
        hair = cls(config=config, table=table, centre=centre, axes=axes, bound_radii=radii, plane_offset=plane)
        hair.occupancy = hair._occupancy()
        hair.occupancy_margin = F.max_pool3d(hair.occupancy[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0
        return hair

    def _occupancy(self) -> Bool[Tensor, "X Y Z"]:
        """Cells whose centre, or a neighbour's (26 of them), has density: where the quadrature takes samples. The
        cells tile the ellipsoid's box from ``centre - bound_radii - OCCUPANCY_CELL``: a border of empty cells."""
        size = (torch.ceil(2 * self.bound_radii / OCCUPANCY_CELL).long() + 2).tolist()
        axes = [torch.arange(n, device=self.centre.device) for n in size]
        cells = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
        centres = self.centre - self.bound_radii + (cells - 0.5) * OCCUPANCY_CELL
        has = (self.density(centres) > 0).reshape(1, 1, *size).float()
        has[..., [0, -1], :, :] = has[..., :, [0, -1], :] = has[..., :, :, [0, -1]] = 0.0  # outside the box: empty
        return F.max_pool3d(has, 3, stride=1, padding=1)[0, 0] > 0

    def _occupied(self, x: Float[Tensor, "N 3"], margin: bool = False) -> Bool[Tensor, " N"]:
        """Whether each point lies in an occupied cell (see :meth:`_occupancy`), or with ``margin`` in or next to
        one (so are all points within a cell of it, where a marked cell has hair). A point outside the grid is
        clamped onto its empty border."""
        grid = self.occupancy_margin if margin else self.occupancy
        cell = torch.floor((x - (self.centre - self.bound_radii)) * (1.0 / OCCUPANCY_CELL) + 1.0)
        last = torch.tensor(grid.shape, dtype=cell.dtype, device=x.device) - 1
        cell = torch.minimum(cell.clamp(min=0.0), last)
        strides = torch.tensor([grid.shape[1] * grid.shape[2], grid.shape[2], 1], dtype=cell.dtype, device=x.device)
        return grid.reshape(-1)[(cell @ strides).long()]  # exact in float32: fewer than 2^24 cells

    def outer_points(self) -> Float[Tensor, "P 3"]:
        """Canonical points on the volume's outer surface, one per table direction with hair: what a camera must
        frame to see all of it."""
        scalp, thickness, amount = self.table[0, [SCALP, THICKNESS, AMOUNT]].reshape(3, -1)
        hair = amount > 0
        return self.centre + (scalp[hair] + thickness[hair])[:, None] * _table_directions(self.axes)[hair]

    def density(self, x: Float[Tensor, "N 3"]) -> Float[Tensor, " N"]:
        """The extinction coefficient (1/m) at canonical points ``x``."""
        return self.density_colour(x, colour=False)[0]

    def density_colour(self, x: Float[Tensor, "N 3"], colour: bool = True) -> tuple[Float[Tensor, " N"], Float[Tensor, "N 3"]]:
        """Extinction coefficient (1/m) and colour (linear RGB in [0, 1]; zero where there is no hair) at canonical
        points ``x``. ``colour=False`` skips the colour (zeros)."""
        c = self.config
        x = x.to(self.table.dtype)
        lx, ly, lz = ((x - self.centre) @ self.axes.T).unbind(dim=1)
        rho = torch.hypot(lx, ly)
        chi, psi = torch.atan2(rho, lz), torch.atan2(ly, lx)
        grid = torch.stack([psi * (1.0 / math.pi), chi * (2.0 / math.pi) - 1.0], dim=-1)[None, None]
        scalp, thickness, amount, shade, wave, depth = F.grid_sample(self.table, grid, align_corners=True)[0, :, 0]
        s = torch.hypot(rho, lz) - scalp
        q = s / thickness
        # Every factor is >= 0, and one of them vanishes wherever there is no hair: the root ramp for s <= 0, the
        # fade for q >= 1, the amount below the hairline. No masks needed.
        strands = 1.0 - depth * (0.5 - 0.5 * torch.cos(c.strands * psi + wave))
        sigma = amount * _smoothstep(0.0, ROOT_RAMP, s) * (1.0 - _smoothstep(OUTER_FADE, 1.0, q)) * strands
        if not colour:
            return sigma, torch.zeros_like(x)
        root_rgb = torch.tensor(c.root_colour, dtype=x.dtype, device=x.device)
        tip_rgb = torch.tensor(c.tip_colour, dtype=x.dtype, device=x.device)
        height = q.clamp(0.0, 1.0)
        shade = shade * (ROOT_SHADOW + (1.0 - ROOT_SHADOW) * height) * (sigma > 0)
        return sigma, ((root_rgb + (tip_rgb - root_rgb) * height[:, None]) * shade[:, None]).clamp(0.0, 1.0)

    def interval(
        self, origins: Float[Tensor, "N 3"], dirs: Float[Tensor, "N 3"]
    ) -> tuple[Float[Tensor, " N"], Float[Tensor, " N"]]:
        """The span ``[t_in, t_out]`` of each ray (``t >= 0``) in the ellipsoid and half-space that hold the
        volume; empty (``t_out <= t_in``) where it misses them."""
        o = (origins - self.centre) / self.bound_radii
        d = dirs / self.bound_radii
        a, b, c = (d * d).sum(dim=1), (o * d).sum(dim=1), (o * o).sum(dim=1) - 1.0
        root = (b * b - a * c).clamp(min=0).sqrt()
        t_in, t_out = (-b - root) / a, (-b + root) / a
        miss = b * b - a * c <= 0
        axis = self.axes[2]
        height, rate = (origins - self.centre) @ axis - self.plane_offset, dirs @ axis  # >= 0 inside the half-space
        cross = -height / torch.where(rate == 0, 1.0, rate)
        t_in = torch.where(rate > 0, torch.maximum(t_in, cross), t_in)
        t_out = torch.where(rate < 0, torch.minimum(t_out, cross), t_out)
        t_out = torch.where(miss | ((rate == 0) & (height < 0)), -1.0, t_out)
        return t_in.clamp(min=0.0), t_out

    def composite(
        self,
        origins: Float[Tensor, "N 3"],
        dirs: Float[Tensor, "N 3"],
        far: Float[Tensor, " N"],
        step: float | None = None,
        colour: bool = True,
    ) -> VolumeComposite:
        """Integrate the volume along canonical rays ``origins + t dirs`` (unit ``dirs``) over ``0 <= t < far``
        (``inf``: the whole ray): segments of equal length at most ``step`` (default: the config's) per ray,
        each with the density and colour of its midpoint, composited front to back. ``colour=False``: opacity and
        median only (``rgb`` zero), faster."""
        check_float("origins", origins, [None, 3], device=self.table.device)
        check_float("dirs", dirs, [origins.shape[0], 3], device=self.table.device)
        check_shape("far", far, [origins.shape[0]], device=self.table.device)
        if not far.is_floating_point() or far.isnan().any():
            raise ValueError("far: expected floating-point distances (inf: the whole ray), found NaN or integers")
        step = self.config.step if step is None else step
        check_positive("step", step)
        n = origins.shape[0]
        t_in, t_out = self.interval(origins, dirs)
        length = (torch.minimum(t_out, far) - t_in).clamp(min=0.0)
        count = torch.ceil(length / step).long()
        h = length / count.clamp(min=1)
        rgb = torch.zeros(n, 3, dtype=torch.float64, device=origins.device)
        depth = torch.zeros(n, dtype=torch.float64, device=origins.device)  # optical depth
        median = torch.full((n,), math.inf, dtype=torch.float64, device=origins.device)
        rays = torch.nonzero(count > 0)[:, 0]
        cumulative = torch.cumsum(count[rays], dim=0)
        group = max(1, int(2 * OCCUPANCY_CELL / step))  # samples per group: within a cell of the group's centre
        start, total = 0, 0
        while start < len(rays):  # whole rays per batch, about CHUNK_SAMPLES samples each
            before = int(cumulative[start - 1]) if start else 0
            stop = max(int(torch.searchsorted(cumulative, before + CHUNK_SAMPLES, right=True)), start + 1)
            total += self._composite_rays(rays[start:stop], origins, dirs, t_in, h, count, group, colour, rgb, depth, median)
            start = stop
        return VolumeComposite(
            rgb=rgb.to(origins.dtype),
            transmittance=torch.exp(-depth).to(origins.dtype),
            median_t=median.to(origins.dtype),
            samples=total,
        )

    def _composite_rays(self, rays, origins, dirs, t_in, h, count, group, colour, rgb, depth, median) -> int:
        """Composite the rays ``rays`` into ``rgb``, ``depth`` and ``median`` (in place); return the samples taken.

        A ray's samples go in groups of ``group`` consecutive ones, at most a cell (``OCCUPANCY_CELL``) from the
        group's centre: a group whose centre lies in no marked cell, nor next to one, has no density and is
        skipped; the others are laid out densely ``[groups, group]`` (cheap, by broadcasting)."""
        counts = (count[rays] + group - 1) // group
        group_ray = torch.repeat_interleave(rays, counts)
        first = torch.cumsum(counts, dim=0) - counts  # each ray's first group, in this batch
        index = torch.arange(len(group_ray), device=rays.device) - torch.repeat_interleave(first, counts)
        o, d, h_group, t0 = origins[group_ray], dirs[group_ray], h[group_ray], t_in[group_ray]
        middle = t0 + (index * group + 0.5 * group) * h_group
        keep = torch.nonzero(self._occupied(o + middle[:, None] * d, margin=True))[:, 0]
        if len(keep) == 0:
            return 0
        group_ray, index, o, d, h_group, t0 = (v[keep] for v in (group_ray, index, o, d, h_group, t0))
        sample = index[:, None] * group + torch.arange(group, device=rays.device)  # [G, group]: index along its ray
        t = t0[:, None] + (sample + 0.5) * h_group[:, None]
        x = o[:, None, :] + t[..., None] * d[:, None, :]
        sigma, light = self.density_colour(x.reshape(-1, 3), colour=colour)
        sigma = sigma * (sample < count[group_ray][:, None]).reshape(-1)  # a ray's last group may run past its end
        ray = group_ray[:, None].expand(-1, group).reshape(-1)
        step = h_group[:, None].expand(-1, group).reshape(-1)
        t = t.reshape(-1)
        tau = sigma * step
        # Optical depth before each sample: a running sum over the batch (float64: a million terms), less the sum
        # before its ray's first sample.
        before = torch.cumsum(tau.double(), dim=0) - tau.double()
        _, per_ray = torch.unique_consecutive(group_ray, return_counts=True)
        per_ray = per_ray * group
        start = torch.cumsum(per_ray, dim=0) - per_ray
        before = (before - torch.repeat_interleave(before[start], per_ray)).to(tau.dtype)
        if colour:
            weight = torch.exp(-before) * -torch.expm1(-tau)
            rgb.index_add_(0, ray, (weight[:, None] * light).to(rgb.dtype))
        depth.index_add_(0, ray, tau.to(depth.dtype))
        # Opacity 0.5 is optical depth ln 2: within the segment that crosses it, sigma is constant.
        crossing = torch.nonzero((before < math.log(2.0)) & (before + tau >= math.log(2.0)))[:, 0]
        start_t = (t[crossing] - 0.5 * step[crossing]).double()
        median[ray[crossing]] = start_t + (math.log(2.0) - before[crossing].double()) / sigma[crossing].double()
        return len(ray)


def _table_directions(axes: Float[Tensor, "3 3"]) -> Float[Tensor, "D 3"]:
    """The unit direction of each table cell, row by row (chi from the crown axis ``axes[2]``, psi about it)."""
    chi = torch.linspace(0.0, math.pi, TABLE_ROWS, device=axes.device, dtype=torch.float64)
    psi = torch.linspace(-math.pi, math.pi, TABLE_COLUMNS, device=axes.device, dtype=torch.float64)
    chi, psi = torch.meshgrid(chi, psi, indexing="ij")
    local = torch.stack([chi.sin() * psi.cos(), chi.sin() * psi.sin(), chi.cos()], dim=-1).reshape(-1, 3)
    return (local @ axes.double()).to(axes.dtype)


def _smoothstep(edge0: float, edge1: float, x: Tensor) -> Tensor:
    u = ((x - edge0) / (edge1 - edge0)).clamp(0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)
