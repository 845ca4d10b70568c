"""MineWorld's VQ image tokenizer: a ``diffusers.VQModel`` plus the official pre- and post-processing.

Official semantics (``microsoft/mineworld: vae.py``, ``inference.py``):

* tokenize: ``uint8`` RGB -> ``/255`` -> ``(x - 0.5) / 0.5`` -> ``encoder`` -> ``quant_conv`` -> nearest codebook
  entry (L2) -> ``int64[B, h, w]`` (row-major grid).
* detokenize: codebook lookup -> ``post_quant_conv`` -> ``decoder`` -> ``clamp(-1, 1)`` -> ``(x + 1) / 2 * 255``
  -> ``uint8`` by truncation (not rounding), in the decoder's dtype.

``diffusers`` is imported lazily (about 2.5 s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from worldmodels.errors import ConfigError, FrameError, MissingFileError

TINY_VQ_CONFIG: dict[str, Any] = {
    "_class_name": "VQModel",
    "act_fn": "silu",
    "block_out_channels": [16, 16, 32, 32],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 8,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "norm_type": "group",
    "num_vq_embeddings": 64,
    "vq_embed_dim": None,
    "mid_block_add_attention": False,
    "lookup_from_codebook": True,
    "force_upcast": True,
    "scaling_factor": 0.18215,
    "sample_size": 32,
}
"""A small VQ-VAE for tests: downsampling 8 (32x48 frames -> 4x6 grid), 64 codes of dimension 8."""

AMUSED_VQ_CONFIG: dict[str, Any] = {
    "_class_name": "VQModel",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 256, 512, 768],
    "down_block_types": ["DownEncoderBlock2D"] * 5,
    "up_block_types": ["UpDecoderBlock2D"] * 5,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 64,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "norm_type": "group",
    "num_vq_embeddings": 8192,
    "vq_embed_dim": None,
    "mid_block_add_attention": False,
    "lookup_from_codebook": True,
    "force_upcast": True,
    "scaling_factor": 0.18215,
    "sample_size": 32,
}
"""The aMUSEd VQ-VAE config, the *likely* (unverified) content of MineWorld's ``checkpoints/vae/config.json``
(mineworld.md §5). Real checkpoints must be loaded with their own config.json."""


def load_vq_config(path: str | Path) -> dict[str, Any]:
    """Read a diffusers ``config.json`` for :class:`VQTokenizer`."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(
            f"VQ tokenizer config {str(path)!r} does not exist; put MineWorld's checkpoints/vae/config.json there "
            "(or pass vae_config=...)"
        )
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object (a diffusers VQModel config)")
    return config


class VQTokenizer(nn.Module):
    """Frames <-> VQ token grids.

    Args:
        config: a diffusers ``VQModel`` config dict (the official ``checkpoints/vae/config.json``).
        frame_size: ``(H, W)`` of the frames this tokenizer accepts.
        chunk: frames per encoder/decoder call. Every call is padded to exactly ``chunk`` frames: convolution
            kernels pick algorithms by batch size, and a frame's truncated pixels (rarely even its nearest code)
            could otherwise differ by one step between batch compositions. With a fixed call size a frame's
            result does not depend on the batch it came in. The default, one frame per call, never pays for
            padding: a single env decodes one frame, not ``chunk`` (on the 2-core CPU the Crafter decoder costs
            25.6 ms per frame one at a time against 21.2 ms in calls of 16, but a padded call of 16 costs 340 ms
            for a single env). Bulk work (tokenizing recordings) passes a larger ``chunk``.
    """

    def __init__(self, config: dict[str, Any], frame_size: tuple[int, int], *, chunk: int = 1):
        super().__init__()
        if config.get("_class_name", "VQModel") != "VQModel":
            raise ConfigError(f"VQ config has _class_name={config['_class_name']!r}; expected 'VQModel'")
        if config.get("remap") is not None:
            raise ConfigError("VQ configs with a 'remap' file are not supported")
        from diffusers import VQModel  # lazy: importing diffusers takes seconds

        self.config = dict(config)
        self.model = VQModel.from_config(self.config)
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        factor = 2 ** (len(self.model.config.block_out_channels) - 1)
        if self.frame_size[0] % factor or self.frame_size[1] % factor:
            raise ConfigError(f"frame_size {self.frame_size} is not divisible by the VQ downsampling factor {factor}")
        self.grid = (self.frame_size[0] // factor, self.frame_size[1] // factor)
        self.codebook_size = int(self.model.config.num_vq_embeddings)
        self.embed_dim = int(self.model.quantize.vq_embed_dim)
        self.chunk = int(chunk)

    def _check_frames(self, frames: torch.Tensor) -> None:
        if not isinstance(frames, torch.Tensor):
            raise FrameError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise FrameError(f"frames must be uint8 RGB in [0, 255], got dtype {frames.dtype}")
        if frames.ndim != 4 or frames.shape[-1] != 3 or tuple(frames.shape[1:3]) != self.frame_size:
            raise FrameError(
                f"frames must have shape [B, {self.frame_size[0]}, {self.frame_size[1]}, 3] (uint8 RGB, channels "
                f"last), got {tuple(frames.shape)}; resize them to the model's frame_size first"
            )

    @torch.no_grad()
    def tokenize(self, frames: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
        """``uint8[B, H, W, 3]`` RGB -> ``int64[B, h, w]`` token ids (row-major grid)."""
        self._check_frames(frames)
        param = self.model.quant_conv.weight
        out = []
        for part, n in _fixed_size_parts(frames, chunk or self.chunk):
            x = part.to(param.device).permute(0, 3, 1, 2).float() / 255.0
            x = ((x - 0.5) / 0.5).to(param.dtype)
            h = self.model.quant_conv(self.model.encoder(x))
            out.append(self._nearest_code(h)[:n])
        return torch.cat(out)

    def _nearest_code(self, latents: torch.Tensor) -> torch.Tensor:
        b, _, h, w = latents.shape
        _, _, (_, _, indices) = self.model.quantize(latents)
        return indices.reshape(b, h, w).long()

    @torch.no_grad()
    def detokenize(self, ids: torch.Tensor, *, chunk: int | None = None, channels_last: bool = False) -> torch.Tensor:
        """``int64[B, h, w]`` token ids -> ``uint8[B, H, W, 3]`` RGB.

        ``channels_last`` runs the decoder's convolutions on NHWC activations (oneDNN's fast layout on CPUs: per
        frame 1.1x in calls of one frame, 1.3x in calls of 16 on the 2-core dev CPU, ``bench/bench_vq_decode.py``);
        the float results differ from NCHW's in their last bits, so a pixel can land one level off. The default keeps
        the reference layout.
        """
        if ids.ndim != 3 or tuple(ids.shape[1:]) != self.grid:
            raise FrameError(f"token ids must have shape [B, {self.grid[0]}, {self.grid[1]}], got {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            raise FrameError(
                f"image token ids must lie in [0, {self.codebook_size}), got range [{int(ids.min())}, {int(ids.max())}]"
            )
        quantize = self.model.quantize
        out = []
        for part, n in _fixed_size_parts(ids, chunk or self.chunk):
            part = part.to(quantize.embedding.weight.device)
            quant = quantize.get_codebook_entry(part.reshape(-1), (part.shape[0], *self.grid, self.embed_dim))
            if channels_last:  # the input's layout is what the convolutions follow; the weights stay as they are
                quant = quant.contiguous(memory_format=torch.channels_last)
            spatial = quant if self.model.config.norm_type == "spatial" else None
            dec = self.model.decoder(self.model.post_quant_conv(quant), spatial)
            pixels = (dec.clamp(-1.0, 1.0) + 1.0) / 2.0 * 255.0
            out.append(pixels[:n].to(torch.uint8).permute(0, 2, 3, 1).contiguous())  # truncates, as numpy astype
        return torch.cat(out)


def _fixed_size_parts(batch: torch.Tensor, size: int):
    """Split ``batch`` into parts of exactly ``size`` rows (the last padded by repeating its final row); yields
    ``(part, n_real_rows)``."""
    for part in batch.split(size):
        n = len(part)
        if n < size:
            part = torch.cat([part, part[-1:].expand(size - n, *part.shape[1:])])
        yield part, n
