#!/usr/bin/env bash
# On the GPU machine: the two parts and the wheels of prepare.sh into /tmp/site. Source it:
#   . tools/gpu_kit/unpack.sh           (then PYTHONPATH holds /tmp/site and the repository)
# The first call of a lease carries .gpu_kit/part1 and .gpu_kit/whl and runs `tools/gpu_kit/unpack.sh stash`,
# which keeps them in /tmp/kit; the second, within the machine's 30 s warm window, carries part2 and sources this.
KIT=.gpu_kit
if [ "${1:-}" = stash ]; then
  mkdir -p /tmp/kit && cp -r $KIT/part1 $KIT/whl /tmp/kit/ && { [ ! -f $KIT/kernels.tar.zst ] || cp $KIT/kernels.tar.zst /tmp/kit/; } \
    && echo "[kit] stashed: $(du -sh /tmp/kit | cut -f1)"
  return 0 2>/dev/null || exit 0
fi
[ -f /tmp/kit/part1 ] || cp $KIT/part1 /tmp/kit/ 2>/dev/null || { echo "[kit] part1 missing: the machine was not kept warm"; return 1; }
# gsplat apart (/tmp/gs, built by the first call): importing it while it builds deletes the build
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site $(ls /tmp/kit/whl/*.whl | grep -v gsplat) || return 1
cat /tmp/kit/part1 $KIT/part2 | PYTHONPATH=/tmp/site python3 -c "
import sys, tarfile, zstandard
reader = zstandard.ZstdDecompressor(max_window_size=1 << 27).stream_reader(sys.stdin.buffer)
tarfile.open(fileobj=reader, mode='r|').extractall('/tmp/site', filter='data')" || return 1
export PYTHONPATH=/tmp/site:$PWD
if [ -f /tmp/kit/kernels.tar.zst ]; then  # headfields' sm_90 kernels, compiled before the lease (tools/gpu_kit/aot.py)
  PYTHONPATH=/tmp/site python3 -c "
import sys, tarfile, zstandard
tarfile.open(fileobj=zstandard.ZstdDecompressor().stream_reader(open('/tmp/kit/kernels.tar.zst', 'rb')), mode='r|').extractall('/tmp/kit', filter='data')" \
    && export WARP_CACHE_PATH=/tmp/kit/kernels && echo "[kit] kernel cache: $(find /tmp/kit/kernels -name '*.cubin' | wc -l) sm_90 binaries"
fi
python3 -c "import warp; warp.init(); print('[kit] warp', warp.__version__, warp.get_cuda_devices())"
