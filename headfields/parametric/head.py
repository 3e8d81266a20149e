"""``Head``: a parametric model (FLAME, SMPL-X) evaluated for B frames, with what deformers need from it.

Beyond smplx's output (posed vertices, joints) a Head keeps the unposed (rest) vertices, the neutral
canonical vertices, the per-joint rest -> posed transforms and the per-vertex skinning weights, so points
anywhere near the head can be skinned forward and back (see :mod:`headfields.parametric.skinning`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from ..checks import IntLike
from ..geometry import TriangleMesh
from .skinning import skin_points

# Where a Head made by ``with_codes`` finds the geometry it shares with the head it was made from.
_GEOMETRY_SOURCE = "_geometry_source"


def _geometry_cache(compute):
    """A cached property of what depends on the vertices and faces alone. A head made by :meth:`Head.with_codes`
    reads and fills its source's cache, so a model that attaches its codes at every step computes the boxes and
    the meshes (with their BVHs) once, whichever of the heads asks first."""
    name = compute.__name__

    def get(self: Head):
        source = self.__dict__.get(_GEOMETRY_SOURCE, self)
        if name not in source.__dict__:
            source.__dict__[name] = compute(source)
        return source.__dict__[name]

    return property(get, doc=compute.__doc__)


@dataclass
class Head:
    """A parametric head for B frames (one identity). Poses are axis-angle per joint in smplx's joint order.

    ``vertices = sum_j skinning_weights[v, j] * joint_transforms[b, j] @ [rest_vertices[b, v], 1]``: the
    transforms map rest to posed space with the translation folded in.
    """

    vertices: Float[Tensor, "B V 3"]  # posed, translated
    # template + shape + expression (+ the model's static offsets) + pose correctives, before skinning
    rest_vertices: Float[Tensor, "B V 3"]
    canonical_vertices: Float[Tensor, "V 3"]  # template + shape (+ static offsets): neutral expression, zero pose
    faces: Int[Tensor, "F 3"]
    uvs: Float[Tensor, "T 2"] | None
    uv_faces: Int[Tensor, "F 3"] | None  # rows of ``uvs`` for each face's corners
    shape: Float[Tensor, " S"]
    expression: Float[Tensor, "B E"]
    pose: Float[Tensor, "B J 3"]
    translation: Float[Tensor, "B 3"]
    joints: Float[Tensor, "B J 3"]  # posed joint positions, translated
    joint_transforms: Float[Tensor, "B J 4 4"]  # rest -> posed, translation included
    skinning_weights: Float[Tensor, "V J"]
    regions: dict[str, Int[Tensor, " _"]]  # region name -> vertex ids (names as in the model's masks file)
    landmarks: Float[Tensor, "B L 3"] | None
    # Per-frame latent codes a model reads besides the tracking (MonoNPHM's expression codes: learnt for the
    # training frames, fitted by tracking); None: the frames have none, and a model reads its neutral code.
    codes: Float[Tensor, "B C"] | None = None

    PER_FRAME = (
        "vertices",
        "rest_vertices",
        "expression",
        "pose",
        "translation",
        "joints",
        "joint_transforms",
        "landmarks",
        "codes",
    )

    @property
    def num_frames(self) -> int:
        return self.vertices.shape[0]

    def select(self, frames: Int[Tensor, " U"] | list[int]) -> Head:
        """The head of frames ``frames`` only, in that order (the identity's tensors shared, not copied)."""
        index = torch.as_tensor(frames, dtype=torch.long, device=self.vertices.device)
        if index.ndim != 1 or (len(index) and not (0 <= int(index.min()) and int(index.max()) < self.num_frames)):
            raise ValueError(f"frames: expected a list of frame indices in [0, {self.num_frames}), got {index.tolist()}")
        rows = {name: getattr(self, name)[index] for name in self.PER_FRAME if getattr(self, name) is not None}
        return dataclasses.replace(self, **rows)

    def with_codes(self, codes: Float[Tensor, "B C"] | None) -> Head:
        """This head with other per-frame ``codes``. Codes move no vertex, so the new head shares this one's
        geometry (``bounds`` and the meshes with their BVHs), computed once for both: a model that attaches its
        learnt codes at every step does not rebuild them."""
        head = dataclasses.replace(self, codes=codes)
        head.__dict__[_GEOMETRY_SOURCE] = self.__dict__.get(_GEOMETRY_SOURCE, self)
        return head

    @_geometry_cache
    def bounds(self) -> Float[Tensor, "B 2 3"]:
        """Each frame's box of the posed vertices, ``[min corner, max corner]`` (no gradient)."""
        vertices = self.vertices.detach()
        return torch.stack([vertices.amin(dim=1), vertices.amax(dim=1)], dim=1)

    @_geometry_cache
    def posed_mesh(self) -> TriangleMesh:
        """The posed vertices over B frames, one BVH per frame (built on first query)."""
        return TriangleMesh(self.vertices, self.faces)

    @_geometry_cache
    def rest_mesh(self) -> TriangleMesh:
        """The rest (unposed) vertices over B frames: where forward skinning reads its weights."""
        return TriangleMesh(self.rest_vertices, self.faces)

    @_geometry_cache
    def canonical_mesh(self) -> TriangleMesh:
        """The neutral canonical mesh (one frame)."""
        return TriangleMesh(self.canonical_vertices, self.faces)

    def face_mask(self, *region_names: str) -> Bool[Tensor, " F"]:
        """Faces whose three vertices all lie in the union of the named regions."""
        inside = torch.zeros(self.vertices.shape[1], dtype=torch.bool, device=self.faces.device)
        for name in region_names:
            if name not in self.regions:
                known = ", ".join(sorted(self.regions)) or "none: the model has no masks file"
                raise ValueError(f"region_names: unknown region {name!r}; known regions: {known}")
            inside[self.regions[name]] = True
        return inside[self.faces].all(dim=-1)

    def pose_points(self, points: Float[Tensor, "N 3"], frame: Int[Tensor, " N"] | IntLike | None = None) -> Float[Tensor, "N 3"]:
        """Rest -> posed: skin ``points`` (in frame ``frame[i]``'s rest space) with the weights of their
        nearest rest-mesh triangle. On rest vertices this gives ``vertices``."""
        return skin_points(self.rest_mesh, self.skinning_weights, self.joint_transforms, points, frame)

    def unpose_points(
        self, points: Float[Tensor, "N 3"], frame: Int[Tensor, " N"] | IntLike | None = None
    ) -> Float[Tensor, "N 3"]:
        """Posed -> rest: the inverse blended transform, with weights from the nearest posed-mesh triangle."""
        return skin_points(self.posed_mesh, self.skinning_weights, self.joint_transforms, points, frame, inverse=True)

    def to_joint_frame(self, joint: int, frames: Int[Tensor, " U"], points: Float[Tensor, "U N 3"]) -> Float[Tensor, "U N 3"]:
        """World ``points`` of frames ``frames`` in each frame's ``joint`` frame (its tracked rest -> posed
        transform undone): the head's own frame, where head motion need not be learnt."""
        transform = self.joint_transforms[frames, joint]
        return torch.einsum("uji,unj->uni", transform[:, :3, :3], points - transform[:, None, :3, 3])
