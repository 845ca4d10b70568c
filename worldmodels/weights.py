"""Weight files we write, and the identity of weights.

* :func:`save_safetensors_file` writes the safetensors format deterministically: equal tensors and metadata give
  equal bytes, whatever the dict order (``safetensors.torch.save_file`` keeps its metadata in a hash map, so the
  header, and with it the file's sha256, changes from one process to the next). The header is canonical JSON
  (sorted keys), tensors are laid out by element size (largest first, so every tensor stays aligned) then name. The
  file is written next to its target and renamed into place, and is created with the process's umask like any other
  file (not the owner-only mode of a temporary file).
* :func:`tensors_sha256` is a model's identity: a hash of every tensor's name, dtype, shape and bytes, so the same
  weights have the same identity in any file layout or format (``.ckpt``, safetensors, any metadata).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from worldmodels.errors import ConfigError
from worldmodels.runtime.files import atomic_output

_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}  # fmt: skip


def _flat_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def save_safetensors_file(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                          metadata: Mapping[str, str] | None = None) -> Path:  # fmt: skip
    """Write ``tensors`` (and string ``metadata``) to ``path`` in the safetensors format, byte-reproducibly.

    Raises:
        ValueError: a dtype safetensors cannot hold, or non-string metadata.
    """
    path = Path(path)
    for name, tensor in tensors.items():
        if tensor.dtype not in _DTYPES:
            raise ConfigError(f"tensor {name!r} has dtype {tensor.dtype}, which safetensors cannot store; convert it")
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ConfigError("safetensors metadata must map strings to strings; json.dumps the values")
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header: dict[str, object] = {}
    offset = 0
    for name in order:
        tensor = tensors[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": _DTYPES[tensor.dtype], "shape": list(tensor.shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header["__metadata__"] = dict(metadata)
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    with atomic_output(path) as tmp, open(tmp, "xb") as f:  # a plain new file: the umask decides its mode
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name in order:
            f.write(_flat_bytes(tensors[name]))
        f.flush()
        os.fsync(f.fileno())
    return path


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hex sha256 of every tensor's name, dtype, shape and bytes, in name order: the weights' identity."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        head = json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)]).encode()
        data = _flat_bytes(tensor)
        digest.update(len(head).to_bytes(8, "little") + head + len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()
