"""Zeroes, in place, every CUDA binary of a shared library's ``.nv_fatbin`` section but one architecture's.

    python fatbin.py warp.so --keep-sm 90

The fat binaries' headers are kept, so the CUDA driver still reads them and picks the kept sm_XX code on such a GPU;
the zeroed payloads compress to nothing. Only for carrying a library to a machine of known GPU (tools/gpu_kit).
"""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
ELF_KIND = 2


def section(data: bytes, name: str) -> tuple[int, int]:
    """The file offset and size of an ELF64 section."""
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    entsize, count, names = struct.unpack_from("<HHH", data, 0x3A)
    header = lambda i: struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * entsize)  # noqa: E731
    strings = header(names)[4]
    for i in range(count):
        h = header(i)
        if data[strings + h[0] : data.index(0, strings + h[0])].decode() == name:
            return h[4], h[5]
    raise SystemExit(f"no {name} section")


def entries(data: bytes, start: int, size: int):
    """(kind, sm, payload offset, payload size) of every entry of every fat binary in the section."""
    pos = start
    while pos < start + size:
        magic, _, header, total = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # containers are 8-byte aligned
            continue
        p, end = pos + header, pos + header + total
        while p < end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, p)
            yield kind, struct.unpack_from("<I", data, p + 28)[0], p + entry_header, payload
            p += entry_header + payload
        pos = end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", type=Path)
    parser.add_argument("--keep-sm", type=int, required=True)
    args = parser.parse_args()
    data = bytearray(args.library.read_bytes())
    found = list(entries(data, *section(data, ".nv_fatbin")))
    if not any(kind == ELF_KIND and sm == args.keep_sm for kind, sm, _, _ in found):
        raise SystemExit(f"no sm_{args.keep_sm} binary in {args.library}: nothing zeroed")
    zeroed = 0
    for kind, sm, offset, size in found:
        if not (kind == ELF_KIND and sm == args.keep_sm):
            data[offset : offset + size] = bytes(size)
            zeroed += size
    args.library.write_bytes(data)
    print(f"{args.library.name}: kept sm_{args.keep_sm}, zeroed {zeroed} bytes of {len(found)} entries")


if __name__ == "__main__":
    main()
