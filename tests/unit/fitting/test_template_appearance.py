"""A template's colours and which of its points a camera sees, against analytic scenes: squares before the camera
at the origin (looking down -z), an image whose colour is linear in the pixel, so bilinear sampling is exact."""

import torch

from headfields.cameras import PinholeCameras
from headfields.fitting import vertex_colours
from headfields.fitting.landmark_tracking import OPENCV_FROM_WORLD
from headfields.fitting.template_appearance import seen_points
from headfields.geometry import TriangleMesh

SIZE, FOCAL = 64, 20.0


def _square(x: float, y: float, z: float, half: float, facing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]) * half + torch.tensor([x, y])
    vertices = torch.cat([corners, torch.full((4, 1), z)], 1)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])  # normal +z: towards the camera
    return vertices, faces if facing else faces.flip(1)


def _scene():
    """A square 1 m before the camera, one 2 m away hidden behind it, one 2 m away beside it, and one beside the
    first turned away from the camera."""
    parts = [_square(0.0, 0.0, -1.0, 0.5), _square(0.0, 0.1, -2.0, 0.2), _square(1.4, 0.0, -2.0, 0.2)]
    parts.append(_square(-0.9, 0.0, -1.0, 0.2, facing=False))
    vertices, faces, offset = [], [], 0
    for v, f in parts:
        vertices.append(v)
        faces.append(f + offset)
        offset += len(v)
    return torch.cat(vertices), torch.cat(faces)


def test_a_point_is_seen_unless_the_surface_hides_it():
    vertices, faces = _scene()
    seen = seen_points(TriangleMesh(vertices[None], faces), vertices[None], torch.zeros(1, 3))[0]
    assert seen.tolist() == [True] * 4 + [False] * 4 + [True] * 4 + [True] * 4
    # From behind the far squares, the near one's centre is what is hidden, and the far square's corners are seen.
    points = torch.cat([torch.tensor([[0.0, 0.1, -1.0]]), vertices[4:8]])[None]
    seen = seen_points(TriangleMesh(vertices[None], faces), points, torch.tensor([[0.0, 0.1, -3.0]]))[0]
    assert seen.tolist() == [False] + [True] * 4


def test_each_vertex_takes_the_colour_where_it_projects_and_hidden_ones_none():
    vertices, faces = _scene()
    pixel = torch.arange(SIZE) + 0.5
    image = torch.stack(
        [pixel[None, :].expand(SIZE, SIZE) / SIZE, pixel[:, None].expand(SIZE, SIZE) / SIZE, torch.full((SIZE, SIZE), 0.25)], -1
    )
    cameras = PinholeCameras(FOCAL, FOCAL, SIZE / 2, SIZE / 2, SIZE, SIZE, OPENCV_FROM_WORLD.float()[None].clone())
    colours = vertex_colours(vertices[None], faces, image[None], cameras)
    # The camera looks down -z with y up: a point (x, y, z) lands at (c + f x / -z, c - f y / -z).
    u = SIZE / 2 + FOCAL * vertices[:, 0] / -vertices[:, 2]
    v = SIZE / 2 - FOCAL * vertices[:, 1] / -vertices[:, 2]
    expected = torch.stack([u / SIZE, v / SIZE, torch.full_like(u, 0.25)], -1)
    visible = torch.tensor([True] * 4 + [False] * 4 + [True] * 4 + [False] * 4)  # the last square faces away
    assert colours.seen.tolist() == visible.tolist()
    torch.testing.assert_close(colours.colours[visible], expected[visible], atol=1e-5, rtol=0)
    assert (colours.colours[~visible] == 0).all()
    # As uint8 the image rounds to 1/255.
    quantised = vertex_colours(vertices[None], faces, (image[None] * 255).round().to(torch.uint8), cameras)
    torch.testing.assert_close(quantised.colours[visible], expected[visible], atol=2.5 / 255, rtol=0)
