"""LPIPS v0.1 with the AlexNet trunk, as ``lpips.LPIPS(net='alex', spatial=True)`` computes it.

Our own AlexNet (no torchvision) loads two user-supplied files:

* ``alexnet-owt-7be5be79.pth`` - torchvision's ImageNet AlexNet (keys ``features.{0,3,6,8,10}.weight/bias``);
* ``alex.pth`` - the LPIPS v0.1 linear calibration (keys ``lin{0..4}.model.1.weight``, shapes ``[1, C, 1, 1]``).

Forward pass (``lpips/lpips.py`` and ``pretrained_networks.alexnet``): inputs in ``[-1, 1]`` go through the
``ScalingLayer`` ``(x - shift) / scale`` with ``shift = [-.030, -.088, -.188]``, ``scale = [.458, .448, .450]``;
the trunk yields relu1..relu5 (conv 11x11/4 pad 2, 64 | maxpool 3/2, conv 5x5 pad 2, 192 | maxpool 3/2, conv 3x3
384 | conv 3x3 256 | conv 3x3 256); each feature map is unit-normalised over channels (``x / (||x|| + 1e-10)``),
the squared difference goes through the layer's bias-free 1x1 ``lin`` conv, is bilinearly upsampled
(``align_corners=False``) to the input size, and the five maps are summed. ``common_metrics`` feeds one frame pair
at a time (``uint8 / 255 * 2 - 1``) and keeps ``map.mean()``; we batch frames and return the same numbers.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.metrics.video import as_video_pair, summarize_per_frame
from worldmodels.errors import CheckpointError, FrameError, MissingFileError, UnsafePickleError, refused_pickle_reason

BACKBONE_FILE = "alexnet-owt-7be5be79.pth"
LINEAR_FILE = "alex.pth"
BACKBONE_SOURCE = (
    "torchvision's ImageNet AlexNet weights, https://download.pytorch.org/models/alexnet-owt-7be5be79.pth "
    "(torchvision caches it as ~/.cache/torch/hub/checkpoints/alexnet-owt-7be5be79.pth)"
)
LINEAR_SOURCE = (
    "the LPIPS v0.1 linear weights shipped in the `lpips` pip package as lpips/weights/v0.1/alex.pth "
    "(github.com/richzhang/PerceptualSimilarity)"
)

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10
CHANNELS = (64, 192, 384, 256, 256)
# torchvision AlexNet `features` index -> (out, in, kernel, stride, padding)
CONVS: dict[int, tuple[int, int, int, int, int]] = {
    0: (64, 3, 11, 4, 2),
    3: (192, 64, 5, 1, 2),
    6: (384, 192, 3, 1, 1),
    8: (256, 384, 3, 1, 1),
    10: (256, 256, 3, 1, 1),
}


def _load_state(path: str | Path, what: str, source: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} not found at {path}; supply {what}: {source}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # weights_only refuses pickles that reference code
        raise UnsafePickleError(f"{path} is not a plain tensor state dict: it references {refused_pickle_reason(str(error))}, "
                                "which could run code; use the official weights file") from None
    except Exception as error:
        raise CheckpointError(f"cannot read {path} as a torch state dict ({what}): {error}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} must hold a state dict, got {type(state).__name__}")
    return state


def _take(state: dict[str, torch.Tensor], key: str, shape: tuple[int, ...], path: str | Path) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(
            f"{path} is missing {key!r}; expected the keys of {Path(path).name}, found {sorted(state)[:6]}..."
        )
    tensor = state[key]
    if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
        got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise CheckpointError(f"{path}: {key!r} must have shape {shape}, got {got}")
    return tensor.detach().to(torch.float32)


class AlexNetFeatures(nn.Module):
    """AlexNet's convolutional trunk returning relu1..relu5 (``torchvision.models.alexnet().features[:12]``)."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for o, i, k, s, p in CONVS.values())

    def load_torchvision(self, state: dict[str, torch.Tensor], path: str | Path = BACKBONE_FILE) -> None:
        """Copy ``features.{0,3,6,8,10}.weight/bias`` from a torchvision AlexNet state dict (extra keys ignored)."""
        for conv, (index, (o, i, k, _, _)) in zip(self.convs, CONVS.items()):
            conv.weight.data.copy_(_take(state, f"features.{index}.weight", (o, i, k, k), path))
            conv.bias.data.copy_(_take(state, f"features.{index}.bias", (o,), path))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c0, c3, c6, c8, c10 = self.convs
        relu1 = F.relu(c0(x))
        relu2 = F.relu(c3(F.max_pool2d(relu1, kernel_size=3, stride=2)))
        relu3 = F.relu(c6(F.max_pool2d(relu2, kernel_size=3, stride=2)))
        relu4 = F.relu(c8(relu3))
        relu5 = F.relu(c10(relu4))
        return [relu1, relu2, relu3, relu4, relu5]


class LPIPSAlex(nn.Module):
    """LPIPS v0.1 (AlexNet) returning the spatial distance map ``[B, 1, H, W]`` of inputs in ``[-1, 1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = AlexNetFeatures()
        self.lins = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1), requires_grad=False) for c in CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE, dtype=torch.float32).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, backbone_path: str | Path, linear_path: str | Path) -> LPIPSAlex:
        """Build from ``alexnet-owt-7be5be79.pth`` and ``alex.pth`` (see the module docstring).

        Raises:
            MissingFileError: a file is missing (the message says where it normally comes from).
            CheckpointError: a key is missing or has the wrong shape.
            UnsafePickleError: a file is a pickle that references code.
        """
        model = cls()
        model.net.load_torchvision(_load_state(backbone_path, BACKBONE_FILE, BACKBONE_SOURCE), backbone_path)
        linear = _load_state(linear_path, LINEAR_FILE, LINEAR_SOURCE)
        for k, (param, c) in enumerate(zip(model.lins, CHANNELS)):
            param.data.copy_(_take(linear, f"lin{k}.model.1.weight", (1, c, 1, 1), linear_path))
        return model

    @staticmethod
    def _unit(feature: torch.Tensor) -> torch.Tensor:
        norm = torch.sqrt(torch.sum(feature**2, dim=1, keepdim=True))
        return feature / (norm + NORM_EPS)

    def forward(self, in0: torch.Tensor, in1: torch.Tensor) -> torch.Tensor:
        feats0 = self.net((in0 - self.shift) / self.scale)
        feats1 = self.net((in1 - self.shift) / self.scale)
        size = in0.shape[2:]
        total = None
        for f0, f1, weight in zip(feats0, feats1, self.lins):
            diff = (self._unit(f0) - self._unit(f1)) ** 2
            layer = F.interpolate(F.conv2d(diff, weight), size=size, mode="bilinear", align_corners=False)
            total = layer if total is None else total + layer
        return total


def lpips_per_frame(
    generated: Any,
    reference: Any,
    *,
    backbone_path: str | Path | None = None,
    linear_path: str | Path | None = None,
    model: LPIPSAlex | None = None,
    device: str | torch.device = "cpu",
    chunk_frames: int = 16,
) -> np.ndarray:
    """LPIPS of every frame pair, ``float64 [N, T]``: the mean of the spatial map of ``uint8 / 255 * 2 - 1``.

    Pass either both weight paths or an already built ``model``.
    """
    a, b = as_video_pair(generated, reference)
    if model is None:
        if backbone_path is None or linear_path is None:
            raise MissingFileError(
                f"LPIPS needs backbone_path ({BACKBONE_FILE}: {BACKBONE_SOURCE}) and linear_path ({LINEAR_FILE}: "
                f"{LINEAR_SOURCE})"
            )
        model = LPIPSAlex.from_files(backbone_path, linear_path)
    if chunk_frames < 1:
        raise FrameError(f"chunk_frames must be >= 1, got {chunk_frames}")
    device = torch.device(device)
    model = model.to(device)
    n, t = a.shape[:2]
    a, b = a.reshape(n * t, *a.shape[2:]), b.reshape(n * t, *b.shape[2:])
    out = np.empty(n * t, dtype=np.float64)
    with torch.no_grad():
        for start in range(0, n * t, chunk_frames):
            stop = min(start + chunk_frames, n * t)
            x = a[start:stop].to(device).permute(0, 3, 1, 2).to(torch.float32) / 255.0 * 2 - 1
            y = b[start:stop].to(device).permute(0, 3, 1, 2).to(torch.float32) / 255.0 * 2 - 1
            out[start:stop] = model(x, y).mean(dim=(1, 2, 3)).cpu().numpy()
    return out.reshape(n, t)


def lpips(
    generated: Any,
    reference: Any,
    *,
    backbone_path: str | Path | None = None,
    linear_path: str | Path | None = None,
    model: LPIPSAlex | None = None,
    device: str | torch.device = "cpu",
    chunk_frames: int = 16,
) -> dict[str, Any]:
    """LPIPS (AlexNet, v0.1) of ``uint8 [N, T, H, W, 3]`` videos as ``calculate_lpips`` reports it.

    Returns:
        ``{"per_step": [T], "mean": float, "per_item": [N], "per_step_std": [T], "per_frame": [N][T]}``.
    """
    values = lpips_per_frame(
        generated, reference, backbone_path=backbone_path, linear_path=linear_path, model=model, device=device,
        chunk_frames=chunk_frames,
    )  # fmt: skip
    return summarize_per_frame(values)
