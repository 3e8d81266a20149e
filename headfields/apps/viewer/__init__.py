"""The browser viewer (``python -m headfields view RUN``): :mod:`~headfields.apps.viewer.app`, the server and its GUI
over a trained run; :mod:`~headfields.apps.viewer.state`, the GUI's state and the head it asks for;
:mod:`~headfields.apps.viewer.camera`, the browser's camera as the library's cameras and the image size the measured render
speed allows; :mod:`~headfields.apps.viewer.splats`, a Gaussian run's splats as the browser draws them.

    viewer = AvatarViewer(load_run("outputs/insta"))
"""

from .app import AvatarViewer, depth_image, render_avatar
from .camera import frame_pixels, viser_camera
from .state import ViewerState, state_head

__all__ = ["AvatarViewer", "ViewerState", "depth_image", "frame_pixels", "render_avatar", "state_head", "viser_camera"]
