"""MediaPipe's face landmarker (468 points) and selfie segmentation on the CPU, with ai-edge-litert.

The models are MediaPipe's own (:mod:`headfields.apps.tracking.model_files` extracts them from the mediapipe==0.10.21
wheel); the pre- and post-processing around them is written here after MediaPipe's graphs, so the numbers match
its video mode without MediaPipe itself (whose wheel needs numpy<2) or OpenCV::

    from headfields.apps.media import read_video
    from headfields.apps.tracking.mediapipe import FaceLandmarker, SelfieSegmenter

    frames = read_video("selfie.mp4")  # uint8 [N, H, W, 3]
    faces = FaceLandmarker()(frames)  # FaceLandmarks: points [N, 468, 3] in pixels, found [N], score [N]
    faces = FaceLandmarker(irises=True)(frames)  # points [N, 478, 3]: the irises' 5 points each appended
    masks = SelfieSegmenter()(frames)  # float [N, H, W]: foreground probability

Facts taken from the graphs (google-ai-edge/mediapipe, mediapipe/modules/):

- face_detection/face_detection_short_range.pbtxt, face_detection.pbtxt, face_detection_short_range_common.pbtxt:
  the whole image letterboxed (aspect kept, zero border) into 128x128 floats in [-1, 1]; SSD anchors of 4 layers,
  strides 8, 16, 16, 16, offset 0.5, aspect ratio 1 plus an interpolated one, fixed anchor size (896 anchors);
  16 regressors per anchor (box centre x, y, width, height, then 6 keypoints x, y), each divided by 128 and added
  to its anchor; sigmoid scores of logits clipped to +-100, kept above 0.5; weighted non-maximum suppression at
  IoU 0.3.
- face_landmark/face_detection_front_detection_to_roi.pbtxt: the landmark crop is the detection's box, turned so
  that the line from keypoint 0 to keypoint 1 (the eyes) is horizontal, squared on its long side, scaled by 1.5.
- face_landmark/face_landmark_cpu.pbtxt, tensors_to_face_landmarks.pbtxt: that crop at 192x192 in [0, 1] with
  the border replicated; 468 x (x, y, z) in crop pixels (z relative depth, scaled like x); presence is the
  sigmoid of the second output, kept above 0.5; LandmarkProjectionCalculator maps them back (z times the crop
  width).
- face_landmark/face_landmark_landmarks_to_roi.pbtxt, face_landmark_front_cpu.pbtxt (video mode): the next
  frame's crop is the bounding box of this frame's landmarks, turned by the line from landmark 33 to 133,
  squared, scaled by 1.5; detection runs only while no face is tracked.
- iris_landmark/iris_landmark_left_and_right_from_face_landmarks_cpu.pbtxt, iris_landmark_landmarks_to_roi.pbtxt,
  iris_landmark_cpu.pbtxt (the refined mesh's 478 points): each eye's crop is the box of its two corners (landmarks
  33 and 133; 362 and 263), turned so that the first -> second is horizontal, squared on its long side, scaled by
  2.3, at 64x64 in [0, 1] with the border replicated; the second eye's crop mirrored (the model sees left eyes
  only) and its points mirrored back; of the model's outputs the iris's 5 x (x, y, z), the centre first, in crop
  pixels. MediaPipe appends the first eye's 5 points (468..472), then the second's (473..477).
- selfie_segmentation/selfie_segmentation_cpu.pbtxt: the whole image stretched (aspect not kept) to 256x256 in
  [0, 1]; the output is already a probability (activation NONE), resized back to the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from .model_files import mediapipe_model

__all__ = ["FaceLandmarker", "FaceLandmarks", "SelfieSegmenter", "landmarks_of", "load_litert"]

NUM_LANDMARKS = 468
_DETECT_SIZE = 128  # face_detection_short_range.pbtxt: tensor_width/height, x/y/w/h_scale
_LANDMARK_SIZE = 192  # face_landmark_cpu.pbtxt
_SEGMENT_SIZE = 256  # selfie_segmentation_cpu.pbtxt (the square, "general" model)
_ROI_SCALE = 1.5  # both ROI graphs: scale_x = scale_y = 1.5, square_long
_NMS_IOU = 0.3  # face_detection_short_range_common.pbtxt: min_suppression_threshold, WEIGHTED
_ROTATION_FROM_LANDMARKS = (33, 133)  # face_landmark_landmarks_to_roi.pbtxt: rotation_vector start/end
NUM_WITH_IRISES = 478
_IRIS_SIZE = 64  # iris_landmark_cpu.pbtxt
_EYE_ROI_SCALE = 2.3  # iris_landmark_landmarks_to_roi.pbtxt: scale_x = scale_y = 2.3, square_long
_EYE_CORNERS = ((33, 133, False), (362, 263, True))  # each eye's corners, and whether its crop is mirrored
_IRIS_POINTS = 5  # the centre, then four points on the iris's edge


def load_litert() -> ModuleType:
    """``ai_edge_litert.interpreter``: an optional dependency, so its absence is one line naming the extra."""
    try:
        from ai_edge_litert import interpreter
    except ImportError:
        raise ImportError('the tracker\'s landmark detector needs the optional extra: pip install "headfields[track]"') from None
    return interpreter


class _Model:
    """One TFLite interpreter, made once: float32 numpy in, the outputs in the model's order out."""

    def __init__(self, name: str, folder: Path | None, threads: int | None):
        self.interpreter = load_litert().Interpreter(model_path=str(mediapipe_model(name, folder)), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.outputs = [d["index"] for d in self.interpreter.get_output_details()]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(x, dtype=np.float32))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(i) for i in self.outputs]


@dataclass(frozen=True)
class _Roi:
    """A rotated rectangle in image pixels (MediaPipe's NormalizedRect times the image size); rotation is
    clockwise on screen (y down), in radians."""

    cx: float
    cy: float
    width: float
    height: float
    rotation: float = 0.0

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """Points given in the rectangle's unit square ([0, 1]^2, x right, y down) in image pixels."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        u = (uv[..., 0] - 0.5) * self.width
        v = (uv[..., 1] - 0.5) * self.height
        return np.stack([self.cx + c * u - s * v, self.cy + s * u + c * v], axis=-1)


def _check_images(images: object) -> Tensor:
    """``images`` as a uint8 tensor [N, H, W, 3] (on its device: the results go back there)."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, Tensor):
        raise TypeError(f"images: expected a uint8 torch.Tensor or numpy array [N, H, W, 3], got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3 or min(images.shape[1:3], default=0) < 1:
        raise ValueError(f"images: expected uint8 [N, H, W, 3] (RGB frames), got {images.dtype} {list(images.shape)}")
    return images


def _crop(image: Tensor, roi: _Roi, out_w: int, out_h: int, replicate: bool) -> Tensor:
    """The rotated ``roi`` of ``image`` (float [1, 3, H, W]) resampled bilinearly to [1, out_h, out_w, 3]: what
    MediaPipe's ImageToTensorCalculator does (the roi's corners are the output's outer pixel corners)."""
    _, _, h, w = image.shape
    c, s = math.cos(roi.rotation), math.sin(roi.rotation)
    # affine_grid's output coordinates are in [-1, 1] over the output's pixel corners (align_corners=False), the
    # sampling coordinates likewise over the image's: out (a, b) -> roi point -> image pixel -> [-1, 1].
    theta = torch.tensor(
        [
            [roi.width * c / w, -roi.height * s / w, 2 * roi.cx / w - 1],
            [roi.width * s / h, roi.height * c / h, 2 * roi.cy / h - 1],
        ],
        dtype=image.dtype,
    )[None]
    grid = F.affine_grid(theta, [1, 3, out_h, out_w], align_corners=False)
    mode = "border" if replicate else "zeros"
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=mode, align_corners=False).permute(0, 2, 3, 1)


def _anchors() -> np.ndarray:
    """SSD anchor centres [896, 2] in [0, 1] (ssd_anchors_calculator.cc with the short-range options): layers of
    equal stride merge, and each layer adds two anchors per cell (aspect ratio 1 and the interpolated one); with a
    fixed anchor size every anchor is 1 x 1, so only the centres matter."""
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):  # strides 8, 16, 16, 16 -> 2 anchors at 16x16, 3 x 2 at 8x8
        n = math.ceil(_DETECT_SIZE / stride)
        y, x = np.meshgrid((np.arange(n) + 0.5) / n, (np.arange(n) + 0.5) / n, indexing="ij")
        centres.append(np.repeat(np.stack([x.ravel(), y.ravel()], axis=-1), per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def _landmarks_roi(points: np.ndarray) -> _Roi:
    """face_landmark_landmarks_to_roi.pbtxt: the crop of the next frame from this frame's landmarks [468, 3]."""
    xy = points[:, :2]
    return _square_roi(xy.min(axis=0), xy.max(axis=0), *xy[list(_ROTATION_FROM_LANDMARKS)])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))  # no overflow warning for large negative logits, unlike 1 / (1 + exp(-x))


def _normalize_angle(angle: float) -> float:
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def _square_roi(lo: np.ndarray, hi: np.ndarray, start: np.ndarray, end: np.ndarray, scale: float = _ROI_SCALE) -> _Roi:
    """DetectionsToRectsCalculator + RectTransformationCalculator: the box [lo, hi] (pixels) turned so that
    start -> end is horizontal (target angle 0), squared on its long side and scaled by ``scale``."""
    rotation = _normalize_angle(-math.atan2(-(end[1] - start[1]), end[0] - start[0]))
    side = float(max(hi[0] - lo[0], hi[1] - lo[1])) * scale
    centre = (lo + hi) / 2
    return _Roi(float(centre[0]), float(centre[1]), side, side, rotation)


@dataclass
class FaceLandmarks:
    """MediaPipe's 468 face landmarks per frame (478 with the irises): x, y in pixels of the input images (pixel
    centres at +0.5), z MediaPipe's relative depth on the same pixel scale (smaller is nearer the camera). Where no
    face was found ``found`` is False, ``score`` 0 and the points NaN."""

    points: Float[Tensor, "N P 3"]
    found: Bool[Tensor, " N"]
    score: Float[Tensor, " N"]


def landmarks_of(rows: Float[Tensor, "N P 4"]) -> FaceLandmarks:
    """:class:`FaceLandmarks` from the rows :meth:`FaceLandmarker.video` gives a frame, stacked."""
    found = torch.isfinite(rows[:, 0, 3])
    return FaceLandmarks(points=rows[..., :3], found=found, score=torch.where(found, rows[:, 0, 3], 0.0))


class FaceLandmarker:
    """MediaPipe's face landmarker in video mode, one face: each call is one video, read in order. The face is
    detected on the first frame; each next frame is cropped where the previous frame's landmarks say the face is,
    and detection runs again on a frame whose crop holds no face (MediaPipe runs it on the frame after; retrying
    the same frame loses one frame less).

    ``detection_threshold`` is the detector's minimum score and ``presence_threshold`` the landmark model's
    minimum face presence (both MediaPipe's defaults); ``threads`` is the interpreters' thread count (None:
    LiteRT's default). ``irises``: MediaPipe's refined mesh, the iris model's 5 points an eye appended (478).
    ``refine_detections`` (not MediaPipe's): on a frame where the face was detected, the
    landmarks are computed a second time in the crop their first pass gives, as on a tracked frame. The
    detector's eye keypoints turn its crop up to ~15 degrees off on a face turned 90 degrees; on the synthetic
    head turned -90 degrees the second pass took the first frame's worst mouth corner from 13.6 to 7.9 px.
    """

    def __init__(
        self,
        folder: Path | None = None,
        detection_threshold: float = 0.5,
        presence_threshold: float = 0.5,
        threads: int | None = None,
        refine_detections: bool = True,
        irises: bool = False,
    ):
        for name, value in (("detection_threshold", detection_threshold), ("presence_threshold", presence_threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ValueError(f"{name}: expected a probability in [0, 1], got {value!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected a positive int or None, got {threads!r}")
        self.detection_threshold = float(detection_threshold)
        self.presence_threshold = float(presence_threshold)
        self.refine_detections = bool(refine_detections)
        self._detector = _Model("face_detection_short_range", folder, threads)
        self._landmarks = _Model("face_landmark", folder, threads)
        self._irises = _Model("iris_landmark", folder, threads) if irises else None
        self._anchors = _anchors()

    def detect(self, image: Tensor) -> _Roi | None:
        """The landmark crop of the best face in ``image`` (float [1, 3, H, W] in [0, 1]), or None."""
        _, _, h, w = image.shape
        side = float(max(w, h))  # letterbox: the image centred in a square, zeros around it
        letterbox = _Roi(w / 2, h / 2, side, side)
        tensor = _crop(image, letterbox, _DETECT_SIZE, _DETECT_SIZE, replicate=False) * 2 - 1
        regressors, logits = self._detector(tensor.numpy())
        raw, scores = regressors[0] / _DETECT_SIZE, _sigmoid(np.clip(logits[0, :, 0], -100, 100))
        keep = scores >= self.detection_threshold
        if not keep.any():
            return None
        raw, scores, anchors = raw[keep], scores[keep], self._anchors[keep]
        centre, size = raw[:, :2] + anchors, raw[:, 2:4]
        keypoints = raw[:, 4:].reshape(-1, 6, 2) + anchors[:, None]
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        # Weighted NMS, the first cluster only (one face): the best box and those overlapping it, averaged by score.
        best = int(np.argmax(scores))
        lo, hi = np.maximum(boxes[best, :2], boxes[:, :2]), np.minimum(boxes[best, 2:], boxes[:, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
        areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        iou = inter / np.maximum(areas[best] + areas - inter, 1e-12)
        weights = scores * (iou > _NMS_IOU)
        weights[best] = scores[best]
        weights = weights / weights.sum()
        box = (weights[:, None] * boxes).sum(axis=0)
        eyes = (weights[:, None, None] * keypoints[:, :2]).sum(axis=0)
        corners = letterbox.to_image(box.reshape(2, 2))
        eyes = letterbox.to_image(eyes)
        return _square_roi(corners[0], corners[1], eyes[0], eyes[1])

    def landmarks(self, image: Tensor, roi: _Roi) -> tuple[np.ndarray, float]:
        """The 468 points (pixels) in ``roi`` of ``image`` and the face presence probability."""
        tensor = _crop(image, roi, _LANDMARK_SIZE, _LANDMARK_SIZE, replicate=True)
        raw, logit = self._landmarks(tensor.numpy())
        raw = raw.reshape(NUM_LANDMARKS, 3) / _LANDMARK_SIZE
        presence = float(_sigmoid(np.clip(logit.reshape(1), -100, 100))[0])
        xy = roi.to_image(raw[:, :2])
        return np.concatenate([xy, raw[:, 2:] * roi.width], axis=1), presence

    def irises(self, image: Tensor, points: np.ndarray) -> np.ndarray:
        """The irises' 5 points each ``[10, 3]`` (pixels) in ``image`` (float [1, 3, H, W]), from the eye corners of
        the face's 468 ``points``."""
        out = []
        for start, end, mirrored in _EYE_CORNERS:
            corners = points[[start, end], :2]
            roi = _square_roi(corners.min(axis=0), corners.max(axis=0), *corners, scale=_EYE_ROI_SCALE)
            tensor = _crop(image, roi, _IRIS_SIZE, _IRIS_SIZE, replicate=True)
            outputs = self._irises(tensor.flip(2).numpy() if mirrored else tensor.numpy())
            raw = next(o for o in outputs if o.size == _IRIS_POINTS * 3).reshape(_IRIS_POINTS, 3) / _IRIS_SIZE
            if mirrored:
                raw[:, 0] = 1 - raw[:, 0]
            out.append(np.concatenate([roi.to_image(raw[:, :2]), raw[:, 2:] * roi.width], axis=1))
        return np.concatenate(out)

    def __call__(self, images: Tensor | np.ndarray, progress: Callable[[int], object] | None = None) -> FaceLandmarks:
        """Landmarks of uint8 frames [N, H, W, 3] (torch or numpy), read as one video in order; the models run on
        the CPU, the results go to the frames' device. ``progress(1)`` is called after each frame."""
        frames = _check_images(images)
        step = self.video()
        rows = []
        for i in range(frames.shape[0]):
            rows.append(step(frames[i]))
            if progress is not None:
                progress(1)
        return landmarks_of(torch.stack(rows).to(frames.device))

    def video(self) -> Callable[[Tensor], Tensor]:
        """One video read a frame at a time: a function of each next uint8 frame [H, W, 3] in order, giving its 468
        points (478 with the irises) and the face presence ``[P, 4]`` (x, y, z, presence; NaN where no face was found), which
        :func:`landmarks_of` turns into :class:`FaceLandmarks`. For frames decoded one by one
        (:func:`~headfields.apps.tracking.ingest.read_frames`'s ``each``), so that a long clip is never held whole."""
        roi: _Roi | None = None  # the crop tracked from the previous frame

        def step(frame: Tensor) -> Tensor:
            nonlocal roi
            image = _check_images(frame[None])[0].cpu().permute(2, 0, 1)[None].float() / 255
            result = self._face(image, roi) if roi is not None else None
            if result is None:
                detected = self.detect(image)
                result = self._face(image, detected) if detected is not None else None
                if result is not None and self.refine_detections:
                    result = self._face(image, _landmarks_roi(result[0])) or result
            row = np.full((NUM_LANDMARKS if self._irises is None else NUM_WITH_IRISES, 4), np.nan, dtype=np.float32)
            if result is None:
                roi = None
            else:
                row[:NUM_LANDMARKS, :3], row[:, 3] = result
                if self._irises is not None:
                    row[NUM_LANDMARKS:, :3] = self.irises(image, result[0])
                roi = _landmarks_roi(result[0])
            return torch.from_numpy(row)

        return step

    def _face(self, image: Tensor, roi: _Roi) -> tuple[np.ndarray, float] | None:
        """:meth:`landmarks` where the face presence passes the threshold, else None."""
        points, presence = self.landmarks(image, roi)
        return (points, presence) if presence >= self.presence_threshold else None


class SelfieSegmenter:
    """MediaPipe's selfie segmentation (the square "general" model): the probability that each pixel is a person."""

    def __init__(self, folder: Path | None = None, threads: int | None = None):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads: expected a positive int or None, got {threads!r}")
        self._model = _Model("selfie_segmentation", folder, threads)

    def __call__(self, images: Tensor | np.ndarray, progress: Callable[[int], object] | None = None) -> Float[Tensor, "N H W"]:
        """Foreground probability [N, H, W] of uint8 frames [N, H, W, 3] (torch or numpy), at the frames' size;
        ``progress(1)`` is called after each frame."""
        frames = _check_images(images)
        n, h, w, _ = frames.shape
        masks = torch.empty(n, h, w)
        for i in range(n):
            image = frames[i].cpu().permute(2, 0, 1)[None].float() / 255
            tensor = _crop(image, _Roi(w / 2, h / 2, float(w), float(h)), _SEGMENT_SIZE, _SEGMENT_SIZE, replicate=False)
            (mask,) = self._model(tensor.numpy())
            mask = torch.from_numpy(mask).reshape(1, 1, _SEGMENT_SIZE, _SEGMENT_SIZE)
            masks[i] = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)
            if progress is not None:
                progress(1)
        return masks.to(frames.device)
