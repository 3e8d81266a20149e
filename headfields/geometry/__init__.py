"""Meshes and Warp kernels: per-frame BVHs, closest points, ray hits, nearest vertices, surface samples, triangle frames,
UV rasterisation, meshes extracted from SDFs, and point sets aligned by a similarity. Every query runs on CPU and CUDA
from one source, launched through :func:`headfields.kernels.launch_rows` like every Warp kernel in headfields (thread
pool on CPU, torch's stream on CUDA)."""

from .alignment import similarity_transform
from .isosurface import IsoSurface, extract_isosurface
from .mesh import TriangleMesh
from .primitives import box, head_proxy, uv_sphere
from .queries import ClosestPoint, NearestVertices, RayHit, closest_point, knn_vertices, ray_intersect, within_distance
from .sampling import SurfaceSamples, farthest_points, sample_box, sample_near_surface, sample_surface
from .triangles import (
    TriangleFrames,
    closest_point_on_triangle,
    face_adjacency,
    face_areas,
    face_normals,
    gather_vertex_rows,
    triangle_frames,
    vertex_normals,
)
from .uv import UVMisses, UVRaster, interpolate_uv, rasterize_uv, sample_uv, uv_misses, vertex_uvs

__all__ = [
    "ClosestPoint",
    "IsoSurface",
    "NearestVertices",
    "RayHit",
    "SurfaceSamples",
    "TriangleFrames",
    "TriangleMesh",
    "UVMisses",
    "UVRaster",
    "box",
    "closest_point",
    "closest_point_on_triangle",
    "extract_isosurface",
    "face_adjacency",
    "face_areas",
    "face_normals",
    "farthest_points",
    "gather_vertex_rows",
    "head_proxy",
    "interpolate_uv",
    "knn_vertices",
    "ray_intersect",
    "rasterize_uv",
    "sample_box",
    "sample_near_surface",
    "sample_surface",
    "sample_uv",
    "similarity_transform",
    "uv_misses",
    "triangle_frames",
    "uv_sphere",
    "vertex_normals",
    "vertex_uvs",
    "within_distance",
]
