// Nearest face of a point within a radius, and whether any face is within it, through the wide BVH (wide_bvh.py's
// nearest_faces and within_reach; the walk: wide_bvh_walk.cpp).
//
// Boxes: the squared distance from the point to each box. Leaves: the squared distance to 4 triangles at once (the
// plane's where the projection falls inside, else the nearest of the 3 edges); FOUND is what a face in reach does
// next (nothing for the nearest face; the first one ends the walk for within_reach). The face found gets its closest
// point again in float64 (Ericson's regions, "Real-Time Collision Detection" 5.1.5), which gives bary, point and
// distance; one farther than `radius` there is a miss.
// @section setup
float qx = q[0], qy = q[1], qz = q[2];
// Squared reach: the radius's, and FLT_MAX for an unbounded one (an empty slot's infinite key stays out of reach).
float best = __builtin_fminf(radius * radius, 3.4028235e38f);
int best_face = -1;
// @section node_test
    vf8 lx, ly, lz, hx, hy, hz;
    __builtin_memcpy(&lx, nb + 0, 32); __builtin_memcpy(&ly, nb + 8, 32); __builtin_memcpy(&lz, nb + 16, 32);
    __builtin_memcpy(&hx, nb + 24, 32); __builtin_memcpy(&hy, nb + 32, 32); __builtin_memcpy(&hz, nb + 40, 32);
    vf8 gx = __builtin_elementwise_max(__builtin_elementwise_max(lx - qx, qx - hx), (vf8)0.0f);
    vf8 gy = __builtin_elementwise_max(__builtin_elementwise_max(ly - qy, qy - hy), (vf8)0.0f);
    vf8 gz = __builtin_elementwise_max(__builtin_elementwise_max(lz - qz, qz - hz), (vf8)0.0f);
    vf8 key = gx * gx + gy * gy + gz * gz;
    vi8 reach = key <= best;
// @section in_reach
stack_key[sp] <= best
// @section leaf_test
    vf4 wx = qx - ax, wy = qy - ay, wz = qz - az;  // q - a
    vf4 d00 = e1x * e1x + e1y * e1y + e1z * e1z, d01 = e1x * e2x + e1y * e2y + e1z * e2z;
    vf4 d11 = e2x * e2x + e2y * e2y + e2z * e2z;
    vf4 d20 = wx * e1x + wy * e1y + wz * e1z, d21 = wx * e2x + wy * e2y + wz * e2z;
    vf4 den = d00 * d11 - d01 * d01;  // 0 on padding lanes: their distances are NaN or skipped below
    vf4 v = (d11 * d20 - d01 * d21) / den, w = (d00 * d21 - d01 * d20) / den;
    vf4 rx = wx - v * e1x - w * e2x, ry = wy - v * e1y - w * e2y, rz = wz - v * e1z - w * e2z;
    vf4 plane = rx * rx + ry * ry + rz * rz;
    vf4 zero = 0.0f, one = 1.0f;
    vf4 s = __builtin_elementwise_min(__builtin_elementwise_max(d20 / d00, zero), one);  // along a -> b
    vf4 ex = wx - s * e1x, ey = wy - s * e1y, ez = wz - s * e1z;
    vf4 edge = ex * ex + ey * ey + ez * ez;
    s = __builtin_elementwise_min(__builtin_elementwise_max(d21 / d11, zero), one);  // along a -> c
    ex = wx - s * e2x; ey = wy - s * e2y; ez = wz - s * e2z;
    edge = __builtin_elementwise_min(edge, ex * ex + ey * ey + ez * ez);
    vf4 bcx = e2x - e1x, bcy = e2y - e1y, bcz = e2z - e1z;  // b -> c
    vf4 bqx = wx - e1x, bqy = wy - e1y, bqz = wz - e1z;  // q - b
    s = (bqx * bcx + bqy * bcy + bqz * bcz) / (bcx * bcx + bcy * bcy + bcz * bcz);
    s = __builtin_elementwise_min(__builtin_elementwise_max(s, zero), one);
    ex = bqx - s * bcx; ey = bqy - s * bcy; ez = bqz - s * bcz;
    edge = __builtin_elementwise_min(edge, ex * ex + ey * ey + ez * ez);
    vi4 inside = (v >= 0.0f) & (w >= 0.0f) & (v + w <= 1.0f);
    vf4 dist = inside ? plane : edge;
    for (int j = 0; j < 4; ++j) {
      // A nearer face replaces the one found; the first within the radius counts (so ties keep the first found).
      if (lane_faces[j] >= 0 && (dist[j] < best || (best_face < 0 && dist[j] <= best))) {
        best = dist[j];
        best_face = lane_faces[j];
        FOUND
      }
    }
// @section nearest_finish
bool found = false;
if (best_face >= 0) {
  wp::vec3 pa, pb, pc;
  corners(best_face, pa, pb, pc);
  double ax = pa[0], ay = pa[1], az = pa[2];
  double abx = (double)pb[0] - ax, aby = (double)pb[1] - ay, abz = (double)pb[2] - az;
  double acx = (double)pc[0] - ax, acy = (double)pc[1] - ay, acz = (double)pc[2] - az;
  double apx = (double)qx - ax, apy = (double)qy - ay, apz = (double)qz - az;
  double d1 = abx * apx + aby * apy + abz * apz, d2 = acx * apx + acy * apy + acz * apz;
  double bpx = apx - abx, bpy = apy - aby, bpz = apz - abz;
  double d3 = abx * bpx + aby * bpy + abz * bpz, d4 = acx * bpx + acy * bpy + acz * bpz;
  double cpx = apx - acx, cpy = apy - acy, cpz = apz - acz;
  double d5 = abx * cpx + aby * cpy + abz * cpz, d6 = acx * cpx + acy * cpy + acz * cpz;
  double vc = d1 * d4 - d3 * d2, vb = d5 * d2 - d1 * d6, va = d3 * d6 - d5 * d4;
  double v, w;  // the closest point is a + v (b - a) + w (c - a)
  if (d1 <= 0.0 && d2 <= 0.0) { v = 0.0; w = 0.0; }
  else if (d3 >= 0.0 && d4 <= d3) { v = 1.0; w = 0.0; }
  else if (vc <= 0.0 && d1 >= 0.0 && d3 <= 0.0) { v = d1 / (d1 - d3); w = 0.0; }
  else if (d6 >= 0.0 && d5 <= d6) { v = 0.0; w = 1.0; }
  else if (vb <= 0.0 && d2 >= 0.0 && d6 <= 0.0) { v = 0.0; w = d2 / (d2 - d6); }
  else if (va <= 0.0 && d4 - d3 >= 0.0 && d5 - d6 >= 0.0) { w = (d4 - d3) / ((d4 - d3) + (d5 - d6)); v = 1.0 - w; }
  else { double inv = 1.0 / (va + vb + vc); v = vb * inv; w = vc * inv; }
  wp::vec3 c((float)(ax + v * abx + w * acx), (float)(ay + v * aby + w * acy), (float)(az + v * abz + w * acz));
  float dist = wp::length(q - c);
  if (dist <= radius) {
    found = true;
    face.data[i] = best_face;
    bary.data[i] = wp::vec3((float)(1.0 - v - w), (float)v, (float)w);
    closest.data[i] = c;
    distance.data[i] = dist;
  }
}
if (!found) {
  face.data[i] = -1;
  bary.data[i] = wp::vec3(0.0f);
  closest.data[i] = wp::vec3(0.0f);
  distance.data[i] = __builtin_inff();
}
// @section within_finish
done:
within.data[i] = best_face >= 0;
