"""NFD's per-frame image autoencoder: a small KL-regularised VAE (``diffusers.AutoencoderKL``) with per-channel latent
normalisation.

Why a KL-regularised VAE rather than a plain autoencoder: the diffusion transformer's samples are never exactly on
the encoder's manifold, and training the decoder on posterior *samples* (``mean + std * eps``) makes it robust to
small latent errors; the KL term keeps those posteriors from collapsing to points. Its weight is small (a few
1e-4 per latent element), so reconstructions stay sharp. After training, the per-channel mean and standard
deviation of the posterior means over the data are stored (``latent_mean``, ``latent_std``): the transformer sees
normalised latents ``(mean - latent_mean) / latent_std`` with unit variance per channel, the scale the flow's
``N(0, I)`` noise assumes (a single scalar like SD's ``scaling_factor`` would leave channels of very different
variance).

Using diffusers' ``AutoencoderKL`` keeps the key names standard, so larger configs (e.g. an SD-style VAE for 224x384
Minecraft frames) load with the same code.

Pixels: ``uint8`` RGB -> ``/255`` -> ``[-1, 1]``; decoding clamps to ``[-1, 1]`` and rounds to ``uint8``. Every
encoder/decoder call is padded to a fixed number of frames (``chunk``), so a frame's result does not depend on the
batch it came in (convolution algorithms are chosen by batch size). The default is one frame per call on the CPU
(a CPU convolution costs the same per frame at any batch size, and padding a single frame to 16 made a batch-1
decode of the Crafter autoencoder 17x slower) and 16 on a GPU (where one call per frame would serialise the batch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worldmodels.errors import ConfigError, FrameError

CRAFTER_AE_CONFIG: dict[str, Any] = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [16, 32, 64, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 8,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "mid_block_add_attention": False,
    "sample_size": 72,
    "scaling_factor": 1.0,
    "force_upcast": True,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
}
"""The Crafter autoencoder: 72x72 frames -> 9x9x8 latents (downsampling 8: one latent per 8x8 Crafter tile); narrow
channels at full resolution, where a CPU spends its time."""

TINY_AE_CONFIG: dict[str, Any] = CRAFTER_AE_CONFIG | {
    "block_out_channels": [8, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 3,
    "up_block_types": ["UpDecoderBlock2D"] * 3,
    "latent_channels": 4,
    "norm_num_groups": 4,
    "sample_size": 16,
}
"""For tests: 16x16 frames -> 4x4x4 latents."""

MINECRAFT_AE_CONFIG: dict[str, Any] = CRAFTER_AE_CONFIG | {
    "block_out_channels": [64, 128, 256, 256],
    "latent_channels": 16,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 224,
}
"""A suggested Minecraft autoencoder for the ``nfd-310m`` / ``nfd-774m`` presets: 224x384 -> 28x48x16 (untrained)."""


class FrameAutoencoder(nn.Module):
    """Frames <-> normalised latents.

    Args:
        config: a ``diffusers.AutoencoderKL`` config dict.
        frame_size: ``(H, W)`` of the frames it accepts (divisible by the downsampling factor).
        chunk: frames per encoder/decoder call (calls are padded to exactly this many; see the module docstring);
            ``None``: 1 on the CPU, 16 on other devices.
    """

    def __init__(self, config: dict[str, Any], frame_size: tuple[int, int], *, chunk: int | None = None):
        super().__init__()
        if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
            raise ConfigError(f"autoencoder config has _class_name={config['_class_name']!r}; expected 'AutoencoderKL'")
        from diffusers import AutoencoderKL  # lazy: importing diffusers takes seconds

        self.config = dict(config)
        self.model = AutoencoderKL.from_config(self.config)
        self.frame_size = (int(frame_size[0]), int(frame_size[1]))
        self.downsample = 2 ** (len(self.model.config.block_out_channels) - 1)
        if self.frame_size[0] % self.downsample or self.frame_size[1] % self.downsample:
            raise ConfigError(
                f"frame_size {self.frame_size} is not divisible by the autoencoder's downsampling {self.downsample}"
            )
        self.grid = (self.frame_size[0] // self.downsample, self.frame_size[1] // self.downsample)
        self.latent_channels = int(self.model.config.latent_channels)
        self.chunk = None if chunk is None else int(chunk)
        self.register_buffer("latent_mean", torch.zeros(self.latent_channels))
        self.register_buffer("latent_std", torch.ones(self.latent_channels))

    # --- differentiable pieces (training) ----------------------------------------------------------------------

    def posterior(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, logvar)`` ``[B, C, h, w]`` of raw (unnormalised) latents for pixels ``[B, 3, H, W]`` in
        ``[-1, 1]``."""
        h = self.model.encoder(pixels)
        if self.model.quant_conv is not None:
            h = self.model.quant_conv(h)
        mean, logvar = h.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents ``[B, C, h, w]`` -> pixels ``[B, 3, H, W]`` (unclamped, ``[-1, 1]`` scale)."""
        if self.model.post_quant_conv is not None:
            latents = self.model.post_quant_conv(latents)
        return self.model.decoder(latents)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.latent_std[:, None, None] + self.latent_mean[:, None, None]

    # --- inference ---------------------------------------------------------------------------------------------

    def call_size(self, device: torch.device) -> int:
        """Frames per encoder/decoder call on ``device`` (see ``chunk``)."""
        if self.chunk is not None:
            return self.chunk
        return 1 if torch.device(device).type == "cpu" else 16

    def _check_frames(self, frames: torch.Tensor) -> None:
        if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
            got = getattr(frames, "dtype", type(frames))
            raise FrameError(f"frames must be a uint8 torch.Tensor (RGB in [0, 255]), got {got}")
        if frames.ndim != 4 or frames.shape[-1] != 3 or tuple(frames.shape[1:3]) != self.frame_size:
            raise FrameError(
                f"frames must have shape [B, {self.frame_size[0]}, {self.frame_size[1]}, 3] (uint8 RGB, channels "
                f"last), got {tuple(frames.shape)}; resize them to the model's frame_size first"
            )

    @torch.no_grad()
    def encode(self, frames: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
        """``uint8[B, H, W, 3]`` -> normalised posterior means ``float32[B, C, h, w]``."""
        self._check_frames(frames)
        weight = self.model.encoder.conv_in.weight
        out = []
        for part, n in fixed_size_parts(frames, chunk or self.call_size(weight.device)):
            pixels = part.to(weight.device).permute(0, 3, 1, 2).to(weight.dtype) / 127.5 - 1.0
            mean, _ = self.posterior(pixels)
            out.append(self.normalize(mean[:n]).float())
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
        """Normalised latents ``[B, C, h, w]`` -> ``uint8[B, H, W, 3]`` RGB."""
        expected = (self.latent_channels, *self.grid)
        if latents.ndim != 4 or tuple(latents.shape[1:]) != expected:
            shape = ", ".join(map(str, expected))
            raise FrameError(f"latents must have shape [B, {shape}], got {tuple(latents.shape)}")
        weight = self.model.decoder.conv_in.weight
        out = []
        for part, n in fixed_size_parts(latents, chunk or self.call_size(weight.device)):
            pixels = self.decode_raw(self.denormalize(part.to(weight.device, weight.dtype)))[:n]
            out.append(pixels_to_uint8(pixels))
        return torch.cat(out)


def pixels_to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` in ``[-1, 1]`` -> ``uint8[B, H, W, 3]`` (clamped, rounded)."""
    return ((pixels.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def fixed_size_parts(batch: torch.Tensor, size: int):
    """Split ``batch`` into parts of exactly ``size`` rows (the last padded by repeating its final row); yields
    ``(part, n_real_rows)``."""
    for part in batch.split(size):
        n = len(part)
        if n < size:
            part = torch.cat([part, part[-1:].expand(size - n, *part.shape[1:])])
        yield part, n
