"""A small inverse dynamics model (IDM) for Crafter: reads the 17 discrete actions back from a video.

At the recorded size of 72 px every Crafter cell is exactly 8 x 8 pixels on a 9 x 9 grid (7 rows of world view, 2 of
inventory), and every action acts on cells: a move shifts the whole view by one cell (or only turns the player sprite
when blocked), ``do`` changes the faced cell and an inventory cell, placing changes a cell and the inventory, crafting
changes the inventory, sleeping darkens the view. So the model first embeds every cell of every frame, then compares
the cells of consecutive frames with small convolutions over the grid, and finally lets neighbouring transitions share
evidence::

    x = frames / 255 - 1/2                                          # [B, T+1, H, W, 3]
    cells = GELU(Conv2d(3 -> C, kernel = stride = cell))(x)         # per frame: [C, H/cell, W/cell]
    pair = cat(cells[t], cells[t+1], cells[t+1] - cells[t])        # per transition: [3C, gh, gw]
    pair = GELU(Conv3x3(3C -> W)), GELU(Conv3x3(W -> W)), Conv1x1(W -> F)   # a one-cell shift is a 3x3 pattern
    e = GELU(Linear(flatten(pair)))                                 # [B, T, E]: where on the grid matters
    depth x: e = e + Conv1d_1(GELU(Conv1d_k(LayerNorm(e))))         # non-causal, 'same' zero padding over T
    logits = Linear(LayerNorm(e))                                   # [B, T, 17]

Prediction ``t`` is the action taken at frame ``t`` that led to frame ``t + 1``. Everything over time is a
convolution with zero padding, so the model is translation-equivariant in time: a video of any length is labelled in
one pass, and each prediction sees ``depth * (k - 1) / 2`` transitions on each side (zeros beyond the video's ends,
exactly as at the edges of the training windows). Longer inputs are therefore not cut into windows; ``window`` in the
config is the training window only. With ``depth=0`` a prediction depends on its own two frames alone, so it carries
no prior from how the recorded behaviour policy repeats actions; on the recorded data it was as accurate as
``depth=2`` (see ``evaluation.idm.train``).

Many actions have no visible effect in some states (``do`` facing grass, a ``make`` without a table, any action while
asleep), so the accuracy ceiling of any IDM is well below 100 %.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldmodels.actions.crafter import N_ACTIONS
from worldmodels.errors import CheckpointError, ConfigError, FrameError, IntegrityError, MissingFileError
from worldmodels.hashing import sha256_file
from worldmodels.runtime.files import atomic_output
from worldmodels.weights import save_safetensors_file

__all__ = ["CHECKPOINT_FORMAT", "CrafterIDM", "CrafterIDMConfig", "most_likely_actions"]

CHECKPOINT_FORMAT = "rlir-crafter-idm"
CHECKPOINT_VERSION = 1


def most_likely_actions(logits: torch.Tensor) -> np.ndarray:
    """``int64[B, T]`` compact Crafter actions, the arg-max of :meth:`CrafterIDM.logits` (what ``predict_actions``
    returns; for callers that also need the probabilities of the same forward)."""
    return logits.argmax(dim=-1).cpu().numpy().astype(np.int64)


@dataclass(frozen=True)
class CrafterIDMConfig:
    """Architecture of a :class:`CrafterIDM`.

    Args:
        width: Channels of the convolutions that compare the cells of two frames.
        depth: Residual temporal blocks over the transitions (0: every transition on its own).
        frame_size: ``(height, width)`` of the frames in pixels; both must be multiples of ``cell``.
        window: Transitions per training window (inference takes any length).
        cell: Side in pixels of the patches each frame is cut into (8 = one Crafter cell at 72 px).
        cell_channels: Channels of each cell's embedding.
        flat_channels: Channels per grid position kept before flattening the grid.
        embed: Size of the per-transition embedding (default ``2 * width``).
        temporal_kernel: Odd kernel size of the temporal convolutions.
    """

    width: int = 48
    depth: int = 2
    frame_size: tuple[int, int] = (72, 72)
    window: int = 16
    cell: int = 8
    cell_channels: int = 32
    flat_channels: int = 8
    embed: int | None = None
    temporal_kernel: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_size", tuple(self.frame_size))
        for name in ("width", "window", "cell", "cell_channels", "flat_channels", "temporal_kernel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"CrafterIDMConfig.{name} must be a positive integer, got {value!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 0:
            raise ConfigError(f"CrafterIDMConfig.depth must be a non-negative integer, got {self.depth!r}")
        bad_embed = isinstance(self.embed, bool) or not isinstance(self.embed, int) or self.embed < 1
        if self.embed is not None and bad_embed:
            raise ConfigError(f"CrafterIDMConfig.embed must be a positive integer or None, got {self.embed!r}")
        if self.temporal_kernel % 2 == 0:
            raise ConfigError(f"CrafterIDMConfig.temporal_kernel must be odd (centred), got {self.temporal_kernel}")
        if len(self.frame_size) != 2 or any(
            isinstance(s, bool) or not isinstance(s, int) or s < self.cell or s % self.cell for s in self.frame_size
        ):
            raise ConfigError(
                f"CrafterIDMConfig.frame_size={self.frame_size!r} must be (height, width) multiples of cell="
                f"{self.cell}; record Crafter at size 72 with cell 8 (or e.g. 36 with cell 4)"
            )

    @property
    def embed_size(self) -> int:
        return self.embed if self.embed is not None else 2 * self.width

    @property
    def grid(self) -> tuple[int, int]:
        """``(rows, columns)`` of cells per frame."""
        return self.frame_size[0] // self.cell, self.frame_size[1] // self.cell

    @property
    def receptive_field(self) -> int:
        """Transitions each prediction sees on each side."""
        return self.depth * (self.temporal_kernel - 1) // 2

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "frame_size": list(self.frame_size)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> CrafterIDMConfig:
        """Inverse of :meth:`to_json`; unknown keys raise ConfigError."""
        if not isinstance(value, Mapping):
            raise ConfigError(f"a CrafterIDMConfig must be a JSON object, got {type(value).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"unknown CrafterIDMConfig keys {unknown}; known: {sorted(known)}")
        kwargs = dict(value)
        if "frame_size" in kwargs and isinstance(kwargs["frame_size"], list):
            kwargs["frame_size"] = tuple(kwargs["frame_size"])
        return cls(**kwargs)


class _TemporalBlock(nn.Module):
    """Pre-norm residual block over time: ``x + Conv1d_1(GELU(Conv1d_k(LayerNorm(x))))``."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mix = nn.Conv1d(channels, channels, kernel, padding=kernel // 2)
        self.out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, E]
        h = self.norm(x).transpose(1, 2)
        return x + self.out(F.gelu(self.mix(h))).transpose(1, 2)


class CrafterIDM(nn.Module):
    """Crafter inverse dynamics model (see the module docstring for the architecture).

    Implements :class:`~evaluation.idm.base.InverseDynamicsModel` for the ``"crafter"`` domain. The inference
    methods (:meth:`logits`, :meth:`log_probs`, :meth:`predict_actions`) take ``uint8[B, T+1, H, W, 3]`` RGB frames
    (numpy or torch) of exactly ``config.frame_size`` and return one result per transition, ``[B, T, ...]``; they
    run in eval mode without gradients, ``max_batch`` videos per forward pass. :meth:`forward` is the differentiable
    training entry.

    Args:
        config: The architecture.
        name: Identifier for reports and leaderboard rows.
    """

    domain = "crafter"
    context_frames = 1  # prediction k reads frames k -> k + 1, so the evaluator puts one real frame first

    def __init__(self, config: CrafterIDMConfig | None = None, *, name: str = "crafter-idm") -> None:
        super().__init__()
        self.config = config if config is not None else CrafterIDMConfig()
        self.name = name
        self.sha256: str | None = None
        """sha256 of the safetensors file this model was loaded from or last saved to; ``None`` otherwise."""
        self.summary: dict[str, Any] = {}
        """The training summary stored with the weights (empty for a fresh model)."""
        self.max_batch = 64
        cfg = self.config
        rows, cols = cfg.grid
        self.cells = nn.Conv2d(3, cfg.cell_channels, cfg.cell, stride=cfg.cell)
        self.compare = nn.Sequential(
            nn.Conv2d(3 * cfg.cell_channels, cfg.width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(cfg.width, cfg.width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(cfg.width, cfg.flat_channels, 1),
        )
        self.project = nn.Linear(cfg.flat_channels * rows * cols, cfg.embed_size)
        self.blocks = nn.ModuleList(_TemporalBlock(cfg.embed_size, cfg.temporal_kernel) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_size)
        self.head = nn.Linear(cfg.embed_size, N_ACTIONS)

    # -- model ---------------------------------------------------------------------------------------------------

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Logits ``float32[B, T, 17]`` of ``uint8`` (or float in ``[0, 255]``) frames ``[B, T+1, H, W, 3]``,
        already on the model's device and checked; use :meth:`logits` for unchecked input."""
        batch, n_frames = frames.shape[:2]
        x = frames.flatten(0, 1).permute(0, 3, 1, 2).to(torch.float32) * (1.0 / 255.0) - 0.5
        cells = F.gelu(self.cells(x)).unflatten(0, (batch, n_frames))  # [B, T+1, C, rows, cols]
        before, after = cells[:, :-1], cells[:, 1:]
        pair = torch.cat([before, after, after - before], dim=2).flatten(0, 1)
        e = F.gelu(self.project(self.compare(pair).flatten(1))).unflatten(0, (batch, n_frames - 1))
        for block in self.blocks:
            e = block(e)
        return self.head(self.norm(e))

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- inference -----------------------------------------------------------------------------------------------

    def check_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Validate ``uint8[B, T+1, H, W, 3]`` frames and return them as a tensor on the model's device.

        Raises:
            FrameError: not an array/tensor, not uint8, the wrong rank, fewer than 2 frames, or a frame size other
                than ``config.frame_size``.
        """
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        if not isinstance(frames, torch.Tensor):
            raise FrameError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise FrameError(
                f"frames must be uint8 RGB in [0, 255], got {frames.dtype}; scale floats in [0, 1] by 255 and cast"
            )
        height, width = self.config.frame_size
        if frames.ndim != 5 or tuple(frames.shape[2:]) != (height, width, 3):
            raise FrameError(
                f"frames must have shape [B, T+1, {height}, {width}, 3] (this IDM was built for {height}x{width} "
                f"RGB frames), got {tuple(frames.shape)}; add a batch axis with frames[None] for one video and "
                f"record/generate at {height}x{width}"
            )
        if frames.shape[0] < 1 or frames.shape[1] < 2:
            raise FrameError(
                f"frames must hold at least one video of at least 2 frames (one transition), got {tuple(frames.shape)}"
            )
        return frames.to(self.device)

    @torch.no_grad()
    def logits(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Unnormalised scores ``float32[B, T, 17]`` for the ``T`` transitions of ``uint8[B, T+1, H, W, 3]`` frames:
        row ``t`` scores the action taken at frame ``t`` that led to frame ``t + 1``."""
        frames = self.check_frames(frames)
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self(frames[i : i + self.max_batch]) for i in range(0, len(frames), self.max_batch)])
        finally:
            self.train(was_training)

    def log_probs(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``float32[B, T, 17]`` over the 17 actions, per transition (see :meth:`logits`)."""
        return torch.log_softmax(self.logits(frames), dim=-1)

    def predict_actions(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """Most likely action per transition: ``int64[B, T]`` compact Crafter actions for ``T + 1`` frames."""
        return most_likely_actions(self.logits(frames))

    # -- files ---------------------------------------------------------------------------------------------------

    def save(self, path: str | Path, *, summary: Mapping[str, Any] | None = None) -> str:
        """Write the weights as safetensors with the config, name and ``summary`` (JSON) in the metadata.

        Returns the file's sha256, which also becomes :attr:`sha256`.
        """
        path = Path(path)
        metadata = {
            "format": CHECKPOINT_FORMAT,
            "version": str(CHECKPOINT_VERSION),
            "name": self.name,
            "config": json.dumps(self.config.to_json(), sort_keys=True),
            "summary": json.dumps(dict(summary or {}), sort_keys=True, allow_nan=False),
        }
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        with atomic_output(path) as tmp:
            save_safetensors_file(state, tmp, metadata)
        self.sha256 = sha256_file(path)
        return self.sha256

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        expected_sha256: str | None = None,
        name: str | None = None,
    ) -> CrafterIDM:
        """Load a file written by :meth:`save`.

        Args:
            path: The safetensors file.
            device: Where to run.
            expected_sha256: If given, the file's sha256 must equal it (checked before anything is parsed).
            name: Report name (default: the name stored in the file).

        Raises:
            MissingFileError: no such file.
            IntegrityError: the sha256 differs from ``expected_sha256``.
            CheckpointError: not a Crafter IDM file, a bad config, or tensors whose names or shapes differ from
                the architecture its config describes (the message lists the differences).
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"Crafter IDM weights {str(path)!r} do not exist; train them with `rlir train idm`")
        digest = sha256_file(path)
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise IntegrityError(
                f"{path} has sha256 {digest}, expected {expected_sha256}; the file is corrupted or not the pinned "
                "IDM, restore it or update the pin"
            )
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file ({e}); re-save or re-train it") from e
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path} is not a Crafter IDM checkpoint (metadata format {metadata.get('format')!r}, expected "
                f"{CHECKPOINT_FORMAT!r}); load it with the loader of the model that wrote it"
            )
        if metadata.get("version") != str(CHECKPOINT_VERSION):
            raise CheckpointError(f"{path}: checkpoint version {metadata.get('version')!r} is not supported "
                                  f"(expected {CHECKPOINT_VERSION})")  # fmt: skip
        try:
            config = CrafterIDMConfig.from_json(json.loads(metadata.get("config", "null")))
            summary = json.loads(metadata.get("summary", "{}"))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: the stored config or summary is invalid ({e}); re-save the model") from e
        with torch.device("meta"):
            model = cls(config, name=name or metadata.get("name") or path.stem)
        _check_state(state, model.state_dict(), str(path))
        model.load_state_dict({k: v.to(device=device, dtype=torch.float32) for k, v in state.items()},
                              strict=True, assign=True)  # fmt: skip
        model.sha256 = digest
        model.summary = summary
        return model.eval()


def _check_state(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    not_float = sorted(f"{k}: {state[k].dtype}" for k in state if not state[k].is_floating_point())
    if missing or unexpected or misshaped or not_float:
        lines = [f"{source} does not match the Crafter IDM its config describes:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped),
                             ("not floating point", not_float)):  # fmt: skip
            if items:
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:20])
                             + (f", ... and {len(items) - 20} more" if len(items) > 20 else ""))  # fmt: skip
        lines.append("  The file was edited or written by different code; re-train or re-save it.")
        raise CheckpointError("\n".join(lines))

