"""What exists only to make a small CPU fast (a 2-core one, this project's). A fast path gives the values of the
primitive's own code (to float32 rounding, or to the bit where its module says so), and falls back to that code where
it cannot run; the primitive keeps one visible line that dispatches here. What changes values is asked for by name:
denormals flushed to zero (a process tuning), bfloat16 products (:func:`~headfields.networks.reduced_precision`).

- :mod:`~headfields.backends.cpu.wide_bvh`: first ray hits, nearest faces and faces within reach through an 8-wide BVH
  whose tests run in SIMD lanes (the meshes' queries on the CPU).
- :mod:`~headfields.backends.cpu.hashgrid_lanes`: the hash grid's encoding, eight points a thread in SIMD lanes.
- :mod:`~headfields.backends.cpu.onednn`: the linear layers' and ReLU MLPs' products on oneDNN (float32, and bfloat16
  where the CPU has it).
- :mod:`~headfields.backends.cpu.row_blocks`: the Softplus MLPs' evaluation without autograd a block of rows at a
  time.
- :mod:`~headfields.backends.cpu.process_tuning`: a training run's process tunings, put back after: flushing
  denormal floats (:mod:`~headfields.backends.cpu.denormals`) and keeping freed memory in glibc's heap
  (:mod:`~headfields.backends.cpu.freed_memory`).

Native code is kept in ``.cpp`` files beside the modules that hand it to Warp (:mod:`~headfields.backends.cpu.native`).
"""
