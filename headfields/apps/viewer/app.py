"""An interactive viewer of a trained run in the browser (viser): the avatar seen from the browser's free camera,
driven by GUI sliders (expression, jaw, head pose) or by the capture's own tracking, frame by frame. The server
renders pictures of it; a Gaussian run's splats the browser draws itself (:mod:`~headfields.apps.viewer.splats`).

    with AvatarViewer("outputs/insta", port=8080) as viewer:  # serves http://127.0.0.1:8080
        input("press enter to stop")

The parts a test reaches without a browser are pure functions: :func:`~headfields.apps.viewer.state.state_head` (the GUI
state -> a :class:`~headfields.parametric.Head`), :func:`~headfields.apps.viewer.camera.viser_camera` (viser's camera ->
:class:`PinholeCameras`) and :func:`render_avatar`.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ...cameras import PinholeCameras, Rays, image_pixels
from ...heads import mesh_depth
from ...networks import check_precision, products_in
from ...parametric import Head
from ...parametric.tracked_meshes import TrackedMeshModel
from ...renderers.volume import INTERACTIVE_TRANSMITTANCE, check_early_stop
from ...training import CHECKPOINT_NAME, render_pixels, render_view
from ..runs import Run, load_run
from .camera import MOVING_PIXELS, MOVING_SECONDS, RESTING_PIXELS, RESTING_SECONDS, frame_pixels, viser_camera
from .splats import browser_splats, show_splats
from .state import ViewerState, state_head

__all__ = ["AvatarViewer", "depth_image", "render_avatar"]

EXPRESSION_SLIDERS = 10  # the first expression coefficients the GUI offers
SPEED_SMOOTHING = 0.5  # weight of the newest frame in the pixels-a-second estimate
REST_SECONDS = 0.3
WATCH_SECONDS = 1.0  # how often --watch looks at the checkpoint's mtime
THREAD_PREFIX = "headfields-viewer"  # every thread the viewer starts is named so; a test checks none outlives stop()
SPLATS_NODE = "/splats"  # the scene node of a Gaussian run's splats


def render_avatar(
    model, cameras: PinholeCameras, head: Head, depth: bool, chunk: int, device, early_stop: float = INTERACTIVE_TRANSMITTANCE
) -> Tensor:
    """Colour [H, W, 3] in [0, 1] of camera 0 of ``cameras`` seeing frame 0 of ``head``, rays stopped at ``early_stop``,
    or with ``depth`` its depth [H, W]: the model's composited depth where its ``render`` returns one (NeRF and NeuS
    models: a Composite's ``depth``, 0 for empty rays; a rasteriser's ``render_camera``: its expected depth), else the
    distance to the tracked mesh (0 where a ray misses)."""
    if not depth:
        return render_view(model, cameras, 0, head, 0, chunk, device, early_stop)
    if model.draws_images:  # a rasteriser: its expected depth, 0 where nothing is drawn
        with torch.no_grad():
            out = model.render_camera(cameras.to(device), 0, head, 0)
        z = torch.where(out.alpha > 0, out.depth / out.alpha.clamp(min=1e-12), 0.0).cpu()
        # Camera z to distance along the pixel's ray, as the other models' depths are.
        pixels = image_pixels(cameras.to("cpu")).reshape(cameras.height, cameras.width, 2).to(z)
        ray = torch.stack([(pixels[..., 0] - cameras.cx) / cameras.fx, (pixels[..., 1] - cameras.cy) / cameras.fy], -1)
        return z * torch.sqrt(1 + (ray**2).sum(-1))

    def depth_of(rays: Rays) -> Tensor:
        result = model.render(rays, head)
        values = getattr(getattr(result, "composite", result), "depth", None)
        return mesh_depth(head, rays) if values is None else values

    return render_pixels(depth_of, cameras.to(device), 0, chunk)[..., 0]


def depth_image(depth: Tensor) -> np.ndarray:
    """A depth map [H, W] (0: nothing) as a grey uint8 image [H, W, 3]: near bright, far dark, nothing black."""
    hit = depth > 0
    grey = torch.zeros_like(depth)
    if hit.any():
        near, far = depth[hit].min(), depth[hit].max()
        grey[hit] = 1 - 0.8 * (depth[hit] - near) / (far - near).clamp_min(1e-6)
    return (grey[..., None].expand(-1, -1, 3).numpy() * 255 + 0.5).astype(np.uint8)


@dataclass
class _Request:
    camera: PinholeCameras
    moving: bool
    canvas: int = 0  # the browser canvas's longer side in pixels (0: not known)


class AvatarViewer:
    """A viser server showing the run at ``run_or_path`` (a :class:`Run`, or a run folder loaded on ``device``).

    ``host`` defaults to localhost: only this machine reaches the viewer; ``"0.0.0.0"`` serves every network
    interface. ``watch``: reload the checkpoint whenever training writes a new one. Renders happen in one worker
    thread, one at a time; a newer camera or slider state replaces a request still queued. The image size follows
    the measured render speed (:func:`frame_pixels`): small while the camera or a slider moves, then the browser
    canvas's size, or what renders in RESTING_SECONDS, once it rests; ``moving_pixels`` and ``resting_pixels`` cap
    the longer side of each (None: the canvas alone). The GUI shows each frame's size and rate.

    ``splats``: for a model whose output is Gaussians (one with ``splats(head, frame)``), the browser draws the
    splats itself (None: on for such a run; a GUI toggle switches): they are sent when the frame, a slider, the split
    or the run changes, never for a camera move, so orbiting runs at the browser's frame rate. ``depth`` is still
    the server's picture.

    >>> viewer = AvatarViewer("outputs/insta", port=8080).start()
    >>> viewer.stop()
    """

    def __init__(
        self,
        run_or_path: Run | str | Path,
        host: str = "127.0.0.1",
        port: int = 8080,
        watch: bool = False,
        device: str | torch.device | None = None,
        moving_pixels: int | None = None,
        resting_pixels: int | None = None,
        chunk: int | None = None,
        early_stop: float = INTERACTIVE_TRANSMITTANCE,
        precision: str = "bfloat16",
        splats: bool | None = None,
    ):
        # Each ray's stop (instant-ngp's GUI: 1e-2; its scores 1e-4) and the decoders' products (tiny-cuda-nn's: half).
        self.early_stop, self.precision = check_early_stop(early_stop), check_precision(precision)
        # The viewer shows the model, never a capture image: the run is loaded without them.
        self.run = run_or_path if isinstance(run_or_path, Run) else load_run(run_or_path, device, pixels=False)
        self.host, self.port, self.watch = host, port, watch
        self.moving_pixels, self.resting_pixels = moving_pixels, resting_pixels
        self.chunk = self.run.config.training.render_chunk if chunk is None else chunk  # None: the run's
        self.gaussian = hasattr(self.run.model, "splats")  # a model whose output is Gaussians (as export tells them)
        if splats and not self.gaussian:
            raise ValueError(
                f"splats: only a Gaussian run's splats can be drawn by the browser, not {type(self.run.model).__name__}'s"
            )
        self.initial_splats = self.gaussian if splats is None else bool(splats)  # the GUI toggle's first value
        self.server = None
        self.frames_rendered = 0  # images sent to browsers (tests wait on it)
        self.sharp_frames = 0  # ... of them at the resting resolution
        self.shown_state: ViewerState | None = None  # the state of the last image or splats sent
        self.splats_sent = 0  # splat sets sent to the browsers (tests wait on it)
        self.pixels_per_second: float | None = None  # the render speed measured on the frames so far
        self._lock = threading.Condition()
        self._requests: dict[int, _Request] = {}  # client id -> its newest request
        self._resting: dict[int, tuple[_Request, float]] = {}  # client id -> its last moving request, its time
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mesh = None
        self._mesh_vertices: np.ndarray | None = None
        self._splats = None  # the splats' scene node, and what they show: (the run's id, the state's pose)
        self._splats_of: tuple | None = None
        self._pictured: set[int] = set()  # clients whose background holds a server picture
        self._gui: dict = {}
        self._checkpoint_mtime = self._mtime()

    # -- the model's side ------------------------------------------------------------------------------------------
    @property
    def has_params(self) -> bool:
        """Whether the sliders drive the head (a parametric model with tracked parameters)."""
        return not isinstance(self.run.model.parametric, TrackedMeshModel) and self.run.subject.train.params is not None

    def splits(self) -> tuple[str, ...]:
        return ("train", *self.run.subject.held_out)  # every held-out split the run loaded (val and test)

    def head(self, state: ViewerState) -> Head:
        """The head ``state`` asks for, on the run's device (see :func:`state_head`)."""
        run = self.run
        frames = run.frames(state.split)
        train = run.subject.train
        neutral = None if train.params is None else train.params.translation[0]  # keeps the neutral head in view
        head = state_head(run.model.parametric, state, frames.params, neutral, run.head(state.split))
        codes = run.head(state.split).codes
        if codes is not None and head.codes is None and state.frame is not None:
            head = dataclasses.replace(head, codes=codes[state.frame : state.frame + 1])
        return head

    def head_center(self) -> Tensor:
        vertices = self.run.train_head.vertices[0].detach()
        return ((vertices.amin(dim=0) + vertices.amax(dim=0)) / 2).cpu()

    # -- the server ------------------------------------------------------------------------------------------------
    def start(self) -> AvatarViewer:
        try:
            import viser
        except ImportError as error:
            raise ImportError(f"viewer: needs viser ({error}): pip install 'headfields[viewer]'") from None

        if self.server is not None:
            return self
        self._stopping.clear()
        self._splats, self._splats_of, self._pictured = None, None, set()  # a new server's scene is empty
        self.server = viser.ViserServer(host=self.host, port=self.port, verbose=False)
        self.port = self.server.get_port()
        if self.host in ("0.0.0.0", "::", ""):
            print(f"viewer: reachable from other machines on this network at port {self.port} (--host {self.host})")
        print(f"viewer: http://{'localhost' if self.host in ('127.0.0.1', 'localhost') else self.host}:{self.port}")
        self._setup_scene()
        self._setup_gui()
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)
        self._spawn("render", self._render_loop)
        if self.watch:
            self._spawn("watch", self._watch_loop)
        return self

    def stop(self) -> None:
        """Stops the server and joins the viewer's threads: the port is free again once this returns."""
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []
        if self.server is not None:
            self.server.stop()
            self.server = None

    def __enter__(self) -> AvatarViewer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _spawn(self, name: str, target) -> None:
        thread = threading.Thread(target=target, name=f"{THREAD_PREFIX}-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _initial_camera(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """The capture's first camera: its position, the head centre, its image-up, its vertical field of view."""
        cameras = self.run.subject.train.cameras
        c2w = cameras.camera_to_world[0].detach().double().cpu().numpy()
        return c2w[:3, 3], self.head_center().double().numpy(), -c2w[:3, 1], cameras.fov_y

    def _setup_scene(self) -> None:
        position, center, up, fov = self._initial_camera()
        scene = self.server.scene
        scene.set_up_direction(tuple(float(v) for v in up))
        initial = self.server.initial_camera
        initial.position, initial.look_at, initial.up, initial.fov = position, center, up, fov

    def _setup_gui(self) -> None:
        gui, run = self.server.gui, self.run
        g = self._gui
        parametric = run.model.parametric
        count = min(EXPRESSION_SLIDERS, parametric.num_expression) if self.has_params else 0
        if not self.has_params:
            gui.add_markdown(
                "**Tracked meshes without parameters**: only the frame slider drives the head; the expression, jaw "
                "and head-pose sliders are disabled."
            )
        with gui.add_folder("Tracking"):
            g["split"] = gui.add_dropdown("split", self.splits(), initial_value="train")
            g["frame"] = gui.add_slider("frame", -1 if self.has_params else 0, len(run.subject.train) - 1, 1, 0)
            g["reset"] = gui.add_button("reset to neutral", disabled=not self.has_params)
        with gui.add_folder("Pose"):
            disabled = not self.has_params or "jaw" not in parametric.joint_names
            g["jaw"] = gui.add_slider("jaw", -10.0, 30.0, 0.5, 0.0, disabled=disabled)
            g["yaw"] = gui.add_slider("yaw", -60.0, 60.0, 1.0, 0.0, disabled=not self.has_params)
            g["pitch"] = gui.add_slider("pitch", -45.0, 45.0, 1.0, 0.0, disabled=not self.has_params)
            g["roll"] = gui.add_slider("roll", -45.0, 45.0, 1.0, 0.0, disabled=not self.has_params)
        with gui.add_folder("Expression", expand_by_default=count > 0):
            g["expression"] = [gui.add_slider(f"expression {k}", -3.0, 3.0, 0.05, 0.0) for k in range(count)]
        with gui.add_folder("Display"):
            g["mesh"] = gui.add_checkbox("tracked mesh overlay", False)
            g["depth"] = gui.add_checkbox("depth", False)
            if self.gaussian:
                g["splats"] = gui.add_checkbox("browser draws the splats", self.initial_splats)
            g["status"] = gui.add_markdown(f"step {run.step}")
        toggles = (g["mesh"], g["depth"], *([g["splats"]] if self.gaussian else []))
        for handle in (g["frame"], g["jaw"], g["yaw"], g["pitch"], g["roll"], *toggles, *g["expression"]):
            handle.on_update(lambda _: self._changed())
        g["split"].on_update(lambda _: self._split_changed())
        g["reset"].on_click(lambda _: self.reset())

    def state(self) -> ViewerState:
        """The GUI's state now (frame -1: the neutral head)."""
        g = self._gui
        frame = int(g["frame"].value)
        return ViewerState(
            expression=tuple(float(s.value) for s in g["expression"]),
            jaw=float(g["jaw"].value) if self.has_params else 0.0,
            yaw=float(g["yaw"].value) if self.has_params else 0.0,
            pitch=float(g["pitch"].value) if self.has_params else 0.0,
            roll=float(g["roll"].value) if self.has_params else 0.0,
            frame=None if frame < 0 else frame,
            split=g["split"].value,
            mesh=bool(g["mesh"].value),
            depth=bool(g["depth"].value),
            splats=bool(g["splats"].value) if self.gaussian else False,
        )

    def reset(self) -> None:
        """Every slider to zero, the neutral head."""
        g = self._gui
        with self.server.atomic():
            for handle in (g["jaw"], g["yaw"], g["pitch"], g["roll"], *g["expression"]):
                handle.value = 0.0
            g["frame"].value = -1
        self._changed()

    def _split_changed(self) -> None:
        frames = self.run.frames(self._gui["split"].value)
        slider = self._gui["frame"]
        slider.max = len(frames) - 1
        slider.value = min(slider.value, len(frames) - 1)
        self._changed()

    # -- requests and the render worker ----------------------------------------------------------------------------
    def _pixels(self, canvas: int, aspect: float, moving: bool) -> int:
        """The longer image side of the next frame (see the class docstring)."""
        cap = self.moving_pixels if moving else self.resting_pixels
        seconds, unmeasured = (MOVING_SECONDS, MOVING_PIXELS) if moving else (RESTING_SECONDS, RESTING_PIXELS)
        return frame_pixels(seconds, self.pixels_per_second, aspect, canvas, cap, unmeasured)

    def _request(self, client, moving: bool) -> None:
        try:
            camera = client.camera
            canvas = max(int(camera.image_width), int(camera.image_height))
            pixels = self._pixels(canvas, camera.aspect, moving)
            request = _Request(viser_camera(camera.position, camera.wxyz, camera.fov, camera.aspect, pixels), moving, canvas)
        except (AssertionError, ValueError, ZeroDivisionError):  # the client has not sent its camera yet
            return
        with self._lock:
            self._requests[client.client_id] = request
            self._lock.notify_all()

    def _connect(self, client) -> None:
        # A camera move asks for a picture; splats the browser draws need nothing from the server.
        client.camera.on_update(lambda camera: None if self.state().browser_draws else self._request(camera.client, True))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self._stopping.is_set():
            try:
                client.camera.aspect  # noqa: B018 (raises until the client has sent its camera)
                break
            except (AssertionError, ZeroDivisionError):
                time.sleep(0.05)
        self._request(client, moving=False)

    def _disconnect(self, client) -> None:
        with self._lock:
            self._requests.pop(client.client_id, None)
            self._resting.pop(client.client_id, None)

    def _changed(self) -> None:
        if self.server is None:
            return
        for client in self.server.get_clients().values():
            self._request(client, moving=True)

    def _next(self) -> tuple[int, _Request] | None:
        """The next request (waiting for one): a queued one, else a resting client's refinement."""
        with self._lock:
            while not self._stopping.is_set():
                if self._requests:
                    client_id = next(iter(self._requests))
                    request = self._requests.pop(client_id)
                    if request.moving:
                        self._resting[client_id] = (request, time.monotonic())
                    else:
                        self._resting.pop(client_id, None)
                    return client_id, request
                now = time.monotonic()
                for client_id, (request, since) in list(self._resting.items()):
                    if now - since >= REST_SECONDS:
                        del self._resting[client_id]
                        camera = request.camera
                        pixels = self._pixels(request.canvas, camera.width / camera.height, moving=False)
                        scale = pixels / max(camera.width, camera.height)
                        width, height = max(1, round(camera.width * scale)), max(1, round(camera.height * scale))
                        fy = camera.fy * height / camera.height
                        sharp = PinholeCameras(fy, fy, width / 2, height / 2, width, height, camera.camera_to_world)
                        return client_id, _Request(sharp, False, request.canvas)
                self._lock.wait(timeout=REST_SECONDS / 3)
        return None

    def _render_loop(self) -> None:
        while (job := self._next()) is not None:
            client_id, request = job
            server = self.server
            client = None if server is None else server.get_clients().get(client_id)
            if client is None:
                continue
            try:
                self._render(client, request)
            except Exception as error:  # a failed render leaves the viewer up, the error shown
                self._gui["status"].content = f"render failed: {error}"
                print(f"viewer: render failed: {error!r}")

    def _render(self, client, request: _Request) -> None:
        state = self.state()
        run = self.run  # one run per image, though --watch may swap it meanwhile
        head = self.head(state)
        if state.browser_draws:
            self._draw_splats(client, state, run, head)
            return
        if self._splats is not None and self._splats.visible:
            self._splats.visible = False  # the picture shows the model
        start = time.perf_counter()
        with products_in(self.precision):
            result = render_avatar(run.model, request.camera, head, state.depth, self.chunk, run.device, self.early_stop)
        seconds = max(time.perf_counter() - start, 1e-6)
        width, height = request.camera.width, request.camera.height
        speed = width * height / seconds
        old = self.pixels_per_second
        self.pixels_per_second = speed if old is None else SPEED_SMOOTHING * speed + (1 - SPEED_SMOOTHING) * old
        rate = f"{width} x {height} px in {1000 * seconds:.0f} ms ({1 / seconds:.1f} frames/s)"
        self._gui["status"].content = f"step {run.step} · {rate}"
        image = depth_image(result) if state.depth else (result.numpy() * 255 + 0.5).astype(np.uint8)
        client.scene.set_background_image(image, format="png" if not request.moving else "jpeg")
        self._pictured.add(client.client_id)
        self._show_mesh(head, state.mesh)
        self.shown_state = state
        self.frames_rendered += 1
        self.sharp_frames += not request.moving

    def _draw_splats(self, client, state: ViewerState, run: Run, head: Head) -> None:
        """The browser draws frame 0 of ``head``'s splats: sent to every browser when the run or the pose changed."""
        if client.client_id in self._pictured:  # the server's last picture would stay behind the splats
            client.scene.set_background_image(None)
            self._pictured.discard(client.client_id)
        pose = (id(run), dataclasses.replace(state, mesh=False, depth=False, splats=False))
        if pose != self._splats_of:
            start = time.perf_counter()
            splats = browser_splats(run.model.splats(head, 0))
            self._splats = show_splats(self.server.scene, SPLATS_NODE, splats, self._splats)
            sent = (
                f"{len(splats):,} splats drawn by the browser (posed and sent in {1000 * (time.perf_counter() - start):.0f} ms)"
            )
            self._gui["status"].content = f"step {run.step} · {sent}"
            self._splats_of = pose
            self.splats_sent += 1
        if not self._splats.visible:
            self._splats.visible = True
        self._show_mesh(head, state.mesh)
        self.shown_state = state

    def _show_mesh(self, head: Head, show: bool) -> None:
        if not show:
            if self._mesh is not None:
                self._mesh.remove()
                self._mesh = None
            return
        vertices = head.vertices[0].detach().cpu().numpy().astype(np.float32)
        if self._mesh is not None and np.array_equal(self._mesh_vertices, vertices):
            return
        self._mesh_vertices = vertices
        faces = head.faces.cpu().numpy().astype(np.uint32)
        # An overlay: no shadows (viser's default casts and receives them: a shadow map each frame for nothing to see).
        self._mesh = self.server.scene.add_mesh_simple(
            "/tracked_mesh", vertices, faces, color=(90, 200, 255), wireframe=True, opacity=0.5,
            cast_shadow=False, receive_shadow=False,
        )  # fmt: skip

    # -- --watch ---------------------------------------------------------------------------------------------------
    def _mtime(self) -> float | None:
        file = self.run.path / CHECKPOINT_NAME
        return file.stat().st_mtime if file.is_file() else None

    def _watch_loop(self) -> None:
        while not self._stopping.wait(WATCH_SECONDS):
            mtime = self._mtime()
            if mtime is None or mtime == self._checkpoint_mtime:
                continue
            time.sleep(WATCH_SECONDS / 2)  # let the writer finish
            try:
                run = load_run(self.run.path, self.run.device, pixels=False)
            except Exception as error:  # a checkpoint being written: try again at the next poll
                print(f"viewer: could not reload {self.run.path} yet ({error})")
                continue
            self.run, self._checkpoint_mtime = run, mtime
            self._gui["status"].content = f"step {run.step} (reloaded {time.strftime('%H:%M:%S')})"
            print(f"viewer: reloaded {run.path} at step {run.step}")
            self._changed()
