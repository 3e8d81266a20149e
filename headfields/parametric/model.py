"""FLAME and SMPL-X as a torch module: official model files in, a :class:`Head` out.

The maths is smplx's own (``smplx.lbs``: blend shapes, joint regression, Rodrigues, the rigid kinematic
chain), so results match ``smplx.FLAME`` / ``smplx.SMPLX``; the files are read by
:func:`headfields.parametric.files.read_model_file`, so chumpy pickles load, and the module keeps what smplx's
``lbs`` does not return: rest vertices, per-joint transforms and skinning weights.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from smplx.joint_names import JOINT_NAMES as SMPLX_ALL_JOINT_NAMES
from smplx.lbs import batch_rodrigues, blend_shapes, transform_mat, vertices2joints, vertices2landmarks
from torch import Tensor, nn

from ..checks import _shape_str, check_count, check_float
from .files import read_model_file
from .head import Head

GENDERS = ("neutral", "male", "female")

# Official shape spaces: FLAME 2020 / SMPL-X 2020 hold 300 shape + 100 expression directions in shapedirs;
# SMPL-X 1.0/1.1 hold 10 + 10 (smplx reads the expression directions from [10:20] then).
FULL_SPACE = (300, 100)
SMALL_SPACE = (10, 10)


@dataclass(frozen=True)
class ModelSpec:
    """What differs between the supported model types."""

    name: str  # as in error messages and file names
    joint_names: tuple[str, ...]  # smplx's joint order
    file_names: tuple[str, ...]  # model file names in a folder; {G} is the upper-case gender
    neutral_names: tuple[str, ...]  # extra names tried for the neutral model
    masks_file: str
    landmarks_file: str | None  # side file of the static landmark embedding (None: inside the model file)
    texture_file: str | None  # side file with vt / ft (None: inside the model file)


MODEL_SPECS = {
    "flame": ModelSpec(
        name="FLAME",
        joint_names=("global", "neck", "jaw", "left_eye", "right_eye"),
        file_names=("FLAME_{G}.pkl", "FLAME_{G}.npz"),
        neutral_names=("generic_model.pkl",),  # the official FLAME 2020 file name
        masks_file="FLAME_masks.pkl",
        landmarks_file="flame_static_embedding.pkl",
        texture_file="FLAME_texture.npz",
    ),
    "smplx": ModelSpec(
        name="SMPL-X",
        # global orient, 21 body joints, jaw, eyes, 15 + 15 hand joints
        joint_names=tuple(n.removesuffix("_smplhf") for n in SMPLX_ALL_JOINT_NAMES[:55]),
        file_names=("SMPLX_{G}.npz", "SMPLX_{G}.pkl"),
        neutral_names=(),
        masks_file="SMPLX_masks.pkl",
        landmarks_file=None,
        texture_file=None,
    ),
}


def _spec(model_type: str) -> ModelSpec:
    if model_type not in MODEL_SPECS:
        raise ValueError(f"model_type: expected one of {', '.join(MODEL_SPECS)}, got {model_type!r}")
    return MODEL_SPECS[model_type]


def _expression_split(num_dirs: int, source: str) -> tuple[slice, slice]:
    """Where the shape and expression directions sit in shapedirs' last axis (smplx's rule)."""
    for shape, expression in (FULL_SPACE, SMALL_SPACE):
        if num_dirs >= shape + expression:
            return slice(0, shape), slice(shape, shape + expression)
    raise ValueError(
        f"{source}: shapedirs has {num_dirs} directions; expected {sum(FULL_SPACE)} ({FULL_SPACE[0]} shape + "
        f"{FULL_SPACE[1]} expression) or {sum(SMALL_SPACE)} ({SMALL_SPACE[0]} + {SMALL_SPACE[1]})"
    )


# FLAME's eyeball joints (SMPL-X's, their suffix dropped), the subject's left eye first.
EYE_JOINTS = ("left_eye", "right_eye")


class ParametricModel(nn.Module):
    """A FLAME or SMPL-X model; ``forward(shape, expression, pose, translation)`` gives a :class:`Head`.

    Build one with :func:`load_model`, or from a dict of the official arrays (``v_template``, ``f``,
    ``shapedirs``, ``posedirs``, ``J_regressor``, ``kintree_table``, ``weights``; optional ``lmk_faces_idx``
    / ``lmk_bary_coords``, ``vt`` / ``ft``, ``regions``: name -> vertex ids, and ``static_offset [V, 3]``,
    see :meth:`with_static_offset`). ``source`` starts the message of errors about the data (the argument or
    file it came from).

    SMPL-X hands: the pose is used as given, with full axis-angle per hand joint, so a zero hand pose is a
    flat hand. This is smplx's ``SMPLX(use_pca=False, flat_hand_mean=True)``; the file's ``hands_mean*``
    and ``hands_components*`` are ignored. To match smplx's default ``flat_hand_mean=False``, add
    ``hands_meanl`` / ``hands_meanr`` (reshaped to [15, 3]) to the hand joints' pose.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        model_type: str = "flame",
        *,
        num_shape: int | None = None,
        num_expression: int | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        source: str = "data",
    ):
        super().__init__()
        self.spec = _spec(model_type)
        self.model_type = model_type
        self._source = source
        if not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating-point dtype, got {dtype}")
        if dtype not in (torch.float32, torch.float64):
            # smplx's Rodrigues formula divides by an epsilon that underflows in half precision (NaN vertices).
            raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")

        template = self._array(data, "v_template", np.float64, [None, 3])
        v = template.shape[0]
        joints = len(self.spec.joint_names)
        faces = self._array(data, "f", np.int64, [None, 3], upper=v)
        shapedirs = self._array(data, "shapedirs", np.float64, [v, 3, None], expand=True)
        regressor = self._array(data, "J_regressor", np.float64, [joints, v])  # first: names the joint count
        posedirs = self._array(data, "posedirs", np.float64, [v, 3, (joints - 1) * 9])
        kintree = self._array(data, "kintree_table", np.int64, [2, joints])  # root parent: -1 or uint32 -1
        weights = self._array(data, "weights", np.float64, [v, joints])
        parents = kintree[0].copy()
        parents[0] = -1
        if not (parents[1:] < np.arange(1, joints)).all() or (parents[1:] < 0).any():
            raise ValueError(f"{source}: kintree_table must list each joint after its parent, got parents {parents.tolist()}")

        shape_part, expression_part = _expression_split(shapedirs.shape[-1], source)
        num_shape = check_count("num_shape", shape_part.stop if num_shape is None else num_shape, 0, shape_part.stop)
        max_expression = expression_part.stop - expression_part.start
        num_expression = check_count(
            "num_expression", max_expression if num_expression is None else num_expression, 0, max_expression
        )

        def buffer(name: str, array: np.ndarray | None, float_values: bool = True) -> None:
            tensor = None if array is None else torch.as_tensor(array, dtype=dtype if float_values else torch.long)
            self.register_buffer(name, tensor)

        buffer("v_template", template)
        buffer("faces", faces, float_values=False)
        buffer("shapedirs", shapedirs[:, :, shape_part][:, :, :num_shape])
        buffer("expr_dirs", shapedirs[:, :, expression_part][:, :, :num_expression])
        buffer("posedirs", posedirs.reshape(-1, posedirs.shape[-1]).T)  # [(J-1)*9, V*3], smplx's layout
        buffer("J_regressor", regressor)
        buffer("parents", parents, float_values=False)
        # The kinematic chain on the host too: walking it by the buffer would read each parent back from a GPU.
        self.parent_list = tuple(int(p) for p in parents)
        buffer("lbs_weights", weights)

        has_uv = "vt" in data and "ft" in data
        uvs = self._array(data, "vt", np.float64, [None, 2]) if has_uv else None
        buffer("uvs", uvs)
        buffer("uv_faces", self._array(data, "ft", np.int64, [faces.shape[0], 3], upper=len(uvs)) if has_uv else None, False)

        has_landmarks = "lmk_faces_idx" in data and "lmk_bary_coords" in data
        lmk_faces = self._array(data, "lmk_faces_idx", np.int64, [None], upper=faces.shape[0]) if has_landmarks else None
        buffer("lmk_faces_idx", lmk_faces, float_values=False)
        buffer(
            "lmk_bary_coords", self._array(data, "lmk_bary_coords", np.float64, [len(lmk_faces), 3]) if has_landmarks else None
        )

        has_offset = data.get("static_offset") is not None
        buffer("static_offset", self._array(data, "static_offset", np.float64, [v, 3]) if has_offset else None)

        regions = dict(data.get("regions") or {})
        ids = [self._array(regions, name, np.int64, [None], upper=v, what=f"region {name!r}") for name in regions]
        self.region_names = tuple(str(name) for name in regions)
        buffer("region_ids", np.concatenate(ids) if ids else np.zeros(0, np.int64), float_values=False)
        buffer("region_sizes", np.array([len(i) for i in ids], np.int64), float_values=False)
        self.region_size_list = tuple(len(i) for i in ids)  # (the split below reads no sizes back from a GPU)
        self.to(device=device)

    def _array(
        self,
        data: Mapping[str, Any],
        key: str,
        kind: type,
        shape: list[int | None],
        upper: int | None = None,
        expand: bool = False,
        what: str | None = None,
    ) -> np.ndarray:
        """``data[key]`` as a numpy array of ``kind`` and ``shape`` (None: any size); indices in ``[0, upper)``."""
        what = what or repr(key)
        if key not in data:
            raise ValueError(f"{self._source}: has no {what} array (keys: {', '.join(sorted(map(str, data)))})")
        array = np.asarray(data[key])
        if expand and array.ndim == len(shape) - 1:
            array = array[..., None]  # a single direction, as smplx allows
        if array.ndim != len(shape) or any(s is not None and a != s for a, s in zip(array.shape, shape, strict=True)):
            raise ValueError(
                f"{self._source}: {what} expected shape {_shape_str(shape)} for {self.spec.name}, got {list(array.shape)}"
            )
        if kind is np.int64:
            if not np.issubdtype(array.dtype, np.integer):
                raise ValueError(f"{self._source}: {what} expected integers, got {array.dtype}")
            array = array.astype(np.int64)
            if upper is not None and array.size and (array.min() < 0 or array.max() >= upper):
                raise ValueError(f"{self._source}: {what} expected indices in [0, {upper}), got [{array.min()}, {array.max()}]")
            return array
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"{self._source}: {what} holds NaN or Inf")
        return array

    @property
    def num_shape(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def num_expression(self) -> int:
        return self.expr_dirs.shape[-1]

    @property
    def num_joints(self) -> int:
        return len(self.spec.joint_names)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.spec.joint_names

    def joint_index(self, joint: str, argument: str = "joint") -> int:
        """The index of joint ``joint`` (a name of :attr:`joint_names`); an unknown name is an error naming
        ``argument`` (the config field it came from)."""
        if joint not in self.spec.joint_names:
            raise ValueError(f"{argument}: expected one of {list(self.spec.joint_names)}, got {joint!r}")
        return self.spec.joint_names.index(joint)

    @property
    def num_vertices(self) -> int:
        return self.v_template.shape[0]

    def with_static_offset(self, offset: Float[Tensor, "V 3"] | None) -> ParametricModel:
        """A copy of this model whose identity carries the per-vertex ``offset`` (None: none), as VHAP's
        ``FlameHead.forward`` adds its tracker's ``static_offset``: to the template plus the shape and expression
        blend shapes, before the joints are regressed and the pose correctives and skinning apply. The rest,
        canonical and posed vertices and the joints all move with it; this model is unchanged.

        >>> subject_model = model.with_static_offset(frames.params.static_offset[: model.num_vertices])
        """
        if offset is not None:
            check_float("offset", offset, [self.num_vertices, 3])
        copy = deepcopy(self)
        template = self.v_template
        copy.static_offset = None if offset is None else offset.detach().to(template.device, template.dtype).clone()
        return copy

    @property
    def regions(self) -> dict[str, Tensor]:
        """Region name -> vertex ids, as in the model's masks file (empty without one)."""
        parts = torch.split(self.region_ids, list(self.region_size_list))
        return dict(zip(self.region_names, parts, strict=True))

    def official_arrays(self) -> dict[str, Any]:
        """This model's arrays in the official layout the constructor takes (numpy, float64 and int64, on the host):
        what a function adding vertices (:func:`~headfields.parametric.add_mouth_interior`,
        :func:`~headfields.parametric.add_teeth`) extends, then builds a new model of with :meth:`rebuilt`.
        ``shapedirs`` holds the shape and expression directions where the smallest space that fits them puts them."""
        v = self.num_vertices

        def host(x: Tensor) -> np.ndarray:
            return x.detach().cpu().numpy().astype(np.int64 if not x.is_floating_point() else np.float64)

        fits_small = self.num_shape <= SMALL_SPACE[0] and self.num_expression <= SMALL_SPACE[1]
        space = SMALL_SPACE if fits_small else FULL_SPACE
        directions = np.zeros((v, 3, sum(space)))
        directions[..., : self.num_shape] = host(self.shapedirs)
        directions[..., space[0] : space[0] + self.num_expression] = host(self.expr_dirs)
        data = {
            "v_template": host(self.v_template),
            "f": host(self.faces),
            "shapedirs": directions,
            "posedirs": host(self.posedirs).T.reshape(v, 3, -1),
            "J_regressor": host(self.J_regressor),
            "kintree_table": np.stack([host(self.parents), np.arange(self.num_joints)]),
            "weights": host(self.lbs_weights),
            "regions": {name: host(ids) for name, ids in self.regions.items()},
        }
        optional = {"static_offset": self.static_offset, "vt": self.uvs, "ft": self.uv_faces}
        optional |= {"lmk_faces_idx": self.lmk_faces_idx, "lmk_bary_coords": self.lmk_bary_coords}
        return data | {key: host(x) for key, x in optional.items() if x is not None}

    def rebuilt(self, data: Mapping[str, Any]) -> ParametricModel:
        """A model of the official arrays ``data`` (this model's :meth:`official_arrays`, extended) with this model's
        type, numbers of directions, dtype and device."""
        return ParametricModel(
            data,
            self.model_type,
            num_shape=self.num_shape,
            num_expression=self.num_expression,
            dtype=self.v_template.dtype,
            device=self.v_template.device,
            source="model",
        )

    def extra_repr(self) -> str:
        return (
            f"{self.spec.name}: vertices={self.num_vertices}, faces={self.faces.shape[0]}, joints={self.num_joints}, "
            f"shape={self.num_shape}, expression={self.num_expression}, regions={len(self.region_names)}"
            + (", static offsets" if self.static_offset is not None else "")
        )

    def _parameter(self, name: str, x: Any, shape: list[int | str]) -> Tensor:
        """Check one forward argument's dims and sizes (str: free, e.g. the batch) and cast it to the model's dtype."""
        described = f"{_shape_str(shape)} for this {self.spec.name} model"
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor {described}, got {type(x).__name__}")
        if x.dim() != len(shape) or any(isinstance(s, int) and a != s for a, s in zip(x.shape, shape, strict=True)):
            raise ValueError(f"{name}: expected {described}, got {list(x.shape)}")
        check_float(name, x, shape)  # floating point, finite
        if x.device != self.v_template.device:
            raise ValueError(f"{name}: expected a tensor on {self.v_template.device} (the model's device), got one on {x.device}")
        return x.to(self.v_template.dtype)

    def forward(
        self,
        shape: Float[Tensor, " S"] | None = None,
        expression: Float[Tensor, "B E"] | None = None,
        pose: Float[Tensor, "B J 3"] | None = None,
        translation: Float[Tensor, "B 3"] | None = None,
    ) -> Head:
        """Evaluate the model for B frames of one identity; missing arguments are zeros.

        ``shape [S]`` (one identity), ``expression [B, E]``, ``pose [B, J, 3]`` (axis-angle per joint, in
        ``joint_names`` order), ``translation [B, 3]``. B comes from whichever of the last three is given
        (1 if none). Arguments are cast to the model's dtype, so gradients reach them.
        """
        e, j = self.num_expression, self.num_joints
        given = {
            "expression": (expression, ["B", e]),
            "pose": (pose, ["B", j, 3]),
            "translation": (translation, ["B", 3]),
        }
        checked, batch, batch_from = {}, None, None
        for name, (x, dims) in given.items():
            if x is None:
                continue
            checked[name] = self._parameter(name, x, dims)
            if batch is None:
                batch, batch_from = x.shape[0], name
            elif x.shape[0] != batch:
                raise ValueError(f"{name}: expected batch size {batch} (as {batch_from}), got {list(x.shape)}")
        batch = 1 if batch is None else batch
        if batch == 0:
            raise ValueError(f"{batch_from}: expected at least one frame, got an empty batch")
        template = self.v_template
        zeros = template.new_zeros
        shape = zeros(self.num_shape) if shape is None else self._parameter("shape", shape, [self.num_shape])
        expression = checked.get("expression", zeros(batch, e))
        pose = checked.get("pose", zeros(batch, j, 3))
        translation = checked.get("translation", zeros(batch, 3))

        # smplx.lbs.lbs, step by step, keeping the rest vertices and joint transforms it does not return. The identity's
        # blend is made once for all frames, then each frame's expression blend added (smplx concatenates both bases
        # at every call: a copy of them, and a blend four times as wide, forward and backward, for the same sum).
        canonical = template + blend_shapes(shape[None], self.shapedirs)[0]
        v_shaped = canonical + blend_shapes(expression, self.expr_dirs)
        if self.static_offset is not None:  # VHAP's: after the blend shapes, so the joints move with it
            v_shaped, canonical = v_shaped + self.static_offset, canonical + self.static_offset
        rest_joints = vertices2joints(self.J_regressor, v_shaped)
        rotations = batch_rodrigues(pose.reshape(-1, 3)).view(batch, j, 3, 3)
        identity = torch.eye(3, dtype=template.dtype, device=template.device)
        pose_feature = (rotations[:, 1:] - identity).reshape(batch, -1)
        rest = v_shaped + (pose_feature @ self.posedirs).view(batch, -1, 3)
        posed_joints, relative = _rigid_transforms(rotations, rest_joints, self.parents, self.parent_list)
        blended = torch.matmul(self.lbs_weights, relative.reshape(batch, j, 16)).view(batch, -1, 4, 4)
        vertices = torch.matmul(blended[..., :3, :3], rest[..., None])[..., 0] + blended[..., :3, 3]
        vertices = vertices + translation[:, None]
        transforms = torch.cat(
            [
                torch.cat([relative[..., :3, :3], relative[..., :3, 3:] + translation[:, None, :, None]], dim=-1),
                relative[..., 3:, :],
            ],
            dim=-2,
        )
        landmarks = None
        if self.lmk_faces_idx is not None:
            lmk_faces = self.lmk_faces_idx.expand(batch, -1).contiguous()  # vertices2landmarks views it flat
            landmarks = vertices2landmarks(vertices, self.faces, lmk_faces, self.lmk_bary_coords.expand(batch, -1, -1))
        return Head(
            vertices=vertices,
            rest_vertices=rest,
            canonical_vertices=canonical,
            faces=self.faces,
            uvs=self.uvs,
            uv_faces=self.uv_faces,
            shape=shape,
            expression=expression,
            pose=pose,
            translation=translation,
            joints=posed_joints + translation[:, None],
            joint_transforms=transforms,
            skinning_weights=self.lbs_weights,
            regions=self.regions,
            landmarks=landmarks,
        )


def _rigid_transforms(
    rotations: Float[Tensor, "B J 3 3"], joints: Float[Tensor, "B J 3"], parents: Tensor, parent_list: tuple[int, ...]
) -> tuple[Float[Tensor, "B J 3"], Float[Tensor, "B J 4 4"]]:
    """smplx's ``batch_rigid_transform``: the posed joints and each joint's transform of rest-pose points, the chain
    walked by ``parent_list`` (the ``parents`` buffer on the host; smplx indexes its list by the tensor's elements,
    a read-back from a GPU for each joint)."""
    rest = joints[..., None]
    relative = rest.clone()
    relative[:, 1:] -= rest[:, parents[1:]]
    local = transform_mat(rotations.reshape(-1, 3, 3), relative.reshape(-1, 3, 1)).reshape(-1, joints.shape[1], 4, 4)
    chain = [local[:, 0]]
    for joint in range(1, len(parent_list)):
        chain.append(chain[parent_list[joint]] @ local[:, joint])
    transforms = torch.stack(chain, dim=1)
    homogeneous = torch.nn.functional.pad(rest, [0, 0, 0, 1])
    return transforms[:, :, :3, 3], transforms - torch.nn.functional.pad(transforms @ homogeneous, [3, 0, 0, 0, 0, 0, 0, 0])


def _find_model_file(path: str | Path, model_type: str = "flame", gender: str = "neutral") -> Path:
    """The model file itself if ``path`` is a file; in a folder, the official file name for the gender."""
    spec = _spec(model_type)
    if gender not in GENDERS:
        raise ValueError(f"gender: expected one of {', '.join(GENDERS)}, got {gender!r}")
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"path: {path} does not exist (expected a {spec.name} model file or a folder holding one)")
    names = [n.format(G=gender.upper()) for n in spec.file_names] + list(spec.neutral_names if gender == "neutral" else ())
    for name in names:
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(f"path: no {spec.name} {gender} model file in folder {path}; tried {', '.join(names)}")


def _side_data(folder: Path, spec: ModelSpec, model: dict[str, Any]) -> dict[str, Any]:
    """Landmark embedding, UVs and region masks from the optional side files next to the model file."""
    extra: dict[str, Any] = {}
    if spec.landmarks_file and (folder / spec.landmarks_file).is_file():
        embedding = read_model_file(folder / spec.landmarks_file)
        if "lmk_face_idx" in embedding and "lmk_b_coords" in embedding:
            extra["lmk_faces_idx"], extra["lmk_bary_coords"] = embedding["lmk_face_idx"], embedding["lmk_b_coords"]
    if spec.texture_file and (folder / spec.texture_file).is_file():
        texture = read_model_file(folder / spec.texture_file, keys={"vt", "ft"})  # skips the texture space
        extra.update({k: texture[k] for k in ("vt", "ft") if k in texture})
    if (folder / spec.masks_file).is_file():
        extra["regions"] = read_model_file(folder / spec.masks_file)
    return {k: v for k, v in extra.items() if k not in model}


def load_model(
    path: str | Path,
    model_type: str = "flame",
    gender: str = "neutral",
    *,
    num_shape: int | None = None,
    num_expression: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> ParametricModel:
    """Load a FLAME (``model_type="flame"``) or SMPL-X (``"smplx"``) model from a file or a folder.

    A folder is searched for ``FLAME_{GENDER}.pkl/.npz`` (and ``generic_model.pkl`` for neutral) or
    ``SMPLX_{GENDER}.npz/.pkl``. Side files in the same folder are used when present: landmarks
    (``flame_static_embedding.pkl``; SMPL-X keeps them in the model file), UVs (``FLAME_texture.npz``;
    ``vt``/``ft`` in the SMPL-X file) and regions (``FLAME_masks.pkl`` / ``SMPLX_masks.pkl``).
    ``num_shape`` / ``num_expression`` keep the first directions (default: all in the file). SMPL-X hand
    poses follow smplx's ``flat_hand_mean=True`` (zero pose: flat hand; the file's ``hands_mean*`` is
    ignored, see :class:`ParametricModel`).
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: expected a model file or folder path, got {type(path).__name__}")
    spec = _spec(model_type)
    file = _find_model_file(path, model_type, gender)
    data = read_model_file(file)
    data.update(_side_data(file.parent, spec, data))
    return ParametricModel(
        data,
        model_type,
        num_shape=num_shape,
        num_expression=num_expression,
        dtype=dtype,
        device=device,
        source=f"path: {file}",
    )
