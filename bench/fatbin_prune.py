"""Blank the GPU code of every architecture but one in a shared library's `.nv_fatbin` section.

onnxruntime-gpu's CUDA provider is a 284 MB library, 218 MB of it machine code for six GPU generations
(sm_75 … sm_120). A GPU of one known generation reads only its own: blanking the others' payloads (zero
bytes, entry headers and every offset unchanged) leaves a library that loads and runs the same on that
GPU and compresses to a fraction of its size, which is what lets it travel to a machine that has no
package index (bench/gpu_check.sh). On a GPU of another generation the library fails to find kernels:
never ship a pruned library.

    python -m bench.fatbin_prune libonnxruntime_providers_cuda.so pruned.so --keep 90

The container format (NVIDIA's fatbin, undocumented but stable): a section of fat binaries, each a
16-byte header (magic 0xBA55ED50, version, header size, payload size) followed by entries, each with
its own header: kind (1 PTX, 2 cubin) at 0, header size at 4, padded payload size at 8, SM at 28.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
from collections import Counter
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50


def section(path: Path, name: str = ".nv_fatbin") -> tuple[int, int]:
    """(file offset, size) of an ELF section, read with readelf."""
    for line in subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True, check=True).stdout.splitlines():
        fields = line.replace("[ ", "[").split()
        if name in fields:
            i = fields.index(name)
            return int(fields[i + 3], 16), int(fields[i + 4], 16)
    raise SystemExit(f"{path}: no {name} section")


def prune(data: bytearray, offset: int, size: int, keep: int) -> Counter:
    """Zero the payload of every entry whose SM is not `keep`, in place → bytes kept/blanked per (kind, SM)."""
    seen: Counter = Counter()
    position = offset
    while position < offset + size:
        magic, _, header_size, fat_size = struct.unpack_from("<IHHQ", data, position)
        if magic != FATBIN_MAGIC:  # alignment padding between fat binaries
            position += 8
            continue
        entry, end = position + header_size, position + header_size + fat_size
        while entry < end:
            kind, _, entry_header, padded = struct.unpack_from("<HHIQ", data, entry)
            sm = struct.unpack_from("<I", data, entry + 28)[0]
            payload = entry + entry_header
            if sm != keep:
                data[payload : payload + padded] = bytes(padded)
            seen[("PTX" if kind == 1 else "cubin", sm)] += padded
            entry = payload + padded
        position = end
    return seen


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("library", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--keep", type=int, required=True, help="the SM to keep, e.g. 90 for Hopper (H100, H200)")
    args = parser.parse_args(argv)
    data = bytearray(args.library.read_bytes())
    seen = prune(data, *section(args.library), args.keep)
    if not any(sm == args.keep for _, sm in seen):
        raise SystemExit(f"{args.library} holds no code for sm_{args.keep} (has {sorted({sm for _, sm in seen})}): nothing would run")
    args.out.write_bytes(data)
    for (kind, sm), size in sorted(seen.items(), key=lambda item: item[0][1]):
        print(f"{kind} sm_{sm}: {size / 1e6:.1f} MB {'kept' if sm == args.keep else 'blanked'}")


if __name__ == "__main__":
    main()
