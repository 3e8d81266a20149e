"""GaussianAvatars' FLAME fine-tuning (``scene/flame_gaussian_model.py``: ``training_setup``, ``select_mesh_by_timestep``):
each training timestep's tracked expression, pose (FLAME's global rotation, neck, jaw and eyes) and translation
become parameters, optimised with the Gaussians in the same Adam at GaussianAvatars' rates (``flame_expr_lr``,
``flame_pose_lr``, ``flame_trans_lr``); the shape stays the tracker's, as there.

A *timestep* is a distinct row of tracked parameters: the frames a rig's cameras take at one instant share one, and
so one set of fitted values (GaussianAvatars indexes its ``flame_param`` by ``timestep_index``). Wherever the model
poses a frame whose tracking is a training timestep's (a training step, a held-out score, ``render``, the viewer,
the export) it is posed with the fitted values: GaussianAvatars' novel-view frames. Any other frame (an unseen
timestep: self-reenactment) keeps its own tracking, as GaussianAvatars' never-updated rows do.

    fitted = FittedTracking()
    timesteps = fitted.start(train_head)  # the timestep of each training frame
    vertices = fitted.vertices(parametric, head, frame)  # fitted for a training timestep, else head.vertices[frame]
"""

from __future__ import annotations

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from ...checks import trusted_values
from ...parametric import Head, SubjectModel

__all__ = ["FITTED_NAMES", "FittedTracking"]

# The fitted parameters, each the Head field it replaces; each is a param group of its own (its rate).
FITTED_NAMES = ("expression", "pose", "translation")


class FittedTracking(nn.Module):
    """The fitted per-timestep parameters of one run (see the module docstring): empty until :meth:`start` (or a
    checkpoint) gives them timesteps; ``tracked`` keeps each timestep's tracking as it was (GaussianAvatars'
    ``flame_param_orig``), which is how a frame is known to be a training timestep's."""

    def __init__(self) -> None:
        super().__init__()
        self.expression = nn.Parameter(torch.zeros(0, 0))  # [T, E]
        self.pose = nn.Parameter(torch.zeros(0, 0, 3))  # [T, J, 3] axis-angle, the model's joint order
        self.translation = nn.Parameter(torch.zeros(0, 3))  # [T, 3]
        self.register_buffer("tracked", torch.zeros(0, 0))  # [T, E + 3 J + 3]: each timestep's tracked row
        self._index: dict[bytes, int] | None = None  # a tracked row's bytes -> its timestep
        # A checkpoint of a run trained before fine-tuning existed: the run goes on (and renders) without it.
        self.absent_from_checkpoint = False

    def clear(self) -> None:
        """No timestep: every frame posed with its own tracking (a run without fine-tuning)."""
        for name, value in self.named_parameters(recurse=False):
            setattr(self, name, nn.Parameter(value.new_zeros(0, *value.shape[1:])))
        self.tracked = self.tracked.new_zeros(0, 0)
        self._index = None

    @property
    def num_timesteps(self) -> int:
        return self.tracked.shape[0]

    def start(self, head: Head) -> list[int]:
        """The timestep of each frame of ``head`` (the training frames' tracked head), the timesteps numbered in the
        order they first appear. The parameters start at the tracking, unless they already hold these timesteps
        (a resumed run's, loaded from its checkpoint)."""
        rows = _rows(head)
        index: dict[bytes, int] = {}
        firsts, timesteps = [], []
        for frame, key in enumerate(_keys(rows)):
            if key not in index:
                index[key] = len(firsts)
                firsts.append(frame)
            timesteps.append(index[key])
        tracked = rows[firsts]
        if self.tracked.shape != tracked.shape or not torch.equal(self.tracked, tracked):
            with torch.no_grad():
                for name in FITTED_NAMES:
                    setattr(self, name, nn.Parameter(getattr(head, name)[firsts].detach().clone()))
            self.tracked = tracked
        self._index = index
        return timesteps

    def timesteps(self, head: Head) -> list[int | None]:
        """The training timestep of each frame of ``head`` whose tracking is one's, None for the others (a host
        read of the head's parameters)."""
        if self.num_timesteps == 0 or _width(head) != self.tracked.shape[1]:
            return [None] * head.num_frames
        if self._index is None:
            self._index = {key: t for t, key in enumerate(_keys(self.tracked))}
        return [self._index.get(key) for key in _keys(_rows(head).to(self.tracked.dtype))]

    def vertices(self, parametric: SubjectModel, head: Head, frame: int, timestep: int | None = None) -> Float[Tensor, "V 3"]:
        """Frame ``frame`` of ``head`` posed: by ``parametric`` with timestep ``timestep``'s fitted values (found from
        the frame's tracking when None), or the head's own vertices for a frame of no training timestep."""
        if timestep is None:
            if self.num_timesteps == 0:
                return head.vertices[frame]
            timestep = self.timesteps(head.select([frame]))[0]
            if timestep is None:
                return head.vertices[frame]
        t = slice(timestep, timestep + 1)
        with trusted_values():  # the fitted values are the optimiser's, from tracking that was checked on reading
            posed = parametric(shape=head.shape, **{name: getattr(self, name)[t] for name in FITTED_NAMES})
        return posed.vertices[0]

    def fitted_head(self, parametric: SubjectModel, head: Head) -> Head:
        """``head`` with the fitted values of the frames of a training timestep (the others as tracked), evaluated by
        ``parametric``; ``head`` itself when none is."""
        timesteps = self.timesteps(head)
        hits = [(frame, t) for frame, t in enumerate(timesteps) if t is not None]
        if not hits:
            return head
        frames = torch.tensor([f for f, _ in hits], device=head.vertices.device)
        rows = torch.tensor([t for _, t in hits], device=self.tracked.device)
        values = {}
        for name in FITTED_NAMES:
            value = getattr(head, name).detach().clone()
            value[frames] = getattr(self, name).detach()[rows].to(value)
            values[name] = value
        return parametric(shape=head.shape, **values)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        if not any(key.startswith(prefix) for key in state_dict):
            self.absent_from_checkpoint = True  # an older run: nothing fitted, nothing missing, none to fit
            self.clear()
            return
        # The checkpoint's number of timesteps and widths: take its shapes before its values go in.
        for name, value in [*self.named_parameters(recurse=False), *self.named_buffers(recurse=False)]:
            stored = state_dict.get(prefix + name)
            if stored is not None and stored.shape != value.shape:
                shaped = value.new_empty(stored.shape)
                if isinstance(value, nn.Parameter):
                    setattr(self, name, nn.Parameter(shaped))
                else:
                    setattr(self, name, shaped)
        self._index = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)


def _rows(head: Head) -> Float[Tensor, "B D"]:
    """Each frame's tracked parameters in one row: expression, pose, translation."""
    b = head.num_frames
    return torch.cat([head.expression.reshape(b, -1), head.pose.reshape(b, -1), head.translation.reshape(b, -1)], dim=1).detach()


def _width(head: Head) -> int:
    return sum(int(np.prod(getattr(head, name).shape[1:])) for name in FITTED_NAMES)


def _keys(rows: Tensor) -> list[bytes]:
    """The rows' exact values as dictionary keys (a frame of a timestep carries its tracking bit for bit)."""
    array = np.ascontiguousarray(rows.cpu().numpy())
    return [row.tobytes() for row in array]
