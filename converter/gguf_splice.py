"""A GGUF copied with some tensors replaced by others (other types, other bytes).

The sensitivity probes (converter.sensitivity) need one file per tensor group that differs from
a quantized base only in that group: copying the base's metadata bytes and rewriting the tensor
table is a fraction of a second, where quantizing the whole model again takes seconds.
"""

import struct
from pathlib import Path

import gguf
import numpy as np

from converter.files import atomic_output

_HEADER = 24  # magic, version, tensor count, key-value count


def splice(base: Path, dest: Path, replace: dict[str, tuple[str, np.ndarray]]) -> None:
    """Write `base` to `dest` with each named tensor's (type, packed bytes) taken from
    `replace`; shapes stay the base's. Written atomically."""
    reader = gguf.GGUFReader(base)
    align = reader.alignment
    kv_end = min(int(t.field.offset) for t in reader.tensors)
    infos, blobs, offset = [], [], 0
    for tensor in reader.tensors:
        type_name, data = replace.get(tensor.name, (None, None))
        code = int(tensor.tensor_type)
        if type_name is not None:
            code = int(gguf.GGMLQuantizationType[type_name])
            blob = np.ascontiguousarray(data).view(np.uint8).ravel()
        else:
            blob = np.asarray(tensor.data).view(np.uint8).ravel()
        name = tensor.name.encode()
        dims = [int(d) for d in tensor.shape]
        infos.append(
            struct.pack(
                f"<Q{len(name)}sI{len(dims)}QIQ", len(name), name, len(dims), *dims, code, offset
            )  # fmt: skip
        )
        blobs.append(blob)
        offset += _padded(blob.size, align)
    with atomic_output(dest) as temp, temp.open("wb") as out:
        out.write(bytes(reader.data[:kv_end]))
        out.write(b"".join(infos))
        out.write(b"\0" * (_padded(out.tell(), align) - out.tell()))
        for blob in blobs:
            out.write(blob.tobytes())
            out.write(b"\0" * (_padded(blob.size, align) - blob.size))


def _padded(n: int, align: int) -> int:
    return -(-n // align) * align
