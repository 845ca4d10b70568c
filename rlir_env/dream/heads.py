"""Learned reward and termination heads for Crafter, read from frames alone.

Crafter's reward (``crafter/env.py``, ``Env.step``) is ``(health_t - health_{t-1}) / 10``, plus ``1.0`` on a step
where at least one achievement is unlocked for the first time in the episode (one bonus however many unlock at once).
An episode ends in death when health reaches 0 (``discount == 0``). Everything the reward needs is visible in the
frames: the inventory rows show the health count (the heart disappears at 0, ``engine.ItemView`` skips empty
slots), and every achievement leaves a trace in the inventory or the view (an item count rises, a table appears, a
zombie vanishes, the sleeping view brightens). So :class:`CrafterHeads` has two heads over one cell encoder::

    x = frames / 255 - 1/2                                             # [B, H, W, 3], H = W = 9 * cell
    cells = GELU(Conv1x1(GELU(Conv2d(3 -> C, kernel = stride = cell))(x)))   # one vector per 8x8 Crafter tile
    health_logits = Linear(GELU(Linear(flatten(Conv1x1(C -> 4)(cells)))))     # [B, 10]: health 0..9 of one frame
    pair = cat(cells_prev, cells, cells - cells_prev)                  # [B, 3C, 9, 9]
    pair = Conv1x1(GELU(Conv3x3(GELU(Conv3x3(pair)))))                 # a one-tile shift is a 3x3 pattern
    unlock_logits = Linear(GELU(Linear(flatten(pair))))                # [B, 22]: achievement k happens in prev -> cur

The unlock head is an *event* detector: it is trained, for each achievement, only on the transitions before that
achievement's first unlock in the episode (after it, the recorded label is 0 whatever happens, because Crafter
rewards an achievement once). :class:`CrafterReward` supplies the missing memory: it keeps, per environment, the
achievements it has already credited and pays the bonus only for new ones, exactly as Crafter does. The health
change is paid between confident readings only (:func:`track_health`). Termination is
``P(health = 0 | frame) > death_threshold``: in the recordings health is 0 on exactly the terminal frames.

A world model draws every frame with its VQ decoder, which blurs the small health digits; heads trained on real
pixels alone misread them (:mod:`rlir.agents.reward_heads` therefore also trains on frames passed through the world
model's tokenizer, ``--tokenizer``). The bundled heads (:data:`BUNDLED_HEADS`, summary in ``crafter_heads.json``)
were trained that way on the embedded recordings with the embedded tokenizer.

The heads file is safetensors with the config, the two decision thresholds (chosen on validation episodes) and the
training summary in its metadata.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldmodels.errors import CheckpointError, ConfigError, FrameError, MissingFileError
from worldmodels.hashing import sha256_file
from worldmodels.runtime.files import atomic_output
from worldmodels.weights import save_safetensors_file

__all__ = [
    "BUNDLED_HEADS",
    "CHECKPOINT_FORMAT",
    "HEALTH_LEVELS",
    "N_ACHIEVEMENTS",
    "CrafterDeath",
    "CrafterHeads",
    "CrafterHeadsConfig",
    "CrafterReward",
    "DEFAULT_HEALTH_CONFIDENCE",
    "load_heads",
    "resolve_heads_path",
    "track_health",
]

CHECKPOINT_FORMAT = "rlir-crafter-heads"
CHECKPOINT_VERSION = 1
HEALTH_LEVELS = 10
"""Crafter's health takes the values 0..9 (``data.yaml``: max 9)."""
N_ACHIEVEMENTS = 22
"""Crafter's achievements, in ``rlir_env.crafter.ACHIEVEMENTS`` order (the recorded ``achievements`` columns)."""
DEFAULT_HEALTH_CONFIDENCE = 0.9
"""Health is read from a frame only above this probability. On held-out frames passed through the embedded
tokenizer, the health-reward MAE was 0.0226 reading every frame's most probable value, and 0.0098 / 0.0069 / 0.0066 /
0.0066 reading only above 0.6 / 0.8 / 0.9 / 0.95."""
BUNDLED_HEADS = Path(str(resources.files("rlir_env.dream") / "crafter_heads.safetensors"))
"""Heads trained on the embedded recordings (``rlir train reward-head``), used when no ``heads`` path is given."""


@dataclass(frozen=True)
class CrafterHeadsConfig:
    """Architecture of :class:`CrafterHeads`.

    Args:
        frame_size: ``(height, width)`` of the frames; both ``grid * cell`` (72 = 9 x 8 for the bundled world model).
        grid: Crafter's view in tiles ``(rows, columns)`` (9 x 9: 7 rows of world, 2 of inventory).
        cell_channels: Channels of each tile's embedding.
        width: Channels of the convolutions comparing two frames.
        flat_channels: Channels per tile kept before flattening the compared grid.
        hidden: Width of the unlock head's hidden layer.
        health_channels: Channels per tile kept for the health head.
        health_hidden: Width of the health head's hidden layer.
    """

    frame_size: tuple[int, int] = (72, 72)
    grid: tuple[int, int] = (9, 9)
    cell_channels: int = 32
    width: int = 48
    flat_channels: int = 8
    hidden: int = 128
    health_channels: int = 4
    health_hidden: int = 64

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_size", tuple(self.frame_size))
        object.__setattr__(self, "grid", tuple(self.grid))
        for name in ("cell_channels", "width", "flat_channels", "hidden", "health_channels", "health_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"CrafterHeadsConfig.{name} must be a positive integer, got {value!r}")
        ok = len(self.frame_size) == 2 and len(self.grid) == 2 and all(
            isinstance(s, int) and isinstance(g, int) and g >= 1 and s >= g and s % g == 0
            for s, g in zip(self.frame_size, self.grid)
        )  # fmt: skip
        if not ok or self.frame_size[0] // self.grid[0] != self.frame_size[1] // self.grid[1]:
            raise ConfigError(
                f"CrafterHeadsConfig.frame_size={self.frame_size!r} must be grid={self.grid!r} times one square cell "
                "size (72 x 72 for 8-pixel Crafter tiles, 36 x 36 for 4-pixel ones)"
            )

    @property
    def cell(self) -> int:
        """Side of one Crafter tile in pixels."""
        return self.frame_size[0] // self.grid[0]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "frame_size": list(self.frame_size), "grid": list(self.grid)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> CrafterHeadsConfig:
        """Inverse of :meth:`to_json`; unknown keys raise ConfigError."""
        if not isinstance(value, Mapping):
            raise ConfigError(f"a CrafterHeadsConfig must be a JSON object, got {type(value).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"unknown CrafterHeadsConfig keys {unknown}; known: {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})


class CrafterHeads(nn.Module):
    """Crafter's reward and death read from frames (see the module docstring for the architecture).

    :meth:`forward` is the differentiable training entry on tensors; :meth:`predict` is the checked, gradient-free
    inference entry on ``uint8`` numpy or torch frames.

    Args:
        config: The architecture.
        unlock_threshold: An achievement counts as unlocked when its probability exceeds this.
        death_threshold: A frame counts as death when ``P(health = 0)`` exceeds this.
        health_confidence: A frame's health is read only when its most probable value exceeds this
            (:func:`track_health`).
    """

    def __init__(
        self,
        config: CrafterHeadsConfig | None = None,
        *,
        unlock_threshold: float = 0.5,
        death_threshold: float = 0.5,
        health_confidence: float = DEFAULT_HEALTH_CONFIDENCE,
    ) -> None:
        super().__init__()
        self.config = config if config is not None else CrafterHeadsConfig()
        self.unlock_threshold = float(unlock_threshold)
        self.death_threshold = float(death_threshold)
        self.health_confidence = float(health_confidence)
        self.summary: dict[str, Any] = {}
        """The training summary stored with the weights (empty for a fresh model)."""
        self.sha256: str | None = None
        """sha256 of the file the heads were loaded from or last saved to."""
        cfg = self.config
        rows, cols = cfg.grid
        self.cells = nn.Conv2d(3, cfg.cell_channels, cfg.cell, stride=cfg.cell)
        self.cells_mix = nn.Conv2d(cfg.cell_channels, cfg.cell_channels, 1)
        self.health_reduce = nn.Conv2d(cfg.cell_channels, cfg.health_channels, 1)
        self.health_hidden = nn.Linear(cfg.health_channels * rows * cols, cfg.health_hidden)
        self.health_out = nn.Linear(cfg.health_hidden, HEALTH_LEVELS)
        self.compare = nn.Sequential(
            nn.Conv2d(3 * cfg.cell_channels, cfg.width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(cfg.width, cfg.width, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(cfg.width, cfg.flat_channels, 1),
        )
        self.unlock_hidden = nn.Linear(cfg.flat_channels * rows * cols, cfg.hidden)
        self.unlock_out = nn.Linear(cfg.hidden, N_ACHIEVEMENTS)

    @property
    def device(self) -> torch.device:
        return self.cells.weight.device

    # -- model ---------------------------------------------------------------------------------------------------

    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Tile embeddings ``[B, C, rows, cols]`` of ``uint8`` (or float in [0, 255]) frames ``[B, H, W, 3]``."""
        x = frames.permute(0, 3, 1, 2).to(torch.float32) * (1.0 / 255.0) - 0.5
        return F.gelu(self.cells_mix(F.gelu(self.cells(x))))

    def health_logits(self, cells: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 10]`` over health 0..9 from tile embeddings."""
        return self.health_out(F.gelu(self.health_hidden(self.health_reduce(cells).flatten(1))))

    def unlock_logits(self, prev_cells: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, 22]`` that each achievement happens between two frames, from their tile embeddings."""
        pair = torch.cat([prev_cells, cells, cells - prev_cells], dim=1)
        return self.unlock_out(F.gelu(self.unlock_hidden(self.compare(pair).flatten(1))))

    def forward(
        self, prev_frames: torch.Tensor, frames: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(unlock_logits [B, 22], prev_health_logits [B, 10], health_logits [B, 10])`` of frame pairs."""
        cells = self.encode(torch.cat([prev_frames, frames]))
        prev_cells, cur_cells = cells.chunk(2)
        health = self.health_logits(cells)
        prev_health, cur_health = health.chunk(2)
        return self.unlock_logits(prev_cells, cur_cells), prev_health, cur_health

    # -- inference -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict(self, prev_frames: Any, frames: Any) -> dict[str, np.ndarray]:
        """Probabilities for frame pairs ``uint8[B, H, W, 3]`` (numpy or torch, ``config.frame_size``):

        ``unlock float32[B, 22]`` (each achievement happens in ``prev -> cur``), ``health float32[B, 10]`` and
        ``prev_health float32[B, 10]`` (health 0..9 of each frame).
        """
        prev = self._check_frames(prev_frames, "prev_frames")
        cur = self._check_frames(frames, "frames")
        if prev.shape != cur.shape:
            raise FrameError(f"prev_frames {list(prev.shape)} and frames {list(cur.shape)} must have the same shape")
        was_training = self.training
        self.eval()
        try:
            unlock, prev_health, health = self(prev, cur)
        finally:
            self.train(was_training)
        return {
            "unlock": torch.sigmoid(unlock).cpu().numpy(),
            "health": torch.softmax(health, -1).cpu().numpy(),
            "prev_health": torch.softmax(prev_health, -1).cpu().numpy(),
        }

    @torch.no_grad()
    def predict_health(self, frames: Any) -> np.ndarray:
        """``float32[B, 10]`` probabilities of health 0..9 of single frames ``uint8[B, H, W, 3]``."""
        x = self._check_frames(frames, "frames")
        was_training = self.training
        self.eval()
        try:
            return torch.softmax(self.health_logits(self.encode(x)), -1).cpu().numpy()
        finally:
            self.train(was_training)

    def _check_frames(self, frames: Any, name: str) -> torch.Tensor:
        h, w = self.config.frame_size
        tensor = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
        if tensor.dtype != torch.uint8 or tensor.ndim != 4 or tuple(tensor.shape[1:]) != (h, w, 3):
            raise FrameError(
                f"Crafter heads take {name} as uint8[B, {h}, {w}, 3] RGB frames, got {str(tensor.dtype)}"
                f"{list(tensor.shape)}; make the env at the heads' size ({h} x {w}, e.g. CrafterEnv(size={h}) or "
                "the ResizeFrames wrapper) or train heads at the env's size"
            )
        return tensor.to(self.device)

    # -- files ---------------------------------------------------------------------------------------------------

    def save(self, path: str | Path, *, summary: Mapping[str, Any] | None = None) -> str:
        """Write weights, config, thresholds and ``summary`` (JSON) as safetensors; returns the file's sha256."""
        if summary is not None:
            self.summary = dict(summary)
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ConfigError(f"heads files end in .safetensors, got {path.name!r}")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        metadata = {
            "format": CHECKPOINT_FORMAT,
            "version": str(CHECKPOINT_VERSION),
            "config": json.dumps(self.config.to_json()),
            "unlock_threshold": json.dumps(self.unlock_threshold),
            "death_threshold": json.dumps(self.death_threshold),
            "health_confidence": json.dumps(self.health_confidence),
            "summary": json.dumps(self.summary, allow_nan=False),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            save_safetensors_file(state, tmp, metadata)
        self.sha256 = sha256_file(path)
        return self.sha256

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu") -> CrafterHeads:
        """Read a heads file written by :meth:`save` (no code runs: safetensors + JSON metadata).

        Raises:
            MissingFileError: there is no such file.
            CheckpointError: it is not a heads file, or its weights do not fit its config.
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(
                f"no Crafter heads file at {str(path)!r}; train one with `rlir train reward-head --data DIR --out "
                f"{path.name}` or pass heads=PATH"
            )
        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                metadata = dict(handle.metadata() or {})
                state = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"cannot read Crafter heads file {str(path)!r}: {err}") from None
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path} is not a Crafter heads file (metadata format {metadata.get('format')!r}, expected "
                f"{CHECKPOINT_FORMAT!r}); pass a file written by `rlir train reward-head`"
            )
        if metadata.get("version") != str(CHECKPOINT_VERSION):
            raise CheckpointError(
                f"{path}: heads version {metadata.get('version')!r} is not supported (expected {CHECKPOINT_VERSION})"
            )
        try:
            config = CrafterHeadsConfig.from_json(json.loads(metadata["config"]))
            heads = cls(config, unlock_threshold=json.loads(metadata["unlock_threshold"]),
                        death_threshold=json.loads(metadata["death_threshold"]),
                        health_confidence=json.loads(metadata.get("health_confidence",
                                                                  str(DEFAULT_HEALTH_CONFIDENCE))))  # fmt: skip
            heads.summary = json.loads(metadata.get("summary", "{}"))
        except (KeyError, ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: malformed heads metadata ({err}); re-train or re-save the heads") from None
        try:
            heads.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: weights do not fit the stored config: {err}") from None
        heads.sha256 = sha256_file(path)
        return heads.to(device).eval()


def resolve_heads_path(heads: str | Path | None) -> Path:
    """``heads`` as a path, or the bundled file when ``heads`` is None.

    Raises:
        MissingFileError: ``heads`` is None and no bundled heads ship with this checkout.
    """
    if heads is not None:
        return Path(heads)
    if not BUNDLED_HEADS.is_file():
        raise MissingFileError(
            f"no bundled Crafter heads at {BUNDLED_HEADS}; train them with `rlir train reward-head --data DIR --out "
            f"{BUNDLED_HEADS}` or pass heads=PATH"
        )
    return BUNDLED_HEADS


def load_heads(heads: str | Path | CrafterHeads | None, *, device: str | torch.device = "cpu") -> CrafterHeads:
    """A :class:`CrafterHeads` from a path, an already built instance, or None (the bundled heads)."""
    if isinstance(heads, CrafterHeads):
        return heads
    return CrafterHeads.load(resolve_heads_path(heads), device=device)


# -- frame functions for the wrappers ------------------------------------------------------------------------------


def track_health(
    tracked: np.ndarray, prev_probs: np.ndarray, probs: np.ndarray, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    """One step of confident health reading for a batch: ``(health change int64[B], new tracked int64[B])``.

    ``tracked`` is each environment's last confident health reading (-1: none yet). A frame is read only when its
    most probable health has probability above ``confidence``; the change is paid from the last confident reading
    to the new one. Until an episode has a confident reading (of its previous or its current frame) nothing is paid.
    Frames drawn by a world model's VQ decoder blur some health digits (5, 6 and 9 look alike), and paying every
    flip of the most probable value would turn that blur into rewards of +-0.1.
    """
    tracked = np.array(tracked, dtype=np.int64, copy=True)
    prev_reading, prev_sure = prev_probs.argmax(-1), prev_probs.max(-1) > confidence
    start = (tracked < 0) & prev_sure
    tracked[start] = prev_reading[start]
    reading, sure = probs.argmax(-1), probs.max(-1) > confidence
    change = np.where(sure & (tracked >= 0), reading - tracked, 0)
    return change.astype(np.int64), np.where(sure, reading, tracked)


class CrafterReward:
    """Crafter's reward predicted from frame pairs: a frame function for :class:`~rlir_env.dream.wrappers.FrameReward`.

    ``reward = 1[an achievement not yet credited in this episode is detected] + health change / 10``, the health
    change read confidently (:func:`track_health`, ``heads.health_confidence``). It remembers, per environment,
    which achievements it has credited (``credited bool[B, 22]``) and the last confident health reading
    (``health int64[B]``) until :meth:`reset` starts that environment's next episode.
    """

    def __init__(self, heads: CrafterHeads):
        self.heads = heads
        self.frame_size = heads.config.frame_size
        self.credited: np.ndarray | None = None
        """``bool[B, 22]``: achievements credited so far in each environment's episode."""
        self.health: np.ndarray | None = None
        """``int64[B]``: each environment's last confident health reading (-1: none yet this episode)."""
        self.last: dict[str, np.ndarray] = {}
        """What the last call saw: ``unlocked bool[B, 22]`` (newly credited) and ``health_change int64[B]``."""

    def __call__(self, frames: np.ndarray, prev_frames: np.ndarray) -> np.ndarray:
        out = self.heads.predict(prev_frames, frames)
        n = len(frames)
        if self.credited is None or len(self.credited) != n:
            self.credited = np.zeros((n, N_ACHIEVEMENTS), dtype=bool)
            self.health = np.full(n, -1, dtype=np.int64)
        detected = out["unlock"] > self.heads.unlock_threshold
        new = detected & ~self.credited
        self.credited |= new
        change, self.health = track_health(self.health, out["prev_health"], out["health"],
                                           self.heads.health_confidence)  # fmt: skip
        self.last = {"unlocked": new, "health_change": change}
        return new.any(-1).astype(np.float64) + change / 10.0

    def reset(self, env_ids: Sequence[int] | np.ndarray) -> None:
        """Forget what was credited and read in these environments (their new episodes start)."""
        if self.credited is not None:
            ids = np.asarray(env_ids, dtype=np.int64)
            self.credited[ids] = False
            self.health[ids] = -1


class CrafterDeath:
    """Crafter's death predicted from single frames: ``P(health = 0) > death_threshold``; a frame function for
    :class:`~rlir_env.dream.wrappers.FrameTermination` (the previous frame is not needed)."""

    def __init__(self, heads: CrafterHeads):
        self.heads = heads
        self.frame_size = heads.config.frame_size

    def __call__(self, frames: np.ndarray, prev_frames: np.ndarray | None = None) -> np.ndarray:
        return self.heads.predict_health(frames)[:, 0] > self.heads.death_threshold
