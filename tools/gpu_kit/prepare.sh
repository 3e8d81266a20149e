#!/usr/bin/env bash
# Prepares, on a machine with PyPI, what a lent GPU machine lacks (Python 3.12, torch 2.11, no network, no warp-lang,
# at most 64 MiB carried a call), into .gpu_kit/ at the repository root (ignored by git):
#   .gpu_kit/part1, .gpu_kit/part2   warp-lang split in two (its wheel is 149 MB): one part carried by each of two calls
#   .gpu_kit/whl/                    the small pure-Python wheels the image lacks (smplx, tyro, beartype, ...)
#   .gpu_kit/kernels.tar.zst         headfields' Warp kernels compiled for sm_90 here (tools/gpu_kit/aot.py): a kernel
#                                    cache the GPU machine reads instead of compiling them (carried by the first call)
# Warp's CUDA library carries its own kernels for seven GPU generations; only sm_90's (H100, H200) are kept, the
# others zeroed in place (the file's layout unchanged), which is what lets the two parts fit.
# See docs/gpu.md for the two calls that use them.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KIT=$ROOT/.gpu_kit
WARP=${WARP_VERSION:-1.19.0}
ARCH=${KEEP_ARCH:-90}
PIP=(python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
mkdir -p "$KIT/whl" "$KIT/tmp"
"${PIP[@]}" -q -d "$KIT/whl" smplx tyro docstring-parser typeguard shtab beartype trimesh rtree zstandard gsplat
"${PIP[@]}" -q -d "$KIT/tmp" "warp-lang==$WARP"
cd "$KIT/tmp"
rm -rf warp warp_lang-*.dist-info
python3 -m zipfile -e warp_lang-"$WARP"-*.whl .
rm -rf warp/examples warp/tests
python3 "$ROOT/tools/gpu_kit/fatbin.py" warp/bin/warp.so --keep-sm "$ARCH"
tar cf - warp warp_lang-"$WARP".dist-info | zstd -q -19 --long=27 -T0 -f -o warp.tar.zst
size=$(stat -c %s warp.tar.zst)
head -c 38000000 warp.tar.zst > part00; tail -c +38000001 warp.tar.zst > part01  # call 1 also carries the wheels
mv part00 "$KIT/part1"; mv part01 "$KIT/part2"
rm -rf "$KIT/tmp"
# (this repository's environment: Warp $WARP too, so that the cache's module hashes are those the GPU machine makes)
"${PYTHON:-$ROOT/.venv/bin/python}" "$ROOT/tools/gpu_kit/aot.py" --cache "$KIT/kernels" --arch "$ARCH"
tar cf - -C "$KIT" kernels | zstd -q -19 -T0 -f -o "$KIT/kernels.tar.zst" && rm -rf "$KIT/kernels"
echo "warp-lang $WARP for sm_$ARCH: $size bytes in two parts; wheels: $(ls "$KIT/whl" | wc -l); kernels: $(stat -c %s "$KIT/kernels.tar.zst") bytes"
