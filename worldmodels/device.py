"""Checking a device string before anything is loaded onto it.

torch only notices a device it cannot use deep inside the first ``.to(device)`` (``Torch not compiled with CUDA
enabled``, ``invalid device ordinal``), after minutes of loading. :func:`check_device` answers at once, in one line
that names the device and the fix; every command that takes ``--device`` calls it first.
"""

from __future__ import annotations

import torch

from worldmodels.errors import ConfigError

__all__ = ["check_device", "describe_torch"]

_KNOWN = "cpu, cuda, cuda:N or mps"


def check_device(spec: str | torch.device) -> torch.device:
    """The ``torch.device`` for ``spec`` after checking that this torch build and machine can use it.

    Raises:
        ConfigError: unknown device type, a CUDA device on a torch without CUDA or on a machine without that GPU,
            or MPS where it is unavailable.
    """
    text = str(spec).strip()
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {text!r}: use {_KNOWN}") from None
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if torch.version.cuda is None:
            raise ConfigError(
                f"device {text!r} needs CUDA, but this torch ({torch.__version__}) was built without it: install a "
                "CUDA build of torch (pytorch.org/get-started) or use --device cpu"
            )
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"device {text!r}: torch {torch.__version__} has CUDA {torch.version.cuda} but sees no GPU (driver "
                "missing or CUDA_VISIBLE_DEVICES empty): fix the driver or use --device cpu"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {text!r} does not exist: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}")
        return device
    if device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(f"device {text!r} (Apple MPS) is not available on this machine: use --device cpu")
        return device
    raise ConfigError(f"device {text!r} is not supported by rlir: use {_KNOWN}")


def describe_torch() -> dict[str, str]:
    """torch version, its CUDA build and the GPUs it sees, and its CPU threads (for ``rlir doctor``)."""
    cuda = torch.version.cuda
    if cuda is None:
        gpus = "none (CPU-only torch build)"
    elif not torch.cuda.is_available():
        gpus = f"none visible (built with CUDA {cuda})"
    else:
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        gpus = ", ".join(f"cuda:{i} {name}" for i, name in enumerate(names))
    return {"torch": torch.__version__, "cuda": cuda or "none", "gpus": gpus, "threads": str(torch.get_num_threads())}
