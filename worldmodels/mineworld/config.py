"""MineWorld architecture configuration: the official yaml files, presets, and the token layout they imply.

The official configs (``microsoft/mineworld: configs/*.yaml``) hold only the Llama fields under
``model.params.transformer_config.params``; the frame size, token grid and action layout are constants of the
official code (224x384 frames, 14x24 VQ grid, 11 action tokens offset by 8192). Here they are explicit fields so the
same code runs other games (e.g. Crafter: a different frame size, grid and action domain).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worldmodels.actions import ActionDomain, get_domain
from worldmodels.errors import ActionError, ConfigError, MissingFileError

# LlamaConfig defaults that the official code relies on when a yaml omits the field (transformers 4.48.1).
_LLAMA_DEFAULTS = {"rope_theta": 10000.0, "rms_norm_eps": 1e-6}
# Our layout fields may sit next to the Llama fields of a yaml (the official code passes them to LlamaConfig,
# which keeps unknown keys as inert attributes); absent, they take the official constants.
_LAYOUT_FIELDS = ("image_grid", "frame_size", "image_vocab_size", "action_domain", "fps")
_REQUIRED_YAML_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "num_hidden_layers",
    "max_position_embeddings",
    "vocab_size",
)


@dataclass(frozen=True)
class MineWorldConfig:
    """Architecture of a MineWorld-style autoregressive world model (Llama over VQ image and action tokens).

    The sequence is ``[frame_0 tokens] [action_1 tokens] [frame_1 tokens] [action_2 tokens] ...`` with
    consecutive positions; image ids are ``0..image_vocab_size-1`` and action ids are the action domain's local
    ids offset by ``image_vocab_size``.
    """

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    num_hidden_layers: int
    max_position_embeddings: int
    vocab_size: int = 8262
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    image_grid: tuple[int, int] = (14, 24)
    """VQ token grid ``(rows, columns)``; tokens are flattened row-major."""
    image_vocab_size: int = 8192
    """VQ codebook size; also the offset of the action token ids."""
    frame_size: tuple[int, int] = (224, 384)
    """Native frame ``(height, width)``."""
    action_domain: str = "minecraft"
    fps: float = 20.0
    name: str = "mineworld"

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_grid", tuple(int(v) for v in self.image_grid))
        object.__setattr__(self, "frame_size", tuple(int(v) for v in self.frame_size))
        positive = (
            "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "num_hidden_layers",
            "max_position_embeddings", "vocab_size", "image_vocab_size",
        )  # fmt: skip
        for field in positive:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{self.name}: {field} must be a positive integer, got {value!r}")
        if len(self.image_grid) != 2 or min(self.image_grid) <= 0:
            raise ConfigError(f"{self.name}: image_grid must be two positive ints (rows, cols), got {self.image_grid}")
        if len(self.frame_size) != 2 or min(self.frame_size) <= 0:
            raise ConfigError(f"{self.name}: frame_size must be two positive ints (H, W), got {self.frame_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{self.name}: hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"{self.name}: num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"{self.name}: head_dim {self.head_dim} must be even for rotary embeddings")
        if self.rope_theta <= 0 or self.rms_norm_eps <= 0:
            raise ConfigError(f"{self.name}: rope_theta and rms_norm_eps must be positive")
        if self.fps <= 0:
            raise ConfigError(f"{self.name}: fps must be positive, got {self.fps}")
        h, w = self.image_grid
        if self.frame_size[0] % h or self.frame_size[1] % w or self.frame_size[0] // h != self.frame_size[1] // w:
            raise ConfigError(
                f"{self.name}: frame_size {self.frame_size} is not an equal integer multiple of image_grid "
                f"{self.image_grid} (the VQ tokenizer downsamples both axes by the same factor)"
            )
        domain = self.domain  # raises for an unknown domain
        needed = self.image_vocab_size + domain.action_vocab_size
        if self.vocab_size < needed:
            raise ConfigError(
                f"{self.name}: vocab_size {self.vocab_size} is too small for {self.image_vocab_size} image ids plus "
                f"{domain.action_vocab_size} {self.action_domain!r} action ids (needs >= {needed})"
            )
        if self.max_position_embeddings < 2 * self.tokens_per_frame + self.tokens_per_action:
            raise ConfigError(
                f"{self.name}: max_position_embeddings {self.max_position_embeddings} cannot hold even one frame, "
                f"one action and one generated frame ({2 * self.tokens_per_frame + self.tokens_per_action} tokens)"
            )

    # --- derived layout --------------------------------------------------------------------------------------

    @property
    def domain(self) -> ActionDomain:
        """The :class:`worldmodels.actions.ActionDomain` of ``action_domain``."""
        try:
            return get_domain(self.action_domain)
        except ActionError as err:
            raise ConfigError(f"{self.name}: {err}") from None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def tokens_per_frame(self) -> int:
        return self.image_grid[0] * self.image_grid[1]

    @property
    def tokens_per_action(self) -> int:
        return self.domain.tokens_per_action

    @property
    def tokens_per_pair(self) -> int:
        """One frame plus the action that follows it (347 for the official models)."""
        return self.tokens_per_frame + self.tokens_per_action

    @property
    def context_frames(self) -> int:
        """Frame-action pairs that fit in ``max_position_embeddings`` (16 or 32 for the official models)."""
        return self.max_position_embeddings // self.tokens_per_pair

    @property
    def action_vocab_offset(self) -> int:
        return self.image_vocab_size

    @property
    def downsample(self) -> int:
        """Pixels per token along each axis (16 for the official models)."""
        return self.frame_size[0] // self.image_grid[0]

    # --- (de)serialisation -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); inverse of :meth:`from_dict`."""
        out = dataclasses.asdict(self)
        out["image_grid"] = list(self.image_grid)
        out["frame_size"] = list(self.frame_size)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MineWorldConfig:
        """Build from :meth:`to_dict` output; unknown keys raise ConfigError."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ConfigError(f"unknown MineWorldConfig fields {unknown}; valid fields: {sorted(fields)}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = sorted(name for name in required if name not in data)
        if missing:
            raise ConfigError(f"MineWorldConfig is missing required fields {missing}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> MineWorldConfig:
        """Read an official MineWorld yaml (``configs/300M_16f.yaml`` etc.).

        Only ``model.params.transformer_config.params`` is read. Besides the Llama fields it may hold this
        class's layout fields (``image_grid``, ``frame_size``, ``image_vocab_size``, ``action_domain``, ``fps``,
        ``name``) for non-official models; absent, they take the official constants. Fields without an
        architectural meaning (``initializer_range``, ``torch_dtype``, ``token_num``, ``image_num``, ``frame``,
        ...) are ignored. Fields the official code would honour but this implementation does not support (biases,
        another activation, tied embeddings, rope scaling) raise ConfigError rather than loading another model.

        Args:
            path: the yaml file.
            overrides: MineWorldConfig fields that take precedence over the yaml. The default name is
                ``"mineworld-<stem lowercased, '_' -> '-'>"``.
        """
        import yaml

        path = Path(path)
        if not path.is_file():
            raise MissingFileError(f"MineWorld config {str(path)!r} does not exist; pass an official configs/*.yaml")
        try:
            document = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path} is not valid yaml: {err}") from None
        node: Any = document
        for key in ("model", "params", "transformer_config", "params"):
            if not isinstance(node, dict) or key not in node:
                raise ConfigError(
                    f"{path}: expected the official layout model.params.transformer_config.params, "
                    f"but {key!r} is missing"
                )
            node = node[key]
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: model.params.transformer_config.params must be a mapping")
        overrides.setdefault("name", node.get("name", _name_from_stem(path.stem)))
        return cls.from_llama_fields(node, source=str(path), **overrides)

    @classmethod
    def from_llama_fields(
        cls, fields: dict[str, Any], *, source: str = "config", name: str = "mineworld", **overrides: Any
    ) -> MineWorldConfig:
        """Build from a ``transformers.LlamaConfig``-style mapping (the yaml's ``transformer_config.params``)."""
        missing = [k for k in _REQUIRED_YAML_FIELDS if k not in fields]
        if missing:
            raise ConfigError(f"{source}: transformer_config.params is missing required fields {missing}")
        unsupported = {
            "attention_bias": lambda v: bool(v),
            "mlp_bias": lambda v: bool(v),
            "tie_word_embeddings": lambda v: bool(v),
            "hidden_act": lambda v: v != "silu",
            "rope_scaling": lambda v: v is not None,
            "pretraining_tp": lambda v: v not in (None, 1),
        }
        for key, is_bad in unsupported.items():
            if key in fields and is_bad(fields[key]):
                raise ConfigError(f"{source}: {key}={fields[key]!r} is not supported (MineWorld uses the defaults)")
        if fields.get("head_dim") not in (None, fields["hidden_size"] // max(1, fields["num_attention_heads"])):
            raise ConfigError(f"{source}: head_dim={fields['head_dim']} must equal hidden_size/num_attention_heads")
        kwargs: dict[str, Any] = {k: fields[k] for k in _REQUIRED_YAML_FIELDS}
        for key, default in _LLAMA_DEFAULTS.items():
            kwargs[key] = float(fields.get(key, default))
        kwargs.update({k: fields[k] for k in _LAYOUT_FIELDS if k in fields})
        kwargs["name"] = fields.get("name", name)
        kwargs.update(overrides)
        return cls(**kwargs)


def _name_from_stem(stem: str) -> str:
    return "mineworld-" + stem.lower().replace("_", "-")


def _official(name: str, hidden: int, intermediate: int, heads: int, frames: int) -> MineWorldConfig:
    return MineWorldConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=4,
        num_hidden_layers=20,
        max_position_embeddings=frames * 347,
        name=_name_from_stem(name),
    )


PRESETS: dict[str, MineWorldConfig] = {
    "300M_16f": _official("300M_16f", 1024, 4096, 16, 16),
    "700M_16f": _official("700M_16f", 2048, 4096, 32, 16),
    "700M_32f": _official("700M_32f", 2048, 4096, 32, 32),
    "1200M_16f": _official("1200M_16f", 2048, 8192, 32, 16),
    "1200M_32f": _official("1200M_32f", 2048, 8192, 32, 32),
    # For tests: 32x48 frames, a 4x6 grid (VQ downsampling 8, see vq.TINY_VQ_CONFIG), 64 codes, Minecraft actions,
    # 4 frame-action pairs of context. vocab_size keeps MineWorld's two unused ids after the action ids.
    "tiny": MineWorldConfig(
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        max_position_embeddings=4 * (24 + 11),
        vocab_size=64 + 68 + 2,
        image_grid=(4, 6),
        image_vocab_size=64,
        frame_size=(32, 48),
        name="mineworld-tiny",
    ),
}
"""The five official configs (``configs/<key>.yaml``) and a ``tiny`` one for tests."""


def get_preset(name: str) -> MineWorldConfig:
    """A preset by its official stem (``"300M_16f"``), its model name (``"mineworld-300m-16f"``) or ``"tiny"``."""
    for key, config in PRESETS.items():
        if name in (key, config.name) or name.lower() == key.lower():
            return config
    known = sorted(PRESETS) + sorted(c.name for c in PRESETS.values())
    raise ConfigError(f"unknown MineWorld preset {name!r}; known presets: {known}")
