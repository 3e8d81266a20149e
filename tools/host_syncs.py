"""A spy for the host's traffic with a CUDA device, on the CPU: every torch call inside the library that would read a
value back from the device (``.item()``, ``bool()`` / ``int()`` / ``float()`` of a tensor, ``.tolist()``,
``nonzero``, indexing by a mask, ``.cpu()``, ...: the host waits for the GPU) or copy host data to it (a tensor made
from Python or NumPy values: ``torch.tensor``, ``as_tensor``, ``asarray``, ``new_tensor``: on CUDA a copy from
pageable memory, which waits for the queue), each with the headfields line that made it. On the CPU nothing waits,
so a CUDA property is checked where CI runs; inside ``headfields.device_paths.cuda_paths()`` the CPU takes the paths a GPU
takes, so the calls seen are a GPU's.

    with HostSyncSpy() as spy:
        model.training_step(batch, step)
    spy.reads    # Counter {(call, "module.py:function"): n}
    spy.copies   # the same for copies to the device
    spy.late     # reads of host copies made steps earlier (LATE_READS): no wait on a GPU, not read-backs

A tensor drawn by a CPU generator and then moved to the GPU is a copy this spy cannot see on the CPU (both sides are
the CPU): the library draws with a generator on the tensors' device (``sample_pixels``, the loop's generators).
"""

from __future__ import annotations

import collections
import traceback

import torch
from torch.overrides import TorchFunctionMode

# Calls whose result needs a value (or a size that depends on values) from the device.
READ_BACKS = frozenset(
    {
        "item",
        "tolist",
        "__bool__",
        "__int__",
        "__float__",
        "__index__",
        "nonzero",
        "argwhere",
        "numpy",
        "cpu",
        "masked_select",
        "unique",
        "unique_consecutive",
        "bincount",  # its length is the largest value plus one unless minlength covers it: read back either way
    }
)

# Reads of host memory that the spy cannot tell from the device's on the CPU: ``HostCopy.read`` reads pinned host
# copies made ``READ_LAG`` steps earlier, without waiting, by the time the GPU has finished that step (on the CPU the
# copy is the tensor itself). Counted apart, in ``late``: a GPU's queue does not drain for them.
LATE_READS = frozenset({("tolist", "training/host_copy.py:read")})

# Calls that make a tensor from host values: on a CUDA device, a copy from the host.
HOST_COPIES = frozenset({"tensor", "as_tensor", "asarray", "new_tensor"})


def _masked(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


def _from_host(func_name: str, args: tuple) -> bool:
    """Whether a HOST_COPIES call copies host values: not when its data is a tensor already (a cast or a view)."""
    data = args[1] if func_name == "new_tensor" and len(args) > 1 else (args[0] if args else None)
    return not isinstance(data, torch.Tensor)


class HostSyncSpy(TorchFunctionMode):
    """Inside ``with HostSyncSpy() as spy:``, ``spy.reads`` and ``spy.copies`` count each read-back and each copy to
    the device by (call, innermost headfields function), ``spy.late`` each late read of a host copy (LATE_READS);
    calls made outside the package (a test's own) are not counted."""

    def __init__(self):
        super().__init__()
        self.reads: collections.Counter[tuple[str, str]] = collections.Counter()
        self.copies: collections.Counter[tuple[str, str]] = collections.Counter()
        self.late: collections.Counter[tuple[str, str]] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        found = self.reads if name in READ_BACKS else None
        if name in ("__getitem__", "__setitem__") and len(args) > 1 and _masked(args[1]):
            found, name = self.reads, f"{name}[mask]"
        if name == "repeat_interleave" and kwargs.get("output_size") is None:
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
            found = self.reads if isinstance(repeats, torch.Tensor) else None
        if name in HOST_COPIES and _from_host(name, args):
            found = self.copies
        if found is not None:
            frames = [f for f in traceback.extract_stack()[:-1] if "/headfields/" in f.filename]
            if frames:
                where = frames[-1]
                site = (name, f"{where.filename.split('/headfields/')[-1]}:{where.name}")
                (self.late if found is self.reads and site in LATE_READS else found)[site] += 1
        return func(*args, **kwargs)

    def report(self) -> str:
        lines = [f"{n} x {name} in {where} (read back)" for (name, where), n in sorted(self.reads.items())]
        lines += [f"{n} x {name} in {where} (copied to the device)" for (name, where), n in sorted(self.copies.items())]
        lines += [f"{n} x {name} in {where} (a late read of a host copy)" for (name, where), n in sorted(self.late.items())]
        return "\n".join(lines)
