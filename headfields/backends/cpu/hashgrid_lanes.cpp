// The hash grid's encoding of LANES points of one level a thread, in SIMD lanes (hashgrid_lanes.py fills in LANES,
// FEATURES and the hash's primes PRIME_Y, PRIME_Z; native.py reads the piece). The values are encoders/hashgrid.py's
// Warp kernel's to the bit: the same operations in the same order, each product and sum its own statement so that
// neither is fused into an FMA where the kernel's are not.
// @section encode
#if !defined(__CUDA_ARCH__)
typedef float vf __attribute__((ext_vector_type(LANES)));
typedef int vi __attribute__((ext_vector_type(LANES)));
typedef unsigned int vu __attribute__((ext_vector_type(LANES)));
const int* L = levels.data + (long long)level * 4;  // resolution, dense, first row, rows
const int res = L[0], dense = L[1], offset = L[2];
const unsigned int mask = (unsigned int)L[3] - 1u;  // a hashed level's rows: a power of two
const long long i0 = (long long)block * LANES, last = (long long)n - 1;
vf px, py, pz;  // the block's points; lanes past the last point repeat it and are not written
for (int j = 0; j < LANES; ++j) {
  const long long i = i0 + j < last ? i0 + j : last;
  px[j] = points.data[3 * i]; py[j] = points.data[3 * i + 1]; pz[j] = points.data[3 * i + 2];
}
const vf zero = 0.0f, one = 1.0f;
px = __builtin_elementwise_min(__builtin_elementwise_max(px, zero), one);
py = __builtin_elementwise_min(__builtin_elementwise_max(py, zero), one);
pz = __builtin_elementwise_min(__builtin_elementwise_max(pz, zero), one);
const float scale = (float)res;
const vi top = res - 1;
const vf sx = px * scale, sy = py * scale, sz = pz * scale;
vi cx = __builtin_convertvector(__builtin_elementwise_floor(sx), vi);
vi cy = __builtin_convertvector(__builtin_elementwise_floor(sy), vi);
vi cz = __builtin_convertvector(__builtin_elementwise_floor(sz), vi);
cx = cx < top ? cx : top; cy = cy < top ? cy : top; cz = cz < top ? cz : top;
const vf fx = sx - __builtin_convertvector(cx, vf), fy = sy - __builtin_convertvector(cy, vf);
const vf fz = sz - __builtin_convertvector(cz, vf);
const vf gx = one - fx, gy = one - fy, gz = one - fz;
vf acc[FEATURES];
for (int f = 0; f < FEATURES; ++f) acc[f] = zero;
const int side = res + 1;
for (int c = 0; c < 8; ++c) {
  const int bx = c & 1, by = (c >> 1) & 1, bz = (c >> 2) & 1;
  const vf wxy = (bx ? fx : gx) * (by ? fy : gy);
  const vf w = wxy * (bz ? fz : gz);
  const vi x = cx + bx, y = cy + by, z = cz + bz;
  vi row;
  if (dense) {
    row = offset + x + side * (y + side * z);
  } else {
    const vu h = __builtin_convertvector(x, vu) ^ (__builtin_convertvector(y, vu) * PRIME_Yu)
                 ^ (__builtin_convertvector(z, vu) * PRIME_Zu);
    row = offset + __builtin_convertvector(h & mask, vi);
  }
  for (int f = 0; f < FEATURES; ++f) {
    vf v;
    for (int j = 0; j < LANES; ++j) v[j] = table.data[(long long)row[j] * FEATURES + f];
    const vf term = w * v;
    acc[f] = acc[f] + term;
  }
}
for (int j = 0; j < LANES && i0 + j <= last; ++j) {
  float* out = encoded.data + ((i0 + j) * count + level) * FEATURES;
  for (int f = 0; f < FEATURES; ++f) out[f] = acc[f][j];
}
#endif
