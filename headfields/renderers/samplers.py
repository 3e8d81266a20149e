"""Samplers: where along each ray a renderer evaluates its field, chosen by configuration.

Each sampler is ``sampler(rays, head, field, generator) -> PackedSamples`` (nerfacc's packed samples). The
bounds are a fixed box or each ray's frame's posed-mesh box, padded (:func:`ray_bounds`). ``shell``, where a
sampler has one, is an optional filter: samples farther than ``shell`` metres from the frame's posed mesh are
dropped (None: off). It speeds a CPU up but removes hair, glasses and clothing off the template; no paper
model uses it by default.

    sampler = StratifiedSampler(64, box=box)  # or padding=0.03: each frame's posed-mesh box
    samples = sampler(rays, head, field, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from jaxtyping import Float
from torch import Tensor, nn

from ..cameras import Rays
from ..checks import check_count, check_positive, trusted_values
from ..geometry import TriangleMesh
from ..parametric import Head
from .mesh_sampler import (
    CELL_MARGIN,
    ShellCells,
    labelled_near_mesh,
    mesh_guided_filter,
    near_mesh,
    shell_cells,
    stratified_shell_samples,
)
from .occupancy import CONE_ANGLE, GRID_OCCUPIED_FRACTION, GRID_UNIFORM_FRACTION, GRID_WARMUP_STEPS, OccupancyGrid
from .samples import PackedSamples, SlotSamples, ray_aabb, stratified_samples

__all__ = ["SHELL_RESOLUTION", "OccupancySampler", "StratifiedSampler", "ray_bounds"]

# Cells a side of the grid a StratifiedSampler classifies against a frame's shell (frame_shells): around a head
# with the CPU recipes' 3 cm shell, cells of about 6 mm, 262,144 centres tested twice once an image.
SHELL_RESOLUTION = 64


def ray_bounds(
    rays: Rays, head: Head, box: Float[Tensor, "2 3"] | None = None, padding: float = 0.0
) -> tuple[Float[Tensor, " R"], Float[Tensor, " R"]]:
    """Near and far of each ray in ``box`` (world), or in its frame's posed-mesh box padded by ``padding``."""
    if box is None:  # each frame's box grown by ``padding`` (from Python numbers: nothing copied from the host)
        bounds = head.bounds[rays.frame]
        box = torch.stack((bounds[:, 0] - padding, bounds[:, 1] + padding), dim=1)
    near, far, _ = ray_aabb(rays.origins, rays.directions, box)
    return near, far


def _shell(samples: PackedSamples, rays: Rays, head: Head, shell: float | None, cells: ShellCells | None = None) -> PackedSamples:
    if shell is None:
        return samples
    return mesh_guided_filter(samples, rays.origins, rays.directions, head.posed_mesh, rays.frame, shell, cells)


class _FrameShells(nn.Module):
    """A sampler with a mesh shell whose :meth:`frame_shells` block classifies cells against one frame's shell once
    for an image's chunks of rays (:func:`shell_cells`); :meth:`_classify` says which cells, :meth:`_key` when they
    are still good."""

    shell: float | None

    def __init__(self) -> None:
        super().__init__()
        self._frame_shells = False  # frame_shells() is on
        self._shell_cells: tuple[tuple, ShellCells] | None = None  # the last frame's cells and what they were made of

    @contextmanager
    def frame_shells(self) -> Iterator[None]:
        """Inside the block (an image rendered in chunks of rays of one frame, without gradients), a call whose rays
        all see one frame classifies cells against that frame's shell (:func:`shell_cells`) and keeps them for the
        next calls on the same frame and mesh: only the samples in cells across the shell's edge are tested against
        the mesh. The samples are the same as without it."""
        outer, self._frame_shells = self._frame_shells, True
        try:
            yield
        finally:
            self._frame_shells = outer

    def _cells_of(self, rays: Rays, head: Head) -> ShellCells | None:
        """The cells of the rays' one frame (frame_shells), None where they see several or it is off."""
        if not self._frame_shells or self.shell is None or rays.frame.numel() == 0:
            return None
        frame = int(rays.frame[0])
        if not bool((rays.frame == frame).all()):
            return None
        mesh = head.posed_mesh
        key = (frame, mesh.vertices._version, *self._key())
        if self._shell_cells is not None:
            (mesh_ref, *made), cells = self._shell_cells
            if mesh_ref() is mesh and tuple(made) == key:
                return cells
        cells = self._classify(mesh, frame)
        self._shell_cells = ((weakref.ref(mesh), *key), cells)
        return cells

    def _key(self) -> tuple:
        return ()

    def _classify(self, mesh: TriangleMesh, frame: int) -> ShellCells:
        raise NotImplementedError


class StratifiedSampler(_FrameShells):
    """``num_samples`` stratified samples per ray between its bounds (:func:`ray_bounds`), then the shell (in a
    :meth:`frame_shells` block, classified on a grid of SHELL_RESOLUTION³ cells around the frame's mesh first)."""

    def __init__(
        self, num_samples: int, box: Float[Tensor, "2 3"] | None = None, padding: float = 0.0, shell: float | None = None
    ):
        super().__init__()
        self.num_samples = check_count("num_samples", num_samples, 1)
        self.register_buffer("box", None if box is None else box.detach().clone())
        check_positive("shell", shell)
        self.padding, self.shell = float(padding), shell

    def forward(
        self, rays: Rays, head: Head, field=None, generator: torch.Generator | None = None, slots: int | None = None
    ) -> PackedSamples | SlotSamples:
        """The samples; with ``slots`` (``TrainingConfig.fixed_shapes``), the same samples compacted into that many
        slots, nothing read back: every ray's bins drawn, then those on rays that hit the box (and within the
        shell) kept, in order (:meth:`SlotSamples.compact`)."""
        near, far = ray_bounds(rays, head, self.box, self.padding)
        if slots is not None:
            return self._slots(rays, head, near, far, generator, slots)
        cells = self._cells_of(rays, head)
        if cells is not None and generator is None:  # the bins' centres: those out of the shell's reach never made
            o, d = rays.origins, rays.directions
            return stratified_shell_samples(o, d, near, far, self.num_samples, head.posed_mesh, self.shell, cells)
        samples = stratified_samples(rays, near, far, self.num_samples, generator)
        return _shell(samples, rays, head, self.shell, cells)

    def _slots(self, rays: Rays, head: Head, near: Tensor, far: Tensor, generator, slots: int) -> SlotSamples:
        every = stratified_samples(rays, near, far, self.num_samples, generator, keep_misses=True)
        keep = (far > near)[every.ray]  # stratified_samples' rule: rays that miss the box have no samples
        if self.shell is not None:
            keep = keep & near_mesh(every, rays.origins, rays.directions, head.posed_mesh, rays.frame, self.shell)
        everything = torch.full((), len(every), dtype=torch.long, device=near.device)
        fits = torch.ones(every.num_rays, dtype=torch.bool, device=near.device)
        return SlotSamples(every, everything, everything, fits).compact(keep, slots)

    def _classify(self, mesh: TriangleMesh, frame: int) -> ShellCells:
        """Every cell of a grid over the frame's mesh box grown by the shell (where every point within it lies)."""
        vertices = mesh.vertices[frame].detach().float()
        grow = torch.tensor([[-1.0], [1.0]], device=vertices.device) * self.shell * (1 + CELL_MARGIN)
        box = torch.stack([vertices.amin(0), vertices.amax(0)]) + grow
        return shell_cells(OccupancyGrid(box, SHELL_RESOLUTION), mesh, frame, self.shell)


class OccupancySampler(_FrameShells):
    """instant-ngp's marching through an occupancy grid over ``box`` (INSTA): steps of the box diagonal /
    ``steps_per_diagonal``, growing with the distance by ``cone_angle`` (0: constant, as INSTA), skipping empty
    cells, then the shell. :meth:`refresh` re-estimates the grid every
    ``every`` steps (0: never; every cell stays occupied): every cell until step ``warmup_steps``, then, as
    instant-ngp, a quarter of the cells drawn uniformly and a quarter among the occupied ones (``warmup_steps``
    None: every cell at every refresh)."""

    def __init__(
        self,
        box: Float[Tensor, "2 3"],
        resolution: int,
        steps_per_diagonal: int,
        every: int,
        decay: float,
        threshold: float,
        shell: float | None = None,
        cone_angle: float = CONE_ANGLE,
        warmup_steps: int | None = GRID_WARMUP_STEPS,
    ):
        super().__init__()
        self.grid = OccupancyGrid(box, resolution, cone_angle=cone_angle)
        self.warmup_steps = None if warmup_steps is None else check_count("warmup_steps", warmup_steps, 0)
        self.step_size = float((box[1] - box[0]).norm()) / check_count("steps_per_diagonal", steps_per_diagonal, 1)
        check_positive("shell", shell)
        self.every, self.decay, self.threshold, self.shell = check_count("every", every, 0), decay, threshold, shell

    def _key(self) -> tuple:  # the grid's cells as they were classified
        return (self.grid.binary.data_ptr(), self.grid.binary._version, self.grid.aabb._version)

    def _classify(self, mesh: TriangleMesh, frame: int) -> ShellCells:
        """The grid's occupied cells: the march skips those out of the shell's reach."""
        return shell_cells(self.grid, mesh, frame, self.shell)

    def forward(
        self, rays: Rays, head: Head, field=None, generator: torch.Generator | None = None, slots: int | None = None
    ) -> PackedSamples | SlotSamples:
        """The march's samples; with ``slots``, in that many slots (:meth:`OccupancyGrid.march_fixed`: nothing read
        back), the shell's samples compacted in place."""
        if slots is None:
            cells = self._cells_of(rays, head)
            if cells is None:
                samples = self.grid.march(rays.origins, rays.directions, step_size=self.step_size)
                return _shell(samples, rays, head, self.shell)
            # The march skips the cells out of the shell's reach and says which of its samples lie in cells across
            # its edge: only those are tested against the mesh.
            o, d = rays.origins, rays.directions
            samples, labels = self.grid.march_labelled(o, d, cells.labels, self.step_size)
            return samples.select(labelled_near_mesh(samples, labels, o, d, head.posed_mesh, cells.frame, self.shell))
        fixed = self.grid.march_fixed(rays.origins, rays.directions, slots, step_size=self.step_size)
        if self.shell is None:
            return fixed
        keep = near_mesh(fixed.samples, rays.origins, rays.directions, head.posed_mesh, rays.frame, self.shell)
        return fixed.compact(keep, slots)

    def refresh(self, field: Callable, head: Head, step: int) -> None:
        """On every ``every``-th step: a random frame (seeded by the step) warps every cell's random point
        through ``field``; the grid keeps the union of the head over frames (INSTA)."""
        if self.every == 0 or step % self.every:
            return
        # Drawn where the grid is: on a GPU, nothing is copied over from the host (on the CPU, the same draws as ever).
        generator = torch.Generator(self.grid.aabb.device).manual_seed(step)
        frame = torch.randint(head.num_frames, (1,), generator=generator, device=generator.device)  # never read back

        def thickness(x: Tensor) -> Tensor:  # optical thickness of one marching step, as instant-ngp thresholds
            with torch.no_grad():
                frames = frame.expand(len(x)).contiguous()
                return field(x, None, frames, head).density * self.step_size

        cells: dict[str, int] = {}
        if self.warmup_steps is not None and step >= self.warmup_steps:
            total = self.grid.binary.numel()
            cells = dict(num_cells=int(total * GRID_UNIFORM_FRACTION), num_occupied=int(total * GRID_OCCUPIED_FRACTION))
        with trusted_values():  # the grid's own points: no check of each chunk through the field's layers
            self.grid.update(thickness, self.decay, self.threshold, generator=generator, cap_at_mean=True, **cells)
