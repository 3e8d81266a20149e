"""The browser viewer (headfields.apps.viewer): the GUI state -> Head function, viser's camera -> PinholeCameras, the
binding, a Gaussian run's splats as the browser takes them, and the viewer itself driven in a headless Chromium
(skipped where no Chromium can be had)."""

from __future__ import annotations

import io
import math
import os
import shutil
import socket
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("viser")

from headfields.apps.runs import load_run  # noqa: E402
from headfields.apps.viewer import (  # noqa: E402
    AvatarViewer,
    ViewerState,
    frame_pixels,
    render_avatar,
    state_head,
    viser_camera,
)
from headfields.apps.viewer.app import THREAD_PREFIX, _Request  # noqa: E402
from headfields.apps.viewer.camera import MIN_PIXELS  # noqa: E402
from headfields.apps.viewer.splats import browser_splats, show_splats, splat_unit  # noqa: E402
from headfields.cameras import look_at, project_points  # noqa: E402
from headfields.data.splat_ply import SH_C0  # noqa: E402
from headfields.heads import tracked_head  # noqa: E402
from headfields.renderers import EARLY_STOP_TRANSMITTANCE, INTERACTIVE_TRANSMITTANCE  # noqa: E402

from helpers import raises_naming  # noqa: E402

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
DOC_IMAGE = Path(__file__).resolve().parents[3] / "docs" / "images" / "viewer_screenshot.png"


@pytest.fixture(scope="module")
def run(tiny_insta_run):
    return load_run(tiny_insta_run[0], "cpu")


@pytest.fixture(scope="module")
def gaussian_run(tiny_gaussian_run):
    return load_run(tiny_gaussian_run[0], "cpu")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a server can listen on ``port`` again (as servers do, with SO_REUSEADDR: the browser's closed
    connections may linger in TIME_WAIT, a listener may not)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def viewer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX) and t.is_alive()]


# -- the GUI state -> Head ------------------------------------------------------------------------------------------
def test_zero_sliders_are_the_neutral_head(run):
    parametric, params = run.model.parametric, run.subject.train.params
    head = state_head(parametric, ViewerState(expression=(0.0,) * 3), params)
    neutral = parametric(shape=params.shape)
    torch.testing.assert_close(head.vertices, neutral.vertices)
    moved = state_head(parametric, ViewerState(), params, neutral_translation=params.translation[0])
    torch.testing.assert_close(moved.vertices, neutral.vertices + params.translation[0])


def test_frame_slider_replays_the_tracking(run):
    parametric = run.model.parametric
    for split in ("train", run.subject.eval.split):
        frames = run.frames(split)
        tracked = tracked_head(parametric, frames)
        for k in range(len(frames)):
            head = state_head(parametric, ViewerState(frame=k, split=split), frames.params)
            torch.testing.assert_close(head.vertices, tracked.vertices[k : k + 1])
            torch.testing.assert_close(head.pose, tracked.pose[k : k + 1])
    with pytest.raises(ValueError, match="frame"):
        state_head(parametric, ViewerState(frame=len(run.subject.train)), run.subject.train.params)


def test_jaw_slider_moves_only_the_jaw_joint(run):
    parametric, params = run.model.parametric, run.subject.train.params
    jaw = parametric.joint_names.index("jaw")
    for frame in (None, 1):
        base = state_head(parametric, ViewerState(frame=frame), params)
        opened = state_head(parametric, ViewerState(jaw=20.0, frame=frame), params)
        changed = (opened.pose - base.pose).abs().amax(dim=-1)[0] > 1e-6
        assert changed.nonzero().flatten().tolist() == [jaw]
        angle = torch.linalg.norm(opened.pose[0, jaw]) if frame is None else None
        if angle is not None:  # from zero: exactly 20 degrees about x
            torch.testing.assert_close(opened.pose[0, jaw], torch.tensor([math.radians(20.0), 0.0, 0.0]))
        torch.testing.assert_close(opened.expression, base.expression)
        torch.testing.assert_close(opened.translation, base.translation)
        assert (opened.vertices - base.vertices).abs().amax() > 1e-4  # the mouth opens


def test_head_pose_and_expression_sliders(run):
    parametric, params = run.model.parametric, run.subject.train.params
    base = state_head(parametric, ViewerState(), params)
    turned = state_head(parametric, ViewerState(yaw=30.0), params)
    torch.testing.assert_close(turned.pose[0, 0], torch.tensor([0.0, math.radians(30.0), 0.0]))
    assert torch.equal(turned.pose[0, 1:], base.pose[0, 1:])
    smiling = state_head(parametric, ViewerState(expression=(1.0, -0.5)), params)
    assert smiling.expression[0, :2].tolist() == [1.0, -0.5]
    assert torch.equal(smiling.expression[0, 2:], base.expression[0, 2:])
    with pytest.raises(ValueError, match="expression"):
        state_head(parametric, ViewerState(expression=(0.0,) * (parametric.num_expression + 1)), params)


# -- the image size from the measured speed ------------------------------------------------------------------------
@pytest.mark.parametrize("aspect", [1.0, 16 / 9, 0.75])
def test_frame_pixels_fill_the_time_within_the_canvas(aspect):
    """At 40,000 pixels a second, 1 s buys a 200 x 200 square; a wider (or taller) frame of the same area has a
    longer side sqrt(aspect) times larger. The canvas and the cap bound it; MIN_PIXELS floors the measured size."""
    side = frame_pixels(1.0, 40_000.0, aspect, canvas=0)
    width, height = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    assert abs(width * height - 40_000) <= 2 * max(width, height) + 1  # the side is rounded down
    assert frame_pixels(1.0, 40_000.0, aspect, canvas=150) == 150
    assert frame_pixels(1.0, 40_000.0, aspect, canvas=1000, cap=120) == 120
    assert frame_pixels(1.0, 1.0, aspect, canvas=1000) == MIN_PIXELS  # a slow model still shows something
    assert frame_pixels(0.1, 4e7, aspect, canvas=900) == 900  # a fast GPU renders the whole canvas
    assert frame_pixels(1.0, 1.0, aspect, canvas=1000, cap=16) == 16  # a cap below the floor is kept
    # Before any frame is measured: the first size given, within the same bounds.
    assert frame_pixels(1.0, None, aspect, canvas=100, unmeasured=48) == 48
    assert frame_pixels(1.0, None, aspect, canvas=40, unmeasured=128) == 40


# -- viser's camera -> PinholeCameras --------------------------------------------------------------------------------
@pytest.mark.parametrize("aspect", [1.0, 16 / 9, 0.75])
def test_viser_camera_looks_at_its_target(aspect):
    import viser.transforms as tf

    eye, target = torch.tensor([[0.3, -0.2, 1.5]]), torch.tensor([[0.05, 0.1, -0.1]])
    c2w = look_at(eye, target)[0].double()
    wxyz = tf.SO3.from_matrix(c2w[:3, :3].numpy()).wxyz
    fov = math.radians(40.0)
    cameras = viser_camera(eye[0].numpy(), wxyz, fov, aspect, 96)
    assert max(cameras.width, cameras.height) == 96 and abs(cameras.width / cameras.height - aspect) < 0.05
    torch.testing.assert_close(cameras.camera_to_world[0], c2w.float(), atol=1e-5, rtol=0)
    pixels, depth = project_points(cameras, target, 0)
    torch.testing.assert_close(pixels[0], torch.tensor([cameras.cx, cameras.cy]), atol=1e-3, rtol=0)
    assert float(depth[0]) > 0
    # A point at the top of the vertical field of view projects to the image's top edge; image-right is +x.
    distance = float(torch.linalg.norm(target - eye))
    up, right = -c2w[:3, 1].float(), c2w[:3, 0].float()
    top = target + up * distance * math.tan(fov / 2)
    side = target + right * 0.1
    (top_pixel, side_pixel), _ = project_points(cameras, torch.cat([top, side]), 0)
    assert abs(float(top_pixel[1])) < 1e-2 and float(side_pixel[0]) > cameras.cx


def test_depth_render(run):
    head = state_head(run.model.parametric, ViewerState(frame=0), run.subject.train.params)
    cameras = run.subject.train.cameras.select(torch.tensor([0]))
    depth = render_avatar(run.model, cameras, head, True, 4096, run.device)
    colour = render_avatar(run.model, cameras, head, False, 4096, run.device)
    assert depth.shape == (cameras.height, cameras.width) and colour.shape == (cameras.height, cameras.width, 3)
    assert (depth > 0).any() and torch.isfinite(depth).all()


# -- a Gaussian run's splats, drawn by the browser ------------------------------------------------------------------
def test_the_splats_sent_are_the_models_posed_gaussians(gaussian_run):
    """Centres, covariances R S Sᵀ Rᵀ (R from viser's own quaternion code), the colour of SH band 0 and the opacities
    of the model's posed Gaussians on a frame; what the scene node holds is the same in world units, its covariances
    to float16's 2⁻¹⁰ relative (the unit keeps millimetre variances out of float16's subnormals)."""
    import viser
    import viser.transforms as tf

    model = gaussian_run.model
    head = state_head(model.parametric, ViewerState(frame=1, jaw=10.0), gaussian_run.subject.train.params)
    splats = browser_splats(model.splats(head, 0))
    posed = model.posed(head, 0)
    quats = posed.quats.detach().double().numpy()
    rotations = tf.SO3(quats / np.linalg.norm(quats, axis=1, keepdims=True)).as_matrix()
    variances = posed.scales.detach().double().numpy() ** 2
    covariances = np.einsum("nij,nj,nkj->nik", rotations, variances, rotations)
    rgbs = np.clip(0.5 + SH_C0 * posed.sh[:, 0].detach().double().numpy(), 0, 1)
    opacities = 1 / (1 + np.exp(-model.gaussians.opacity_logits.detach().double().numpy()))
    assert len(splats) == model.gaussians.num_gaussians
    np.testing.assert_allclose(splats.centers, posed.means.detach().numpy(), rtol=0, atol=1e-7)
    np.testing.assert_allclose(splats.covariances, covariances, rtol=1e-5, atol=1e-12)
    np.testing.assert_allclose(splats.rgbs, rgbs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(splats.opacities[:, 0], opacities, rtol=0, atol=1e-6)

    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    try:
        handle = show_splats(server.scene, "/splats", splats)
        unit = handle.scale
        assert unit == splat_unit(splats.scales) and math.log2(unit).is_integer()
        np.testing.assert_allclose(handle.centers * unit, splats.centers, rtol=0, atol=0)  # a power of two: exact
        sent = handle.covariances.astype(np.float64) * unit**2
        size = np.abs(covariances).max(axis=(1, 2))[:, None, None]
        assert (np.abs(sent - covariances) <= 2**-10 * size).all()
        assert np.abs(handle.rgbs - splats.rgbs * 255).max() <= 1 and np.abs(handle.opacities - splats.opacities * 255).max() <= 1
        moved = browser_splats(
            model.splats(state_head(model.parametric, ViewerState(frame=2), gaussian_run.subject.train.params), 0)
        )
        assert show_splats(server.scene, "/splats", moved, handle) is handle  # the same node, its buffer replaced
        np.testing.assert_allclose(handle.centers * unit, moved.centers, rtol=0, atol=0)
    finally:
        server.stop()
    with raises_naming("scales"):
        splat_unit(np.zeros((0, 3)))


def test_the_browser_draws_only_a_gaussian_runs_splats(run, gaussian_run):
    from headfields.apps.commands import parser

    assert parser().parse_args(["view", "some/run"]).splats is None  # on for a Gaussian run
    assert parser().parse_args(["view", "some/run", "--no-splats"]).splats is False
    assert AvatarViewer(gaussian_run).initial_splats and not AvatarViewer(gaussian_run, splats=False).initial_splats
    assert not AvatarViewer(run).initial_splats
    with raises_naming("splats"):
        AvatarViewer(run, splats=True)
    assert ViewerState(splats=True).browser_draws and not ViewerState(splats=True, depth=True).browser_draws


def test_splats_are_sent_when_the_pose_changes_and_give_way_to_the_depth_picture(gaussian_run):
    """Without a browser: the viewer's worker step for one client (a stand-in recording its background images). The
    splats go once, not again for the same state (a camera move), hide behind the server's depth picture, come back
    without being sent, and go again for a new frame."""
    backgrounds = []
    client = types.SimpleNamespace(
        client_id=1, scene=types.SimpleNamespace(set_background_image=lambda image, **_: backgrounds.append(image))
    )
    camera = gaussian_run.subject.train.cameras.select(torch.tensor([0]))
    request = _Request(camera, moving=False)
    with AvatarViewer(gaussian_run, port=free_port()) as viewer:
        gui = viewer._gui
        for _ in range(2):
            viewer._render(client, request)
        assert viewer.splats_sent == 1 and viewer._splats.visible and viewer.frames_rendered == 0 and not backgrounds
        gui["depth"].value = True
        viewer._render(client, request)
        assert viewer.frames_rendered == 1 and not viewer._splats.visible and backgrounds[-1] is not None
        gui["depth"].value = False
        viewer._render(client, request)
        assert backgrounds[-1] is None and viewer._splats.visible and viewer.splats_sent == 1
        gui["frame"].value = 1
        viewer._render(client, request)
        assert (
            viewer.splats_sent == 2 and viewer.shown_state.frame == 1 and len(viewer._splats.centers) == len(viewer._splats.rgbs)
        )


# -- binding ---------------------------------------------------------------------------------------------------------
def test_binds_localhost_by_default(run, capsys):
    from headfields.apps.commands import parser

    args = parser().parse_args(["view", "some/run"])
    assert args.host == "127.0.0.1" and args.port == 8080 and not args.watch
    # instant-ngp's interactive renderer: rays stopped at 1e-2, the decoders' products in bfloat16; render: the scores'
    assert (args.early_stop, args.precision) == (INTERACTIVE_TRANSMITTANCE, "bfloat16")
    args = parser().parse_args(["render", "some/run"])
    assert (args.early_stop, args.precision) == (EARLY_STOP_TRANSMITTANCE, "float32")
    for bad in (dict(early_stop=1.0), dict(precision="float16")):
        with raises_naming(next(iter(bad))):
            AvatarViewer("some/run", **bad)  # refused before the run is read
    port = free_port()
    with AvatarViewer(run, port=port) as viewer:
        assert viewer.server.get_host() == "127.0.0.1"
        assert not port_is_free(port)
    assert "other machines" not in capsys.readouterr().out
    assert port_is_free(port) and not viewer_threads()


def test_all_interfaces_only_when_asked_and_said(run, capsys):
    from headfields.apps.commands import parser
    from headfields.apps.commands.view import view

    port = free_port()
    args = parser().parse_args(["view", str(run.path), "--host", "0.0.0.0", "--port", str(port), "--device", "cpu"])
    viewer = view(args, block=False)
    try:
        assert viewer.server.get_host() == "0.0.0.0"
        assert "reachable from other machines" in capsys.readouterr().out
    finally:
        viewer.stop()
    assert port_is_free(port) and not viewer_threads()


def test_the_command_serves_with_freed_memory_kept_and_puts_the_process_back(run, monkeypatch):
    # view's blocking command owns its process: on the CPU the viewer renders with glibc keeping freed blocks, until
    # Ctrl-C (here: the first wait raises it); block=False (above) leaves the caller's process as it is.
    from headfields.apps.commands import parser
    from headfields.apps.commands import view as view_command
    from headfields.backends.cpu import freed_memory

    seen, start = [], AvatarViewer.start
    monkeypatch.setattr(AvatarViewer, "start", lambda self: seen.append(freed_memory._in_force) or start(self))
    interrupt = types.SimpleNamespace(sleep=lambda _: (_ for _ in ()).throw(KeyboardInterrupt))
    monkeypatch.setattr(view_command, "time", interrupt)  # the command's waits alone, not the viewer's threads
    monkeypatch.setattr(freed_memory, "_in_force", None)  # no limit of this process's own in force before
    before = None
    args = parser().parse_args(["view", str(run.path), "--port", str(free_port()), "--device", "cpu"])
    assert view_command.view(args) is None
    applies = freed_memory._glibc() is not None and not freed_memory._environment_tunes_malloc()
    assert seen == [freed_memory.RETAINED_BYTES if applies else before]
    assert freed_memory._in_force == before and not viewer_threads()


def test_watch_reloads_a_new_checkpoint(tiny_insta_run, tmp_path):
    folder = shutil.copytree(tiny_insta_run[0], tmp_path / "run")
    with AvatarViewer(folder, port=free_port(), watch=True, device="cpu") as viewer:
        first = viewer.run
        checkpoint = folder / "checkpoint.pt"
        stat = checkpoint.stat()
        os.utime(checkpoint, (stat.st_atime, stat.st_mtime + 10))  # as training writing a new one
        _wait(lambda: viewer.run is not first, 20, "the reloaded run")
        assert viewer.run.step == first.step
    assert not viewer_threads()


# -- in a real browser -----------------------------------------------------------------------------------------------
# An upper bound on each wait for the page: software WebGL on a CPU that the other test workers load takes seconds
# a WebDriver call (most waits end in one or two).
PAGE_WAIT = 90


def _chromium(user_data: str, scale: float):
    """Headless Chromium, its window 900 x 600 CSS pixels drawn at ``scale`` device pixels each: at 0.25 its software
    WebGL (SwiftShader, on the CPU the other test workers need) draws a sixteenth of the pixels, the page's layout
    the same."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = (
        "--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run "
        "--disable-background-networking --disable-component-update --disable-sync --enable-unsafe-swiftshader "
        f"--window-size=900,600 --force-device-scale-factor={scale}"
    )  # without the background-networking flags a closed network makes Chromium hang on connections
    for flag in [*flags.split(), f"--user-data-dir={user_data}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _wait(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.1)


def _control(driver, label: str):
    """The GUI element the page labels ``label``."""
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.XPATH, f"//label[normalize-space(text())='{label}']")
    return driver.find_element(By.ID, element.get_attribute("for"))


def _screenshot(driver) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")).astype(np.float32)


@pytest.mark.unchecked
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no Chromium and chromedriver on PATH (apt-get install chromium chromium-driver)",
)
def test_viewer_in_a_browser(run):
    pytest.importorskip("selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    write_doc_image = os.environ.get("HEADFIELDS_WRITE_DOC_IMAGES") == "1"
    port = free_port()
    user_data = tempfile.mkdtemp(prefix="headfields-chromium-")
    viewer = AvatarViewer(run, port=port, resting_pixels=96).start()  # a sharp frame in a fraction of a second
    driver = None
    try:
        driver = _chromium(user_data, 1.0 if write_doc_image else 0.25)  # the docs' screenshot at full size
        driver.get(f"http://127.0.0.1:{port}")
        _wait(lambda: driver.find_elements(By.TAG_NAME, "canvas"), PAGE_WAIT, "the page's canvas")
        _wait(lambda: viewer.sharp_frames >= 1, PAGE_WAIT, "the first avatar image")
        # The tracked mesh overlay on, through the page: a 6-step avatar's colours barely follow the jaw, its mesh does.
        _control(driver, "tracked mesh overlay").click()
        _wait(lambda: viewer.shown_state is not None and viewer.shown_state.mesh, PAGE_WAIT, "the mesh overlay")
        if write_doc_image:
            for close in driver.find_elements(By.CSS_SELECTOR, ".mantine-Notification-closeButton"):
                close.click()  # "software WebGL rendering detected": true here, and not what the image is about
        time.sleep(1.0)  # the browser decodes and paints it
        before = _screenshot(driver)
        if write_doc_image:
            DOC_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(DOC_IMAGE))

        thumb = _control(driver, "jaw").find_element(By.CSS_SELECTOR, "[role=slider]")
        sharp = viewer.sharp_frames
        thumb.click()
        thumb.send_keys(Keys.END)  # the jaw wide open
        _wait(lambda: thumb.get_attribute("aria-valuenow") == "30", PAGE_WAIT, "the jaw slider at 30 degrees")
        _wait(lambda: viewer.sharp_frames > sharp and viewer.shown_state.jaw == 30.0, PAGE_WAIT, "the image of the open jaw")
        time.sleep(1.0)
        after = _screenshot(driver)
    finally:
        if driver is not None:
            driver.quit()
        viewer.stop()
        shutil.rmtree(user_data, ignore_errors=True)

    height, width = before.shape[:2]
    face = (slice(height // 5, height * 4 // 5), slice(width * 3 // 10, width * 6 // 10))  # left of the GUI panel
    for shot in (before, after):
        assert shot[face].std() > 2.0, "a blank screenshot: no avatar image in the browser"
    change = np.abs(after[face] - before[face]).mean(axis=-1)
    assert (change > 8).mean() > 0.002, f"the face region did not change (mean change {change.mean():.3f})"
    assert port_is_free(port) and not viewer_threads()


# Run before the page's own scripts: counts the page's WebGL draw calls and keeps the instance counts of its
# instanced ones (a splat set is drawn as one instance a Gaussian); from the next pointer press, over one second of
# animation frames, counts those that drew something (viser draws on demand: a frame when the scene or camera moves).
PAGE_COUNTERS = """
window.__draws = {calls: 0, instances: []};
for (const name of ["drawArrays", "drawElements", "drawArraysInstanced", "drawElementsInstanced"]) {
  const original = WebGL2RenderingContext.prototype[name];
  WebGL2RenderingContext.prototype[name] = function (...args) {
    window.__draws.calls += 1;
    const count = args[args.length - 1];
    if (name.endsWith("Instanced") && !window.__draws.instances.includes(count)) window.__draws.instances.push(count);
    return original.apply(this, args);
  };
}
window.__rate = null;
document.addEventListener("pointerdown", () => {
  const start = performance.now();
  let calls = window.__draws.calls, frames = 0, drawn = 0;
  function tick(now) {
    frames += 1;
    if (window.__draws.calls !== calls) { drawn += 1; calls = window.__draws.calls; }
    if (now - start < 1000) requestAnimationFrame(tick);
    else window.__rate = {seconds: (now - start) / 1000, frames: frames, drawn: drawn};
  }
  requestAnimationFrame(tick);
}, {once: true, capture: true});
"""

# The page's largest canvas (viser's WebGL one): a point a quarter of its width left of its centre, and its width.
CANVAS_START = """
const canvas = [...document.querySelectorAll("canvas")].sort((a, b) => b.width * b.height - a.width * a.height)[0];
const box = canvas.getBoundingClientRect();
return [Math.round(box.left + box.width / 4), Math.round(box.top + box.height / 2), Math.round(box.width)];
"""


@pytest.mark.unchecked
@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no Chromium and chromedriver on PATH (apt-get install chromium chromium-driver)",
)
def test_the_browser_draws_a_gaussian_runs_splats(gaussian_run):
    """The splats reach the page and its WebGL draws them (one instance a Gaussian), the screenshot shows them over
    the background, orbiting (a one-second drag: the browser's camera moves) sends nothing from the server while the
    page draws at its own rate, and a new frame sends the splats again; never a server picture. (Each WebDriver call
    waits for the page, which software WebGL keeps busy drawing 11,024 splats: the test makes few.)"""
    pytest.importorskip("selenium")
    from selenium.webdriver.common.action_chains import ActionChains

    port = free_port()
    user_data = tempfile.mkdtemp(prefix="headfields-chromium-")
    viewer = AvatarViewer(gaussian_run, port=port).start()
    count = gaussian_run.model.gaussians.num_gaussians
    driver = None
    try:
        driver = _chromium(user_data, 0.25)
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PAGE_COUNTERS})
        driver.get(f"http://127.0.0.1:{port}")
        _wait(lambda: viewer.splats_sent >= 1, PAGE_WAIT, "the splats sent")
        _wait(lambda: count in driver.execute_script("return window.__draws.instances"), PAGE_WAIT, "the splats drawn")
        shot = _screenshot(driver)

        # The drag starts left of the canvas's centre (the GUI panel covers its right), from the viewport's origin.
        x, y, width = driver.execute_script(CANVAS_START)
        sent = viewer.splats_sent
        (client,) = viewer.server.get_clients().values()
        before = np.array(client.camera.position)
        orbit = ActionChains(driver, duration=1000)  # each pointer move spread over a second, as a hand's
        orbit.move_by_offset(x, y).click_and_hold().move_by_offset(width // 8, 0).release().perform()
        rates = []
        _wait(lambda: rates.append(driver.execute_script("return window.__rate")) or rates[-1], PAGE_WAIT, "the frame count")
        rate = rates[-1]
        _wait(lambda: np.abs(np.array(client.camera.position) - before).max() > 0, PAGE_WAIT, "the browser's camera to orbit")
        orbited = viewer.splats_sent
        viewer._gui["frame"].value = 1  # as the slider does
        _wait(lambda: viewer.splats_sent > orbited and viewer.shown_state.frame == 1, PAGE_WAIT, "the splats of frame 1")
    finally:
        if driver is not None:
            driver.quit()
        viewer.stop()
        shutil.rmtree(user_data, ignore_errors=True)

    drawn = rate["drawn"] / rate["seconds"]
    animation = rate["frames"] / rate["seconds"]
    print(f"browser: {count:,} splats drawn at {drawn:.1f} frames/s while orbiting ({animation:.1f} animation frames/s)")
    assert drawn > 0, f"the page drew no frame while the camera orbited ({rate})"
    assert orbited == sent, "a camera move sent the splats again"
    assert viewer.frames_rendered == 0, "the server rendered a picture"
    height, width = shot.shape[:2]
    face = shot[height // 5 : height * 4 // 5, width * 3 // 10 : width * 6 // 10]  # left of the GUI panel
    corner = shot[: height // 10, : width // 10].reshape(-1, 3).mean(axis=0)  # the page's background
    assert (np.abs(face - corner).max(axis=-1) > 8).mean() > 0.05, "no splats over the background in the screenshot"
    assert port_is_free(port) and not viewer_threads()


def test_an_sdf_run_renders_its_colour_as_render_view_and_its_depth(tiny_neus_run):
    """Every model load_run loads: the NeuS mix (an SDF model) too; the viewer's colour is the render command's at
    the viewer's stop (instant-ngp's interactive 1e-2)."""
    from headfields.renderers import INTERACTIVE_TRANSMITTANCE
    from headfields.training import render_view

    run = load_run(tiny_neus_run[0], "cpu")
    head = state_head(run.model.parametric, ViewerState(frame=1, jaw=8.0), run.subject.train.params)
    cameras = run.subject.train.cameras.select(torch.tensor([1]))
    colour = render_avatar(run.model, cameras, head, False, 4096, run.device)
    assert torch.equal(colour, render_view(run.model, cameras, 0, head, 0, 4096, run.device, INTERACTIVE_TRANSMITTANCE))
    depth = render_avatar(run.model, cameras, head, True, 4096, run.device)
    assert depth.shape == (cameras.height, cameras.width) and torch.isfinite(depth).all() and (depth > 0).any()
