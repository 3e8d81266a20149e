"""MonoNPHM's geometry evaluation (headfields.models.mononphm.evaluation) against brute force, a known similarity,
and hand cases."""

import math

import pytest
import torch

from headfields.cameras import PinholeCameras, look_at, project_points
from headfields.geometry import face_normals, head_proxy, uv_sphere
from headfields.geometry.triangles import closest_point_on_triangle
from headfields.models.mononphm.evaluation import (
    DepthScan,
    Similarity,
    depth_scan,
    face_region,
    scan_score,
    similarity_icp,
)


def _head() -> tuple[torch.Tensor, torch.Tensor]:
    v, f = head_proxy(torch.float64)
    return 0.1 * v, f  # half-axes of 8 to 11 cm: a head in metres


def _camera(size: int = 48) -> PinholeCameras:
    c2w = look_at(torch.tensor([[0.5, 0.05, 0.1]], dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64))
    return PinholeCameras(1.4 * size, 1.4 * size, size / 2, size / 2, size, size, c2w.float())


def _rotation(axis: list[float], degrees: float) -> torch.Tensor:
    k = torch.tensor(axis, dtype=torch.float64)
    k = k / k.norm()
    cross = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    a = math.radians(degrees)
    return torch.eye(3, dtype=torch.float64) + math.sin(a) * cross + (1 - math.cos(a)) * cross @ cross


def test_distances_and_normals_match_brute_force():
    v, f = uv_sphere(12, 20, dtype=torch.float64)  # 440 faces: every pair is cheap
    v = v * torch.tensor([0.09, 0.1, 0.12], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    points = torch.randn(300, 3, generator=g, dtype=torch.float64) * 0.06
    normals = torch.randn(300, 3, generator=g, dtype=torch.float64)
    score = scan_score(v, f, points, normals, thresholds=(0.005, 0.02), align=False)
    # every point against every triangle: the least distance, its face's normal
    corners = v[f]  # [F, 3, 3]
    pairs = [x.reshape(-1, 3) for x in (points[:, None].expand(-1, len(f), -1), *corners[None].expand(300, -1, -1, -1).unbind(2))]
    closest = closest_point_on_triangle(*pairs)[0].reshape(300, len(f), 3)
    d = (points[:, None] - closest).norm(dim=-1)
    best = d.argmin(1)
    truth = d.gather(1, best[:, None])[:, 0]
    torch.testing.assert_close(score.distances, truth, atol=1e-7, rtol=0)
    nearest = closest[torch.arange(300), best]
    assert score.chamfer_l1 == pytest.approx(float((points - nearest).abs().sum(-1).mean()), abs=1e-7)
    assert score.chamfer_l2 == pytest.approx(float(truth.mean()), abs=1e-9)
    unit = normals / normals.norm(dim=-1, keepdim=True)
    cosine = (face_normals(v, f)[best] * unit).sum(-1).abs()
    assert score.normal_consistency == pytest.approx(float(cosine.mean()), abs=2e-3)  # a shared edge may name either face
    assert score.f_score == {
        "5mm": pytest.approx(float((truth <= 0.005).double().mean())),
        "20mm": pytest.approx(float((truth <= 0.02).double().mean())),
    }
    assert score.similarity.scale == 1 and torch.equal(score.similarity.rotation, torch.eye(3, dtype=torch.float64))


def test_the_icp_undoes_a_known_similarity():
    v, f = _head()
    scan = depth_scan(_camera(), 0, v, f)
    assert len(scan.points) > 500
    moved = Similarity(
        torch.tensor(1.03, dtype=torch.float64), _rotation([0.3, 1.0, 0.2], 2.0), torch.tensor([0.004, -0.003, 0.002]).double()
    )
    wrong = moved.apply(v)
    before = scan_score(wrong, f, scan.points, scan.normals, align=False)
    after = scan_score(wrong, f, scan.points, scan.normals)
    assert before.chamfer_l2 > 2e-3  # millimetres off before the alignment ...
    assert after.chamfer_l2 < 2e-5 and after.f_score["1mm"] == 1.0  # ... micrometres after
    # the alignment is the known transform's inverse where the scan sees the head
    torch.testing.assert_close(after.similarity.apply(wrong), v, atol=2e-5, rtol=0)
    assert float(after.similarity.scale) == pytest.approx(1 / 1.03, abs=1e-4)


def test_icp_leaves_an_aligned_mesh_where_it_is():
    v, f = _head()
    scan = depth_scan(_camera(), 0, v, f)
    s = similarity_icp(v, f, scan.points, scan.normals)
    torch.testing.assert_close(s.apply(v), v, atol=1e-7, rtol=0)


def test_the_depth_scan_lies_on_the_mesh_seen_from_its_camera():
    v, f = _head()
    cameras = _camera(32)
    labels = torch.arange(32 * 32).reshape(32, 32) % 7
    scan = depth_scan(cameras, 0, v, f, labels)
    score = scan_score(v, f, scan.points, scan.normals, align=False)
    assert score.distances.max() < 1e-9  # each point on the surface
    eye = cameras.camera_to_world[0, :3, 3].double()
    view = scan.points - eye
    cosine = (scan.normals * view).sum(-1) / view.norm(dim=-1)
    assert (cosine < -0.2).all()  # facing the camera, none at a grazing view
    pixel = project_points(cameras, scan.points.float(), 0).pixels
    torch.testing.assert_close(pixel, scan.pixels.flip(1).float() + 0.5, atol=1e-3, rtol=0)  # each at its pixel's centre
    assert torch.equal(scan.labels, labels[scan.pixels[:, 0], scan.pixels[:, 1]])


def test_the_face_region_drops_a_margin_around_the_neck_mouth_and_eyes():
    codes = {"skin": 1, "neck": 2, "eyes": 3, "hair": 4}
    image = torch.ones(108, 12, dtype=torch.long)  # at 108 px the margins are max(1, round(10 / 10)) = 1 pixel
    image[50, 5], image[20, 2], image[80, 0:12] = 2, 3, 4
    rows, cols = torch.meshgrid(torch.arange(108), torch.arange(12), indexing="ij")
    pixels = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1)
    scan = DepthScan(torch.zeros(len(pixels), 3), torch.ones(len(pixels), 3), image.reshape(-1), pixels)
    keep = face_region(scan, image, codes).reshape(108, 12)
    expected = image == 1
    expected[49:52, 4:7] = False  # the neck pixel grown by one
    expected[19:22, 1:4] = False  # the eye pixel grown by one
    assert torch.equal(keep, expected)  # hair is no face, and not a margin


def test_bad_input_names_the_argument():
    v, f = _head()
    with pytest.raises(ValueError, match="points"):
        scan_score(v, f, torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="normals"):
        scan_score(v, f, torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    scan = DepthScan(torch.zeros(1, 3), torch.ones(1, 3), torch.ones(1, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="codes"):
        face_region(scan, torch.ones(4, 4, dtype=torch.long), {"hair": 1})
    with pytest.raises(ValueError, match="scan"):
        face_region(DepthScan(scan.points, scan.normals, None, scan.pixels), torch.ones(4, 4, dtype=torch.long), {"skin": 1})
