"""Bounds-checked walk of a GGUF header, run before `gguf.GGUFReader` touches an untrusted file.

    check_layout(path) -> None   # raises GGUFLayoutError (a ValueError) naming the first impossible count,
                                 # length or tensor extent; OSError when the file cannot be read

gguf.GGUFReader trusts the header: an array claiming 2**62 scalar elements makes it loop and allocate without end
(reads past the end of the file come back empty instead of failing), and a string length past the end is silently
cut short. Here each is compared with the bytes actually left, in O(header) time.
"""

from __future__ import annotations

import math
import mmap
import struct
from pathlib import Path

__all__ = ["GGUFLayoutError", "check_layout"]


class GGUFLayoutError(ValueError):
    """A count, length or offset in a GGUF header that the file cannot hold."""


_GGUF_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUFValueType -> bytes
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4
_GGUF_MAX_DIMS = 4  # llama.cpp's GGML_MAX_DIMS
_GGUF_MAX_NESTING = 8  # arrays of arrays; real files nest at most once


def _walk_gguf(buf: mmap.mmap, size: int) -> None:
    """Walk the header of the GGUF in `buf` checking every count, length and tensor extent against `size`.

    gguf.GGUFReader trusts the header: an array claiming 2**62 scalar elements makes it loop and allocate without
    end (reads past the end of the file come back empty instead of failing), and a string length past the end is
    silently cut short. Here each is compared with the bytes actually left, in O(header) time, before the reader
    runs. Raises `GGUFLayoutError` with the first problem.
    """
    import gguf

    pos = 0
    order = "<"

    def take(n: int, what: str) -> int:
        nonlocal pos
        if n > size - pos:
            raise GGUFLayoutError(f"{what} needs {n} bytes at offset {pos}, but the file has {size} bytes")
        start, pos = pos, pos + n
        return start

    def uint(fmt: str, what: str) -> int:
        return struct.unpack_from(order + fmt, buf, take(struct.calcsize(fmt), what))[0]

    def string(what: str) -> str:
        n = uint("Q", f"the length of {what}")
        start = take(n, f"{what} (length {n})")
        return buf[start:min(pos, start + 80)].decode("utf-8", "replace")  # only used in messages

    def check_count(count: int, min_bytes: int, what: str) -> None:
        if count * min_bytes > size - pos:
            raise GGUFLayoutError(f"{what} claims {count} entries of at least {min_bytes} bytes each, but only "
                                   f"{size - pos} bytes are left in the file")

    def value(vtype: int, what: str, depth: int) -> None:
        if vtype in _GGUF_SCALAR_SIZES:
            take(_GGUF_SCALAR_SIZES[vtype], what)
        elif vtype == _GGUF_STRING:
            string(what)
        elif vtype == _GGUF_ARRAY:
            if depth >= _GGUF_MAX_NESTING:
                raise GGUFLayoutError(f"{what} nests arrays more than {_GGUF_MAX_NESTING} deep")
            itype = uint("I", f"the element type of {what}")
            count = uint("Q", f"the length of {what}")
            if itype in _GGUF_SCALAR_SIZES:
                take(count * _GGUF_SCALAR_SIZES[itype], f"{what} ({count} elements)")
                return
            check_count(count, 8 if itype == _GGUF_STRING else 12, what)  # string: u64 length; array: u32 + u64
            for _ in range(count):
                value(itype, f"an element of {what}", depth + 1)
        else:
            raise GGUFLayoutError(f"{what} has unknown value type {vtype}")

    if bytes(buf[:4]) != b"GGUF":
        raise GGUFLayoutError(f"starts with {bytes(buf[:4])!r}, not the GGUF magic b'GGUF'")
    take(4, "the magic")
    version = uint("I", "the version")
    if version & 0xFFFF == 0:  # written on a machine of the other byte order (as gguf.GGUFReader detects it)
        order = ">"
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    if version not in gguf.READER_SUPPORTED_VERSIONS:
        raise GGUFLayoutError(f"version {version}; expected one of {list(gguf.READER_SUPPORTED_VERSIONS)}")
    n_tensors = uint("Q", "the tensor count")
    n_kv = uint("Q", "the metadata count")
    check_count(n_kv, 8 + 4 + 1, "the metadata count")  # key length, value type, smallest value
    check_count(n_tensors, 8 + 4 + 4 + 8, "the tensor count")  # name length, n_dims, type, offset
    alignment = 32  # gguf.GGUF_DEFAULT_ALIGNMENT
    for k in range(n_kv):
        key = string(f"metadata key #{k}")
        vtype = uint("I", f"the value type of metadata {key!r}")
        if key == "general.alignment" and vtype == _GGUF_UINT32:
            alignment = uint("I", "general.alignment")
            if alignment == 0 or alignment & (alignment - 1):
                raise GGUFLayoutError(f"general.alignment {alignment}; expected a power of two")
        else:
            value(vtype, f"metadata {key!r}", 0)
    infos = []
    for k in range(n_tensors):
        name = string(f"the name of tensor #{k}")
        n_dims = uint("I", f"the rank of tensor {name!r}")
        if n_dims > _GGUF_MAX_DIMS:
            raise GGUFLayoutError(f"tensor {name!r} has {n_dims} dimensions; GGUF allows at most {_GGUF_MAX_DIMS}")
        dims = [uint("Q", f"the shape of tensor {name!r}") for _ in range(n_dims)]
        infos.append((name, dims, uint("I", f"the type of tensor {name!r}"), uint("Q", f"the offset of {name!r}")))
    data_start = pos + (-pos % alignment)
    for name, dims, ttype, offset in infos:
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise GGUFLayoutError(f"tensor {name!r} has unknown type {ttype}") from None
        n_elements = math.prod(dims)  # Python ints: no overflow, unlike numpy's uint64 product
        n_bytes = n_elements * type_size // block
        if data_start + offset + n_bytes > size:
            raise GGUFLayoutError(f"tensor {name!r} of shape {dims} ({n_bytes} bytes) at data offset {offset} "
                                   f"extends past the end of the file ({size} bytes)")


def check_layout(path: Path) -> None:
    """Raise GGUFLayoutError if the GGUF header of `path` claims more metadata, tensors or bytes than it holds."""
    size = path.stat().st_size
    if size == 0:
        raise GGUFLayoutError("the file is empty")
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        _walk_gguf(buf, size)
