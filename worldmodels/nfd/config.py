"""NFD architecture configuration: the diffusion transformer, the latent layout it implies, and named presets.

NFD (Next-Frame Diffusion, arXiv 2506.01380) released no code or weights (``mineworld.md`` §12), so nothing here is
an official file format: the presets reproduce the sizes RLIR post-trains (``nfd-310m``: hidden 1024, SwiGLU 2730,
16 heads, 16 layers; ``nfd-774m``: 1536, 4096, 24, 18), and everything else (latent layout, RoPE split, context
length) is our choice, stated in the fields' docstrings.

The frame autoencoder has its own config (a ``diffusers.AutoencoderKL`` config dict, see
:mod:`worldmodels.nfd.autoencoder`); ``latent_channels`` and ``latent_grid`` here must agree with it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from worldmodels.actions import ActionDomain, get_domain
from worldmodels.errors import ActionError, ConfigError


def default_rope_axes(head_dim: int) -> tuple[int, int, int]:
    """HunyuanVideo-style split of the head dimension into ``(n_t, n_h, n_w)`` even parts: a quarter for time, the
    rest shared by height and width (HunyuanVideo: 128 -> 16, 56, 56; here 64 -> 16, 24, 24)."""
    n_t = max(2, (head_dim // 4) // 2 * 2)
    rest = head_dim - n_t
    n_h = rest // 2 // 2 * 2
    return n_t, n_h, rest - n_h


@dataclass(frozen=True)
class NFDConfig:
    """Architecture of an NFD-style next-frame diffusion transformer.

    A frame is a latent ``[latent_channels, *latent_grid]`` of the frame autoencoder, cut into ``patch_size`` x
    ``patch_size`` patches (one token each, row-major). A window of up to ``context_frames`` frames is one sequence;
    attention is bidirectional inside a frame and causal across frames.
    """

    hidden_size: int
    intermediate_size: int
    """SwiGLU hidden width (``8/3 * hidden_size`` for the presets: 1024 -> 2730)."""
    num_attention_heads: int
    num_hidden_layers: int
    latent_channels: int = 8
    latent_grid: tuple[int, int] = (9, 9)
    """Latent ``(rows, cols)`` of one frame: ``frame_size`` divided by the autoencoder's downsampling."""
    patch_size: int = 1
    frame_size: tuple[int, int] = (72, 72)
    context_frames: int = 8
    """Frames in one window (training windows and the KV cache); longer rollouts slide."""
    action_domain: str = "crafter"
    fps: float = 5.0
    rope_axes: tuple[int, int, int] | None = None
    """Head-dimension split ``(n_t, n_h, n_w)`` of the 3-D RoPE; ``None``: :func:`default_rope_axes`."""
    rope_theta: float = 256.0
    """RoPE base of every axis (HunyuanVideo's ``rope_theta``)."""
    qk_norm: bool = True
    """RMSNorm on queries and keys (per head) before RoPE: keeps attention logits bounded in long runs."""
    norm_eps: float = 1e-6
    frequency_embedding_size: int = 256
    """Sinusoidal timestep features fed to the timestep MLP (DiT)."""
    context_noise: float = 0.05
    """Flow time ``t_ctx`` of context frames: they enter as ``(1 - t_ctx) z + t_ctx eps`` at training and inference
    (NFD's noise injection into the context, which limits error accumulation)."""
    name: str = "nfd"

    def __post_init__(self) -> None:
        object.__setattr__(self, "latent_grid", tuple(int(v) for v in self.latent_grid))
        object.__setattr__(self, "frame_size", tuple(int(v) for v in self.frame_size))
        if self.rope_axes is None:
            object.__setattr__(self, "rope_axes", default_rope_axes(self.head_dim_unchecked))
        object.__setattr__(self, "rope_axes", tuple(int(v) for v in self.rope_axes))
        positive = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "latent_channels",
                    "patch_size", "context_frames", "frequency_embedding_size")  # fmt: skip
        for field in positive:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{self.name}: {field} must be a positive integer, got {value!r}")
        if self.context_frames < 2:
            raise ConfigError(f"{self.name}: context_frames must be >= 2 (a context frame and a new one)")
        if len(self.latent_grid) != 2 or min(self.latent_grid) <= 0:
            raise ConfigError(f"{self.name}: latent_grid must be two positive ints, got {self.latent_grid}")
        if len(self.frame_size) != 2 or min(self.frame_size) <= 0:
            raise ConfigError(f"{self.name}: frame_size must be two positive ints (H, W), got {self.frame_size}")
        if self.latent_grid[0] % self.patch_size or self.latent_grid[1] % self.patch_size:
            raise ConfigError(
                f"{self.name}: latent_grid {self.latent_grid} is not divisible by patch_size {self.patch_size}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{self.name}: hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        axes = self.rope_axes
        if len(axes) != 3 or any(a <= 0 or a % 2 for a in axes) or sum(axes) != self.head_dim:
            raise ConfigError(
                f"{self.name}: rope_axes {axes} must be three positive even numbers summing to head_dim "
                f"{self.head_dim}"
            )
        if not self.rope_theta > 0 or not self.norm_eps > 0 or not self.fps > 0:
            raise ConfigError(f"{self.name}: rope_theta, norm_eps and fps must be positive")
        if not 0.0 <= self.context_noise < 1.0:
            raise ConfigError(f"{self.name}: context_noise must lie in [0, 1), got {self.context_noise}")
        self.domain  # noqa: B018  (raises for an unknown domain)

    # --- derived layout ----------------------------------------------------------------------------------------

    @property
    def head_dim_unchecked(self) -> int:
        return self.hidden_size // max(1, self.num_attention_heads)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def domain(self) -> ActionDomain:
        """The :class:`worldmodels.actions.ActionDomain` of ``action_domain``."""
        try:
            return get_domain(self.action_domain)
        except ActionError as err:
            raise ConfigError(f"{self.name}: {err}") from None

    @property
    def action_nvec(self) -> tuple[int, ...]:
        """Choices per compact action slot: ``(17,)`` for Crafter, MineWorld's 9 slots for Minecraft."""
        import numpy as np

        space = self.domain.compact_space
        return tuple(int(n) for n in np.atleast_1d(getattr(space, "nvec", getattr(space, "n", None))))

    @property
    def token_grid(self) -> tuple[int, int]:
        """Tokens per frame as ``(rows, cols)``."""
        return self.latent_grid[0] // self.patch_size, self.latent_grid[1] // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.token_grid[0] * self.token_grid[1]

    @property
    def patch_dim(self) -> int:
        return self.latent_channels * self.patch_size**2

    @property
    def downsample(self) -> int:
        return self.frame_size[0] // self.latent_grid[0]

    # --- (de)serialisation -------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("latent_grid", "frame_size", "rope_axes"):
            out[key] = list(getattr(self, key))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NFDConfig:
        """Build from :meth:`to_dict` output; unknown or missing keys raise ConfigError."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"unknown NFDConfig fields {unknown}; valid fields: {sorted(fields)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = sorted(name for name in required if name not in data)
        if missing:
            raise ConfigError(f"NFDConfig is missing required fields {missing}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _minecraft(name: str, hidden: int, intermediate: int, heads: int, layers: int) -> NFDConfig:
    # 224x384 frames (MineWorld's), an 8x-downsampling 16-channel autoencoder (28x48 latents) and 2x2 patches:
    # 14x24 = 336 tokens per frame, MineWorld's token count; 16 frames of context (MineWorld's 16f models).
    return NFDConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_attention_heads=heads, num_hidden_layers=layers,
        latent_channels=16, latent_grid=(28, 48), patch_size=2, frame_size=(224, 384), context_frames=16,
        action_domain="minecraft", fps=20.0, name=name,
    )  # fmt: skip


PRESETS: dict[str, NFDConfig] = {
    "nfd-310m": _minecraft("nfd-310m", 1024, 2730, 16, 16),
    "nfd-774m": _minecraft("nfd-774m", 1536, 4096, 24, 18),
    # The recommended Crafter model for the CPU: 72x72 frames -> 9x9x8 latents (one token per 8x8 Crafter tile).
    "nfd-crafter-small": NFDConfig(
        hidden_size=192, intermediate_size=512, num_attention_heads=3, num_hidden_layers=4, latent_channels=8,
        latent_grid=(9, 9), frame_size=(72, 72), context_frames=8, action_domain="crafter", fps=5.0,
        name="nfd-crafter-small",
    ),  # fmt: skip
    # For tests: 16x16 frames, 4x4x4 latents, Crafter actions, 4 frames of context.
    "nfd-tiny": NFDConfig(
        hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2, latent_channels=4,
        latent_grid=(4, 4), frame_size=(16, 16), context_frames=4, action_domain="crafter", fps=5.0,
        name="nfd-tiny",
    ),  # fmt: skip
}
"""RLIR's two NFD sizes (Minecraft layout), the recommended small Crafter model and a tiny one for tests."""


def get_preset(name: str) -> NFDConfig:
    """A preset by name (``"nfd-310m"``, ``"nfd-774m"``, ``"nfd-crafter-small"``, ``"nfd-tiny"``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown NFD preset {name!r}; known presets: {sorted(PRESETS)}") from None
