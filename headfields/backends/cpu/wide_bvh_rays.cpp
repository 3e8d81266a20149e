// First hit of a ray through the wide BVH (wide_bvh.py's first_hits; the walk: wide_bvh_walk.cpp).
//
// Boxes: the slab test; the far distance grows by a few ulps so that a box's rounding never drops a hit on its face
// (Ize 2013, "Robust BVH ray traversal"). Leaves: Moller-Trumbore on 4 triangles at once (u, v: weights of corners
// b and c); a triangle within float32's error bound of an edge is decided in float64 (exact()), and so is the face
// found. Outputs as Warp's query: bary (1 - u - v, u, v), the unit normal of (b - a) x (c - a).
// @section setup
float ox = o[0], oy = o[1], oz = o[2];
// A direction component under 1e-20 (zero included) is taken as 1e-20 of its sign: its inverse stays finite.
float dx = __builtin_fabsf(d[0]) < 1e-20f ? __builtin_copysignf(1e-20f, d[0]) : d[0];
float dy = __builtin_fabsf(d[1]) < 1e-20f ? __builtin_copysignf(1e-20f, d[1]) : d[1];
float dz = __builtin_fabsf(d[2]) < 1e-20f ? __builtin_copysignf(1e-20f, d[2]) : d[2];
float rx = 1.0f / dx, ry = 1.0f / dy, rz = 1.0f / dz;
// Which plane of each axis the ray meets first: rows 0-2 of a node are the low planes, 3-5 the high ones.
int near_x = rx >= 0.0f ? 0 : 3, near_y = ry >= 0.0f ? 1 : 4, near_z = rz >= 0.0f ? 2 : 5;
int far_x = 3 - near_x, far_y = 5 - near_y, far_z = 7 - near_z;
// The ray against face g in float64: whether it hits, and where.
auto exact = [&](int g, double& te, double& ue, double& ve) -> bool {
  wp::vec3 pa, pb, pc;
  corners(g, pa, pb, pc);
  double ax = pa[0], ay = pa[1], az = pa[2];
  double e1x = (double)pb[0] - ax, e1y = (double)pb[1] - ay, e1z = (double)pb[2] - az;
  double e2x = (double)pc[0] - ax, e2y = (double)pc[1] - ay, e2z = (double)pc[2] - az;
  double px = dy * e2z - dz * e2y, py = dz * e2x - dx * e2z, pz = dx * e2y - dy * e2x;
  double det = e1x * px + e1y * py + e1z * pz;
  double sx = ox - ax, sy = oy - ay, sz = oz - az;
  double qx = sy * e1z - sz * e1y, qy = sz * e1x - sx * e1z, qz = sx * e1y - sy * e1x;
  ue = (sx * px + sy * py + sz * pz) / det;
  ve = ((double)dx * qx + (double)dy * qy + (double)dz * qz) / det;
  te = (e2x * qx + e2y * qy + e2z * qz) / det;
  return det != 0.0 && ue >= 0.0 && ve >= 0.0 && ue + ve <= 1.0 && te >= 0.0;
};
// 16 float32 ulps (generous against the few the terms carry) of the direction's L1 length.
float error_scale = 16.0f * 1.1920929e-7f * (__builtin_fabsf(dx) + __builtin_fabsf(dy) + __builtin_fabsf(dz));
float tmax = max_t;
int best = -1;
// @section node_test
    vf8 nx, fx, ny, fy, nz, fz;
    __builtin_memcpy(&nx, nb + near_x * 8, 32); __builtin_memcpy(&fx, nb + far_x * 8, 32);
    __builtin_memcpy(&ny, nb + near_y * 8, 32); __builtin_memcpy(&fy, nb + far_y * 8, 32);
    __builtin_memcpy(&nz, nb + near_z * 8, 32); __builtin_memcpy(&fz, nb + far_z * 8, 32);
    vf8 key = __builtin_elementwise_max(__builtin_elementwise_max((nx - ox) * rx, (ny - oy) * ry),
                                        __builtin_elementwise_max((nz - oz) * rz, (vf8)0.0f));
    vf8 exit = __builtin_elementwise_min(__builtin_elementwise_min((fx - ox) * rx, (fy - oy) * ry) * 1.0000004f,
                                         __builtin_elementwise_min((fz - oz) * rz * 1.0000004f, (vf8)tmax));
    vi8 reach = key <= exit;
// @section in_reach
stack_key[sp] < tmax
// @section leaf_test
    vf4 px = dy * e2z - dz * e2y, py = dz * e2x - dx * e2z, pz = dx * e2y - dy * e2x;
    vf4 det = e1x * px + e1y * py + e1z * pz;
    vf4 inv = 1.0f / det;
    vf4 sx = ox - ax, sy = oy - ay, sz = oz - az;
    vf4 u = (sx * px + sy * py + sz * pz) * inv;
    vf4 qx = sy * e1z - sz * e1y, qy = sz * e1x - sx * e1z, qz = sx * e1y - sy * e1x;
    vf4 v = (dx * qx + dy * qy + dz * qz) * inv;
    vf4 t = (e2x * qx + e2y * qy + e2z * qz) * inv;
    // A bound on float32's error in u and v (a few ulps of the largest terms summed, over det): grazing rays and
    // origins far from small triangles widen it. Lanes within it of an edge, or with det 0, are decided by exact().
    vf4 s1 = __builtin_elementwise_abs(sx) + __builtin_elementwise_abs(sy) + __builtin_elementwise_abs(sz);
    vf4 edge_sum, edge_product;  // |b - a|_1 + |c - a|_1 and their product, per lane
    __builtin_memcpy(&edge_sum, pk + 36, 16); __builtin_memcpy(&edge_product, pk + 40, 16);
    vf4 margin = (error_scale * (s1 * edge_sum + edge_product)) * __builtin_elementwise_abs(inv);
    vi4 near = (u >= -margin) & (v >= -margin) & (u + v <= 1.0f + margin) & (t >= 0.0f) & (t < tmax);
    vi4 maybe = ((det == 0.0f) & (lane_faces >= 0)) | near;
    vi4 sure = (u >= margin) & (v >= margin) & (u + v <= 1.0f - margin);
    for (int j = 0; j < 4; ++j) {
      if (!maybe[j] || t[j] >= tmax) continue;  // (det 0: t is NaN and goes on)
      int lane_face = lane_faces[j];
      if (sure[j]) { tmax = t[j]; best = lane_face; continue; }
      double te, ue, ve;  // this close to an edge, float32 may miss a hit or invent one: float64 decides
      if (exact(lane_face, te, ue, ve) && te < tmax) { tmax = (float)te; best = lane_face; }
    }
// @section finish
face.data[i] = best;
if (best >= 0) {
  double te, ue, ve;
  exact(best, te, ue, ve);
  wp::vec3 pa, pb, pc;
  corners(best, pa, pb, pc);
  wp::vec3 n = wp::cross(pb - pa, pc - pa);
  t_hit.data[i] = (float)te;
  bary.data[i] = wp::vec3((float)(1.0 - ue - ve), (float)ue, (float)ve);
  normal.data[i] = n / wp::length(n);
} else {
  t_hit.data[i] = __builtin_inff();
  bary.data[i] = wp::vec3(0.0f);
  normal.data[i] = wp::vec3(0.0f);
}
