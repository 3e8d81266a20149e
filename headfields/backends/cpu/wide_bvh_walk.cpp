// The wide BVH's walk, shared by its queries (wide_bvh.py fills in the placeholders; native.py reads the pieces).
//
// Every query walks the tree alike: the node's 8 child boxes tested at once give a key per child (a ray's entry
// distance, a point's squared distance to the box) and a mask of those in reach; children in reach are pushed far to
// near and the nearest is taken next; an entry popped out of reach (beyond the best answer so far) is skipped.
// A query's own code (wide_bvh_rays.cpp, wide_bvh_points.cpp) fills NODE_TEST (sets `key` and `reach` of the 8
// children), LEAF_TEST (the 4 triangles of a leaf), IN_REACH (whether stack entry `sp` may still hold an answer);
// STACK_SIZE and PACK_ROWS are wide_bvh.py's constants. The boxes and packs are laid out as WideBvh writes them.
// @section prelude
typedef float vf8 __attribute__((ext_vector_type(8)));
typedef int vi8 __attribute__((ext_vector_type(8)));
typedef float vf4 __attribute__((ext_vector_type(4)));
typedef int vi4 __attribute__((ext_vector_type(4)));
const float* B = tree.boxes.data + (long long)f * tree.num_nodes * 48;
const int* C = tree.child.data;
const float* P = tree.packs.data + (long long)f * tree.num_leaves * PACK_ROWS * 4;
const wp::vec3* frame_points = tree.points.data + (long long)f * tree.num_vertices;
// Face g's corners in this frame (the packs hold float32 edges, rounded: float64 work starts from these).
auto corners = [&](int g, wp::vec3& pa, wp::vec3& pb, wp::vec3& pc) {
  const int* corner = tree.faces.data + (long long)g * 3;
  pa = frame_points[corner[0]]; pb = frame_points[corner[1]]; pc = frame_points[corner[2]];
};
// @section walk
int stack_node[STACK_SIZE];
float stack_key[STACK_SIZE];
int sp = 0;
int cur = 0;
while (true) {
  if (cur >= 0) {
    const float* nb = B + (long long)cur * 48;
NODE_TEST
    int mask = 0;
    for (int j = 0; j < 8; ++j) mask |= (reach[j] & 1) << j;
    const int* nc = C + (long long)cur * 8;
    if (mask != 0 && (mask & (mask - 1)) == 0) { cur = nc[__builtin_ctz(mask)]; continue; }
    if (mask != 0) {
      int base = sp;
      while (mask) {
        int j = __builtin_ctz(mask);
        mask &= mask - 1;
        float kj = key[j];
        int k = sp++;
        while (k > base && stack_key[k - 1] < kj) { stack_key[k] = stack_key[k - 1]; stack_node[k] = stack_node[k - 1]; --k; }
        stack_key[k] = kj;
        stack_node[k] = nc[j];
      }
      cur = stack_node[--sp];
      continue;
    }
  } else {
    int leaf = -cur - 1;
    const float* pk = P + (long long)leaf * PACK_ROWS * 4;
    vf4 ax, ay, az, e1x, e1y, e1z, e2x, e2y, e2z;  // corner a and edges b - a, c - a of 4 triangles
    __builtin_memcpy(&ax, pk + 0, 16); __builtin_memcpy(&ay, pk + 4, 16); __builtin_memcpy(&az, pk + 8, 16);
    __builtin_memcpy(&e1x, pk + 12, 16); __builtin_memcpy(&e1y, pk + 16, 16); __builtin_memcpy(&e1z, pk + 20, 16);
    __builtin_memcpy(&e2x, pk + 24, 16); __builtin_memcpy(&e2y, pk + 28, 16); __builtin_memcpy(&e2z, pk + 32, 16);
    vi4 lane_faces;  // -1 on padding lanes
    __builtin_memcpy(&lane_faces, tree.leaf_faces.data + (long long)leaf * 4, 16);
LEAF_TEST
  }
  cur = -0x7fffffff - 1;  // pop the nearest entry still in reach
  while (sp > 0) { --sp; if (IN_REACH) { cur = stack_node[sp]; break; } }
  if (cur == -0x7fffffff - 1) break;
}
