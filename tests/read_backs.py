"""A spy for host synchronisations, on the CPU: every torch call that would read a value back from a CUDA device
(``.item()``, ``bool()`` / ``int()`` / ``float()`` of a tensor, ``.tolist()``, ``nonzero``, indexing by a mask,
``.cpu()``, ...) is recorded with the headfields lines that made it. On the CPU nothing waits, so the test of a
CUDA property runs where CI runs."""

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


# Reads the library makes on the CPU only (a branch of ``device.type == "cpu"``), where nothing waits: no CUDA call
# reaches them, so the spy does not count them. (innermost headfields function) -> where it is asked.
CPU_ONLY = {
    "kernels.py:in_local_order": "it refuses points off the CPU (TriangleMesh.query_order sorts CUDA's queries)",
}


def _masked(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


class ReadBackSpy(TorchFunctionMode):
    """Inside ``with ReadBackSpy() as spy:``, ``spy.sites`` counts each read-back by (call, innermost headfields
    line); calls made outside the package (the test's own) and the CPU's own reads (``CPU_ONLY``) are not counted."""

    def __init__(self):
        super().__init__()
        self.sites: collections.Counter[tuple[str, str]] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        read = name in READ_BACKS
        if name in ("__getitem__", "__setitem__") and len(args) > 1 and _masked(args[1]):
            read, name = True, f"{name}[mask]"
        if name == "repeat_interleave" and kwargs.get("output_size") is None:
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats")
            read = isinstance(repeats, torch.Tensor)
        if read:
            frames = [f for f in traceback.extract_stack()[:-1] if "/headfields/" in f.filename]
            if frames:
                where = frames[-1]
                site = f"{where.filename.split('/headfields/')[-1]}:{where.name}"
                if site not in CPU_ONLY:
                    self.sites[(name, site)] += 1
        return func(*args, **kwargs)

    def report(self) -> str:
        return "\n".join(f"{count} x {name} in {where}" for (name, where), count in sorted(self.sites.items()))
