"""OpenAI's VPT inverse dynamics model (IDM) in plain torch: loads the released ``4x_idm.model`` + ``4x_idm.weights``.

The forward reproduces the public reference (``openai/Video-Pre-Training``: ``lib/policy.py::InverseActionNet``,
``lib/impala_cnn.py``, ``lib/util.py``, ``lib/xf.py``, ``lib/masked_attention.py``, ``lib/action_head.py``) without
gym, gym3 or minerl. Module and parameter names are the reference's, so the released state dict loads strictly.

Per clip of ``T`` frames (``uint8[T, 128, 128, 3]`` RGB)::

    x = frames / 255
    x = ReLU(Conv3d(3 -> 128, kernel (5, 1, 1), zero time padding 2, bias)(x))        # the only temporal mixing
    per frame, ImpalaCNN, 3 stacks with widths (256, 512, 512):
        x = ReLU(Conv3x3_nobias(GroupNorm(1)(x)))                                     # firstconv, normed in stack 0 too
        x = GroupNorm(1)(max_pool2d(x, 3, stride 2, pad 1))                           # `.n`
        2x: x = x + ReLU(Conv3x3_nobias(GroupNorm(1)(ReLU(Conv3x3_nobias(GroupNorm(1)(x))))))
    x = ReLU(Linear_nobias(LayerNorm(flatten_CHW(x))))                                # 131072 -> 256
    x = ReLU(Linear_nobias(LayerNorm(x)))                                             # 256 -> 4096
    2 transformer blocks:
        h = LayerNorm(x)
        h = h + proj(softmax(Q K^T / head_dim) V)    # residual around the *normalised* h; no mask, no positions
        x = h + mlp1(ReLU(mlp0(LayerNorm(h))))
    latent = final_ln(ReLU(x))                       # `lastlayer` exists in the weights but the public code discards it
    buttons = log_softmax(Linear(latent).reshape(20, 2) / 4);  camera = log_softmax(Linear(latent).reshape(2, 11) / 4)

``r_layer`` and the zero-size ``b_nd`` ([10, 0]) are the relative-position attention, identically zero because
``attention_memory_size == timesteps``; they are loaded (strict key check) and never used. Attention runs over the
whole window in both directions, so predictions depend on the window: long videos go through 128-frame windows with
stride 64, keeping the centre of each (MineStudio's labelling scheme), see :func:`window_plan`.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from worldmodels.data.resize import resize_linear_uint8
from worldmodels.actions.camera import VPT_IDM_CAMERA
from worldmodels.errors import (
    CheckpointError,
    ConfigError,
    FrameError,
    IntegrityError,
    MissingFileError,
    UnsafePickleError,
)

MODEL_URL = "https://openaipublic.blob.core.windows.net/minecraft-rl/idm/4x_idm.model"
WEIGHTS_URL = "https://openaipublic.blob.core.windows.net/minecraft-rl/idm/4x_idm.weights"

IDM_BUTTONS: tuple[str, ...] = (
    "attack", "back", "forward", "jump", "left", "right", "sneak", "sprint", "use", "drop", "inventory",
    *(f"hotbar.{i}" for i in range(1, 10)),
)  # fmt: skip
"""The buttons head's 20 rows, in VPT's ``lib/actions.py::Buttons.ALL`` order (row 1 of each = pressed)."""

UNPREDICTED_BUTTONS: tuple[str, ...] = ("ESC", "swapHands", "pickItem")
"""MineRL 1.0 buttons the IDM has no head for; :meth:`VPTInverseDynamicsModel.predict` sets them to 0."""

OFFICIAL_4X_NET_KWARGS: dict[str, Any] = {
    "attention_heads": 32,
    "attention_mask_style": "none",
    "attention_memory_size": 128,
    "conv3d_params": {"inchan": 3, "outchan": 128, "kernel_size": [5, 1, 1], "padding": [2, 0, 0]},
    "hidsize": 4096,
    "img_shape": [128, 128, 128],
    "impala_kwargs": {"post_pool_groups": 1},
    "impala_width": 16,
    "init_norm_kwargs": {"batch_norm": False, "group_norm_groups": 1},
    "n_recurrence_layers": 2,
    "only_img_input": True,
    "pointwise_ratio": 4,
    "pointwise_use_activation": False,
    "recurrence_is_residual": True,
    "recurrence_type": "transformer",
    "single_output": True,
    "timesteps": 128,
    "use_pointwise_layer": True,
    "use_pre_lstm_ln": False,
}
"""``4x_idm.model["model"]["args"]["net"]["args"]`` as released (vpt_idm.md section 1.2)."""

OFFICIAL_4X_TEMPERATURE = 4.0
OFFICIAL_4X_TENSORS = 100
OFFICIAL_4X_PARAMETERS = 482_330_046

_N_BUTTONS = len(IDM_BUTTONS)
_N_CAMERA_BINS = VPT_IDM_CAMERA.n_bins  # 11
_CNN_OUTSIZE = 256  # hard-coded in MinecraftPolicy (ImgObsProcess(cnn_outsize=256)); obs_processing_width is unused
_RELATIVE_BASES = 10  # AttentionLayerBase: nbasis = 10

# MinecraftPolicy keyword arguments the reference accepts but never reads in the IDM forward.
_IGNORED_NET_KWARGS = frozenset(
    {"only_img_input", "single_output", "obs_processing_width", "input_shape", "active_reward_monitors",
     "diff_mlp_embedding"}
)  # fmt: skip
_KNOWN_NET_KWARGS = _IGNORED_NET_KWARGS | {
    "attention_heads", "attention_mask_style", "attention_memory_size", "conv3d_params", "hidsize", "img_shape",
    "impala_chans", "impala_kwargs", "impala_width", "init_norm_kwargs", "n_recurrence_layers", "pointwise_ratio",
    "pointwise_use_activation", "recurrence_is_residual", "recurrence_type", "timesteps", "use_pointwise_layer",
    "use_pre_lstm_ln", "scale_input_img", "img_statistics",
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VPTIDMConfig:
    """Architecture of a VPT IDM, read from the ``.model`` file's net kwargs (see :meth:`from_net_kwargs`).

    Defaults are the released 4x model.
    """

    img_height: int = 128
    img_width: int = 128
    conv3d_channels: int = 128
    conv3d_taps: int = 5
    impala_chans: tuple[int, ...] = (256, 512, 512)
    group_norm_groups: int = 1
    post_pool_groups: int | None = 1
    hidsize: int = 4096
    n_blocks: int = 2
    attention_heads: int = 32
    pointwise_ratio: int = 4
    pointwise_use_activation: bool = False
    use_pre_lstm_ln: bool = False
    timesteps: int = 128
    temperature: float = OFFICIAL_4X_TEMPERATURE

    @property
    def head_dim(self) -> int:
        return self.hidsize // self.attention_heads

    @property
    def cnn_flat_size(self) -> int:
        """Length of the channel-major flattened ImpalaCNN output (131072 for 4x)."""
        height, width = self.img_height, self.img_width
        for _ in self.impala_chans:  # max_pool2d(3, 2, 1): n -> (n + 1) // 2
            height, width = (height + 1) // 2, (width + 1) // 2
        return self.impala_chans[-1] * height * width

    @classmethod
    def from_net_kwargs(cls, net_kwargs: Mapping[str, Any], temperature: Any = OFFICIAL_4X_TEMPERATURE) -> VPTIDMConfig:
        """Validate ``model["args"]["net"]["args"]`` (+ ``pi_head_opts["temperature"]``) and build the config.

        Missing keys take ``MinecraftPolicy``/``InverseActionNet``'s defaults, exactly as the reference does.

        Raises:
            ConfigError: an unknown key, or a value this implementation does not support (named in the message).
        """
        if not isinstance(net_kwargs, Mapping):
            raise ConfigError(f"net kwargs must be a dict, got {type(net_kwargs).__name__}")
        unknown = sorted(set(net_kwargs) - _KNOWN_NET_KWARGS)
        if unknown:
            raise ConfigError(f"unknown VPT IDM net kwargs {unknown}; supported: {sorted(_KNOWN_NET_KWARGS)}")
        kw = dict(net_kwargs)

        def require(key: str, ok: bool, default: Any, why: str) -> None:
            if not ok:
                raise ConfigError(f"unsupported VPT IDM net kwarg {key}={kw.get(key, default)!r}: {why}")

        recurrence = kw.get("recurrence_type", "lstm")
        require("recurrence_type", recurrence == "transformer", "lstm", 'only "transformer" is implemented')
        mask_style = kw.get("attention_mask_style", "clipped_causal")
        require("attention_mask_style", mask_style == "none", "clipped_causal", 'only "none" (bidirectional)')
        for key, default in (("use_pointwise_layer", True), ("recurrence_is_residual", True),
                             ("scale_input_img", True)):  # fmt: skip
            require(key, kw.get(key, default) is True, default, "only True is implemented")
        require("img_statistics", kw.get("img_statistics") is None, None, "only None (frames / 255) is implemented")
        pointwise_act = kw.get("pointwise_use_activation", False)
        require("pointwise_use_activation", isinstance(pointwise_act, bool), False, "must be a bool")
        pre_lstm_ln = kw.get("use_pre_lstm_ln", True)
        require("use_pre_lstm_ln", isinstance(pre_lstm_ln, bool), True, "must be a bool")

        hidsize = _positive_int(kw.get("hidsize", 512), "hidsize")
        heads = _positive_int(kw.get("attention_heads", 8), "attention_heads")
        require("attention_heads", hidsize % heads == 0, 8, f"must divide hidsize={hidsize}")
        n_blocks = _positive_int(kw.get("n_recurrence_layers", 1), "n_recurrence_layers")
        ratio = _positive_int(kw.get("pointwise_ratio", 4), "pointwise_ratio")
        if "timesteps" not in kw:
            raise ConfigError("VPT IDM net kwargs need 'timesteps' (128 for the released model)")
        timesteps = _positive_int(kw["timesteps"], "timesteps")
        memory = _positive_int(kw.get("attention_memory_size", 2048), "attention_memory_size")
        require(
            "attention_memory_size",
            memory == timesteps,
            2048,
            f"must equal timesteps={timesteps}; memory - timesteps > 0 enables relative attention over a cache, "
            "which the released IDM does not use and this implementation does not implement",
        )

        conv3d = kw.get("conv3d_params")
        if not isinstance(conv3d, Mapping):
            raise ConfigError(f"unsupported VPT IDM net kwarg conv3d_params={conv3d!r}: the IDM needs its 3-D conv")
        extra = sorted(set(conv3d) - {"inchan", "outchan", "kernel_size", "padding"})
        if extra or {"inchan", "outchan", "kernel_size"} - set(conv3d):
            raise ConfigError(f"conv3d_params={dict(conv3d)!r} must have exactly inchan, outchan, kernel_size, padding")
        if conv3d["inchan"] != 3:
            raise ConfigError(f"conv3d_params inchan={conv3d['inchan']!r} unsupported: frames are RGB (3)")
        outchan = _positive_int(conv3d["outchan"], "conv3d_params.outchan")
        kernel = _int_triple(conv3d["kernel_size"], "conv3d_params.kernel_size")
        padding = _int_triple(conv3d.get("padding", 0), "conv3d_params.padding")
        if kernel[1:] != (1, 1) or kernel[0] % 2 == 0 or padding != (kernel[0] // 2, 0, 0):
            raise ConfigError(
                f"conv3d_params kernel_size={list(kernel)} padding={list(padding)} unsupported: need an odd temporal "
                "kernel (k, 1, 1) with 'same' time padding (k // 2, 0, 0), like the released (5, 1, 1) / (2, 0, 0)"
            )

        img_shape = kw.get("img_shape")
        if not isinstance(img_shape, (list, tuple)) or len(img_shape) != 3:
            raise ConfigError(f"img_shape={img_shape!r} must be [height, width, channels after the 3-D conv]")
        img_h, img_w, img_c = (_positive_int(v, "img_shape") for v in img_shape)
        if img_c != outchan:
            raise ConfigError(f"img_shape channels {img_c} must equal conv3d_params outchan {outchan}")

        width = kw.get("impala_width", 1)
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
            raise ConfigError(f"unsupported VPT IDM net kwarg impala_width={width!r}: must be a positive number")
        base_chans = kw.get("impala_chans", (16, 32, 32))
        if not isinstance(base_chans, (list, tuple)) or not base_chans:
            raise ConfigError(f"unsupported VPT IDM net kwarg impala_chans={base_chans!r}: must be a list of ints")
        chans = tuple(_positive_int(int(width * _positive_int(c, "impala_chans")), "impala_chans") for c in base_chans)

        init_norm = kw.get("init_norm_kwargs", {})
        if not isinstance(init_norm, Mapping) or set(init_norm) - {"batch_norm", "group_norm_groups"}:
            raise ConfigError(
                f"unsupported init_norm_kwargs={init_norm!r}: only batch_norm (False) and group_norm_groups"
            )
        if init_norm.get("batch_norm", False) is not False:
            raise ConfigError(f"unsupported init_norm_kwargs batch_norm={init_norm['batch_norm']!r}: only False")
        groups = init_norm.get("group_norm_groups")
        if groups is None:
            raise ConfigError("unsupported init_norm_kwargs group_norm_groups=None: convs without norm not implemented")
        groups = _positive_int(groups, "init_norm_kwargs.group_norm_groups")
        for c in (outchan, *chans):
            if c % groups:
                raise ConfigError(f"init_norm_kwargs group_norm_groups={groups} does not divide {c} channels")

        impala_kwargs = kw.get("impala_kwargs", {})
        if not isinstance(impala_kwargs, Mapping) or set(impala_kwargs) - {"post_pool_groups"}:
            raise ConfigError(f"unsupported impala_kwargs={impala_kwargs!r}: only post_pool_groups is implemented")
        post_pool = impala_kwargs.get("post_pool_groups")
        if post_pool is not None:
            post_pool = _positive_int(post_pool, "impala_kwargs.post_pool_groups")
            for c in chans:
                if c % post_pool:
                    raise ConfigError(f"impala_kwargs post_pool_groups={post_pool} does not divide {c} channels")

        try:
            temp = float(temperature)
        except (TypeError, ValueError):
            raise ConfigError(f"pi_head_opts temperature={temperature!r} is not a number") from None
        if not math.isfinite(temp) or temp <= 0:
            raise ConfigError(f"pi_head_opts temperature={temperature!r} must be finite and > 0")

        return cls(
            img_height=img_h,
            img_width=img_w,
            conv3d_channels=outchan,
            conv3d_taps=kernel[0],
            impala_chans=chans,
            group_norm_groups=groups,
            post_pool_groups=post_pool,
            hidsize=hidsize,
            n_blocks=n_blocks,
            attention_heads=heads,
            pointwise_ratio=ratio,
            pointwise_use_activation=pointwise_act,
            use_pre_lstm_ln=pre_lstm_ln,
            timesteps=timesteps,
            temperature=temp,
        )

    @classmethod
    def official_4x(cls) -> VPTIDMConfig:
        """The released ``4x_idm.model`` configuration."""
        return cls.from_net_kwargs(OFFICIAL_4X_NET_KWARGS, OFFICIAL_4X_TEMPERATURE)


def _positive_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"unsupported VPT IDM net kwarg {key}={value!r}: must be a positive int")
    return value


def _int_triple(value: Any, key: str) -> tuple[int, int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value, value)
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        return tuple(value)  # type: ignore[return-value]
    raise ConfigError(f"unsupported VPT IDM net kwarg {key}={value!r}: must be an int or 3 non-negative ints")


# ---------------------------------------------------------------------------------------------------------------
# Network (names follow the reference modules so the state dict keys match)
# ---------------------------------------------------------------------------------------------------------------


class _FanInLayer(nn.Module):
    """VPT's ``FanInInitReLULayer``: optional norm of the *input* -> conv/linear (bias only without norm) -> ReLU."""

    def __init__(self, layer: nn.Module, norm: nn.Module | None = None, relu: bool = True) -> None:
        super().__init__()
        self.norm = norm
        self.layer = layer
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        x = self.layer(x)
        return F.relu(x) if self.relu else x


def _conv3x3(cin: int, cout: int, groups: int) -> _FanInLayer:
    return _FanInLayer(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cin))


def _dense(cin: int, cout: int) -> _FanInLayer:
    """The dense FanInInitReLULayer: LayerNorm -> Linear without bias -> ReLU."""
    return _FanInLayer(nn.Linear(cin, cout, bias=False), nn.LayerNorm(cin))


class _CnnBasicBlock(nn.Module):
    def __init__(self, chans: int, groups: int) -> None:
        super().__init__()
        self.conv0 = _conv3x3(chans, chans, groups)
        self.conv1 = _conv3x3(chans, chans, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(self.conv0(x))


class _CnnDownStack(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, post_pool_groups: int | None) -> None:
        super().__init__()
        # InverseActionNet sets first_conv_norm=True, so stack 0's first conv is normalised like the others.
        self.firstconv = _conv3x3(cin, cout, groups)
        self.n = nn.GroupNorm(post_pool_groups, cout) if post_pool_groups is not None else None
        self.blocks = nn.ModuleList([_CnnBasicBlock(cout, groups) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.firstconv(x), kernel_size=3, stride=2, padding=1)
        if self.n is not None:
            x = self.n(x)
        for block in self.blocks:
            x = block(x)
        return x


class _ImpalaCNN(nn.Module):
    def __init__(self, config: VPTIDMConfig) -> None:
        super().__init__()
        cins = (config.conv3d_channels, *config.impala_chans[:-1])
        self.stacks = nn.ModuleList(
            [_CnnDownStack(cin, cout, config.group_norm_groups, config.post_pool_groups)
             for cin, cout in zip(cins, config.impala_chans)]
        )  # fmt: skip
        self.dense = _dense(config.cnn_flat_size, _CNN_OUTSIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, C, H, W] -> [n, 256]
        for stack in self.stacks:
            x = stack(x)
        return self.dense(x.flatten(1))  # channel-major (C, H, W) flatten, as tu.flatten_image on NCHW


class _ImgObsProcess(nn.Module):
    def __init__(self, config: VPTIDMConfig) -> None:
        super().__init__()
        self.cnn = _ImpalaCNN(config)
        self.linear = _dense(_CNN_OUTSIZE, config.hidsize)


class _SelfAttention(nn.Module):
    """``xf.SelfAttentionLayer`` with ``All2All(mask=False)``, ``use_muP_factor=True`` and ``norm="none"``."""

    def __init__(self, config: VPTIDMConfig) -> None:
        super().__init__()
        d = config.hidsize
        self.heads = config.attention_heads
        self.q_layer = nn.Linear(d, d)
        self.k_layer = nn.Linear(d, d, bias=False)
        self.v_layer = nn.Linear(d, d, bias=False)
        self.proj_layer = nn.Linear(d, d)
        # Relative-position logits: b_nd has maxlen = memory_size - timesteps = 0 columns, so they are exactly zero.
        self.r_layer = nn.Linear(d, _RELATIVE_BASES * config.attention_heads)
        self.b_nd = nn.Parameter(torch.empty(_RELATIVE_BASES, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, T, d] -> [n, T, d]
        n, t, d = x.shape
        q, k, v = (layer(x).view(n, t, self.heads, -1).transpose(1, 2) for layer in
                   (self.q_layer, self.k_layer, self.v_layer))  # fmt: skip
        head_dim = q.shape[-1]
        # muP scale 1/head_dim (not 1/sqrt); logits and softmax in fp32 as the reference; no mask: sees the future.
        compute = torch.promote_types(q.dtype, torch.float32)
        logits = torch.matmul(q.to(compute), k.to(compute).transpose(-1, -2)) * (1.0 / head_dim)
        weights = torch.softmax(logits, dim=-1).to(v.dtype)
        attended = torch.matmul(weights, v).transpose(1, 2).reshape(n, t, d)
        return x + self.proj_layer(attended)


class _MaskedAttention(nn.Module):
    def __init__(self, config: VPTIDMConfig) -> None:
        super().__init__()
        self.orc_block = _SelfAttention(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.orc_block(x)


class _ResidualRecurrentBlock(nn.Module):
    def __init__(self, config: VPTIDMConfig) -> None:
        super().__init__()
        d, wide = config.hidsize, config.hidsize * config.pointwise_ratio
        self.mlp0 = _dense(d, wide)
        self.mlp1 = _FanInLayer(nn.Linear(wide, d), relu=config.pointwise_use_activation)
        self.pre_r_ln = nn.LayerNorm(d)
        self.r = _MaskedAttention(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The transformer residual wraps the LayerNorm output; the raw input x is dropped (the outer residual of
        # ResidualRecurrentBlock is only added for LSTMs).
        h = self.r(self.pre_r_ln(x))
        return h + self.mlp1(self.mlp0(h))


class _ResidualRecurrentBlocks(nn.Module):
    def __init__(self, config: VPTIDMConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([_ResidualRecurrentBlock(config) for _ in range(config.n_blocks)])


class _InverseActionNet(nn.Module):
    def __init__(self, config: VPTIDMConfig) -> None:
        super().__init__()
        self.config = config
        # Time padding is applied by hand (see encode) so frame chunks see the same zeros as the whole clip.
        conv3d = nn.Conv3d(3, config.conv3d_channels, (config.conv3d_taps, 1, 1), bias=True)
        self.conv3d_layer = _FanInLayer(conv3d)
        self.img_process = _ImgObsProcess(config)
        # Built by MinecraftPolicy when use_pre_lstm_ln (its default); InverseActionNet.forward never calls it.
        self.pre_lstm_ln = nn.LayerNorm(config.hidsize) if config.use_pre_lstm_ln else None
        self.recurrent_layer = _ResidualRecurrentBlocks(config)
        self.lastlayer = _dense(config.hidsize, config.hidsize)
        self.final_ln = nn.LayerNorm(config.hidsize)

    def encode(self, frames: torch.Tensor, frame_chunk: int) -> torch.Tensor:
        """``uint8[n, T, H, W, 3]`` -> per-frame embeddings ``[n, T, hidsize]`` (before attention)."""
        n, t = frames.shape[:2]
        dtype = self.final_ln.weight.dtype
        x = (frames.to(torch.float32) / 255.0).to(dtype)
        x = x.permute(0, 4, 1, 2, 3)  # [n, 3, T, H, W]
        pad = self.config.conv3d_taps // 2
        x = F.pad(x, (0, 0, 0, 0, pad, pad))  # zeros before the first and after the last frame
        per_step = max(1, frame_chunk // n)
        cnn = self.img_process.cnn
        parts = []
        for start in range(0, t, per_step):
            stop = min(t, start + per_step)
            y = self.conv3d_layer(x[:, :, start : stop + 2 * pad])  # [n, C, steps, H, W]
            # -> [n * steps, C, H, W] in channels-last memory (one copy): faster convs on oneDNN and cuDNN
            y = y.permute(0, 2, 3, 4, 1).flatten(0, 1).permute(0, 3, 1, 2)
            parts.append(cnn(y).view(n, stop - start, -1))
        return self.img_process.linear(torch.cat(parts, dim=1))

    def trunk(self, x: torch.Tensor, apply_lastlayer: bool) -> torch.Tensor:
        for block in self.recurrent_layer.blocks:
            x = block(x)
        x = F.relu(x)
        if apply_lastlayer:
            x = self.lastlayer(x)
        return self.final_ln(x)


class _CategoricalHead(nn.Module):
    def __init__(self, hidsize: int, shape: tuple[int, int]) -> None:
        super().__init__()
        self.shape = shape
        self.linear_layer = nn.Linear(hidsize, shape[0] * shape[1])

    def forward(self, latent: torch.Tensor, temperature: float) -> torch.Tensor:
        logits = self.linear_layer(latent)
        logits = logits.view(*logits.shape[:-1], *self.shape) / temperature
        return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)


class _ActionHeads(nn.Module):
    def __init__(self, hidsize: int) -> None:
        super().__init__()
        self.buttons = _CategoricalHead(hidsize, (_N_BUTTONS, 2))
        self.camera = _CategoricalHead(hidsize, (2, _N_CAMERA_BINS))


class VPTIDMPolicy(nn.Module):
    """The IDM network: ``net`` (InverseActionNet) + ``pi_head``; state-dict keys are the released file's."""

    def __init__(self, config: VPTIDMConfig) -> None:
        super().__init__()
        self.config = config
        self.net = _InverseActionNet(config)
        self.pi_head = _ActionHeads(config.hidsize)

    def forward(
        self, frames: torch.Tensor, *, apply_lastlayer: bool = False, frame_chunk: int = 64
    ) -> dict[str, torch.Tensor]:
        """``uint8[n, T, img_height, img_width, 3]`` -> ``{"buttons": [n, T, 20, 2], "camera": [n, T, 2, 11]}``
        log-probabilities after the temperature, in fp32 (fp64 for a float64 model)."""
        latent = self.net.trunk(self.net.encode(frames, frame_chunk), apply_lastlayer)
        temperature = self.config.temperature
        return {
            "buttons": self.pi_head.buttons(latent, temperature),
            "camera": self.pi_head.camera(latent, temperature),
        }


def expected_state_dict_shapes(config: VPTIDMConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict a checkpoint for ``config`` must hold (built on the meta device)."""
    with torch.device("meta"):
        policy = VPTIDMPolicy(config)
    return {key: tuple(value.shape) for key, value in policy.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickler for plain data only. Dicts, lists, tuples, str, numbers, bools and None are pickle opcodes that
    need no global; sets pickled with protocol < 4 need ``builtins.set``/``frozenset`` and an OrderedDict needs
    ``collections.OrderedDict`` (both only build containers). Every other global (functions, classes, numpy,
    ``_codecs.encode`` for protocol-2 bytes) is refused, and so are persistent ids."""

    _ALLOWED = {("builtins", "set"), ("builtins", "frozenset"), ("collections", "OrderedDict")}

    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocols 0-2 spell builtins the Python 2 way
            module = "builtins"
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._path} references the global {module}.{name}; a VPT .model file holds only plain dicts, so it "
            "is refused (loading it could run code). Re-download 4x_idm.model from " + MODEL_URL
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._path} uses pickle persistent id {pid!r}; a .model file holds plain dicts only")


def load_model_file(path: str | Path) -> dict[str, Any]:
    """Read a VPT ``.model`` pickle with a restricted unpickler (plain containers and scalars only).

    Raises:
        MissingFileError: no such file.
        UnsafePickleError: the pickle references any global other than set/frozenset/OrderedDict.
        CheckpointError: not a pickle, or not a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"VPT IDM model file {path} not found; download it from {MODEL_URL}")
    with path.open("rb") as handle:
        try:
            data = _PlainDataUnpickler(handle, path).load()
        except UnsafePickleError:
            raise
        except Exception as error:  # truncated / not a pickle / unsupported opcode
            raise CheckpointError(f"{path} is not a readable VPT .model pickle ({error!r}); re-download it") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, expected the VPT .model dict")
    return data


def config_from_model_dict(data: Mapping[str, Any], source: str = ".model") -> VPTIDMConfig:
    """Build the config from a loaded ``.model`` dict (``["model"]["args"]["net"]["args"]`` and
    ``["model"]["args"]["pi_head_opts"]["temperature"]``)."""
    try:
        args = data["model"]["args"]
        net_kwargs = args["net"]["args"]
        temperature = args["pi_head_opts"]["temperature"]
    except (KeyError, TypeError) as error:
        raise ConfigError(
            f"{source} lacks {error!s}: expected model.args.net.args and model.args.pi_head_opts.temperature"
        ) from None
    return VPTIDMConfig.from_net_kwargs(net_kwargs, temperature)


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """``torch.load(path, map_location="cpu", weights_only=True)`` of a flat state dict of tensors.

    Raises:
        MissingFileError: no such file.
        UnsafePickleError: the file pickles something other than tensors and containers (the global is named).
        CheckpointError: unreadable, or not a flat ``{str: Tensor}`` dict.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"VPT IDM weights file {path} not found; download it from {WEIGHTS_URL}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        message = str(error)
        found = re.search(r"GLOBAL ([\w.]+)", message)
        if found is None and "Unsupported operand" in message:  # not a pickle at all (garbage / truncated)
            raise CheckpointError(f"{path} is not a readable torch checkpoint; re-download it") from None
        reason = message.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].strip()
        what = f"the global {found.group(1)}" if found else f"something torch refuses ({reason})"
        raise UnsafePickleError(
            f"{path} pickles {what}; a weights file must hold only tensors, so torch.load(weights_only=True) "
            "refuses it. Never load it with weights_only=False; re-download the official weights from "
            + WEIGHTS_URL
        ) from None
    except Exception as error:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({error!r}); re-download it") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):  # fmt: skip
        raise CheckpointError(f"{path} must hold a flat state dict {{name: Tensor}}, got {type(state).__name__}")
    return state


def check_state_dict(state: Mapping[str, torch.Tensor], config: VPTIDMConfig, source: str = "state dict") -> None:
    """Strict key/shape check against ``config``'s layout.

    Raises:
        CheckpointError: listing the missing, unexpected and mis-shaped keys.
    """
    expected = expected_state_dict_shapes(config)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [f"{k}: expected {list(expected[k])}, got {list(state[k].shape)}"
                 for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != expected[k]]  # fmt: skip
    not_float = sorted(k for k in set(expected) & set(state) if not state[k].is_floating_point())
    if missing or unexpected or misshaped or not_float:
        lines = [f"{source} does not match the VPT IDM layout for this config ({len(expected)} tensors):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped),
                             ("not floating point", not_float)):  # fmt: skip
            if items:
                shown = "\n    ".join(items[:20]) + (f"\n    ... and {len(items) - 20} more" if len(items) > 20 else "")
                lines.append(f"  {title} ({len(items)}):\n    {shown}")
        lines.append("  Check that the .weights file belongs to the .model file (e.g. 4x_idm.model + 4x_idm.weights).")
        raise CheckpointError("\n".join(lines))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def window_plan(n_frames: int, window: int = 128, stride: int = 64) -> list[tuple[int, int, int]]:
    """How a video of ``n_frames`` is cut: ``(start, keep_from, keep_to)`` per window, absolute frame indices.

    ``n_frames <= window``: one window of all frames. Otherwise windows of ``window`` frames start at
    ``0, stride, 2 * stride, ...`` while they end before the video does, plus a last window aligned to the
    video's end (so every window has full length). Each window keeps its centre ``[start + m, start + m + stride)``
    with ``m = (window - stride) // 2``; the first also keeps ``[0, m)`` and the last keeps everything after the
    previous window's kept frames. With 128/64 that is MineStudio's scheme: frames ``[32:96]`` of each window, and
    every kept frame except the first and last 32 of the video sees at least 32 frames on each side.
    """
    if n_frames <= window:
        return [(0, 0, n_frames)]
    starts = list(range(0, n_frames - window, stride)) + [n_frames - window]
    margin = (window - stride) // 2
    plan, kept = [], 0
    for i, start in enumerate(starts):
        stop = n_frames if i == len(starts) - 1 else start + margin + stride
        plan.append((start, kept, stop))
        kept = stop
    return plan


# ---------------------------------------------------------------------------------------------------------------
# Inference wrapper
# ---------------------------------------------------------------------------------------------------------------


class VPTInverseDynamicsModel:
    """The released VPT IDM as an :class:`~evaluation.idm.base.InverseDynamicsModel` for Minecraft videos.

    Build it with :meth:`from_files` (official ``.model`` + ``.weights``) or :meth:`from_state_dict`. All methods
    take ``uint8[B, T, H, W, 3]`` RGB frames (numpy or torch), squash-resize them to the model's 128x128 with
    OpenCV ``INTER_LINEAR`` arithmetic, cut videos longer than ``window`` into overlapping windows, and run without
    gradients and without state between calls.

    Args:
        policy: the loaded network.
        apply_lastlayer: also apply ``net.lastlayer`` before ``final_ln`` (as ``od0/madeleine`` does). ``False``
            (default) matches the public VPT code and every published benchmark (MineWorld, GameWorld).
        window: frames per forward pass (default ``config.timesteps``, 128, the training window).
        stride: window step for videos longer than ``window`` (default ``window // 2``).
        max_windows: windows per forward pass (bounds memory; the full 4x model needs a few GB per window in fp32).
        frame_chunk: frames per ImpalaCNN call inside a forward pass (bounds activation memory).
        name: identifier for reports.
        weights_path: the weights file, for :attr:`sha256`.
    """

    domain = "minecraft"
    context_frames = 0  # MineWorld's protocol: the IDM sees the generated frames only

    def __init__(
        self,
        policy: VPTIDMPolicy,
        *,
        apply_lastlayer: bool = False,
        window: int | None = None,
        stride: int | None = None,
        max_windows: int = 4,
        frame_chunk: int = 64,
        name: str = "vpt-4x-idm",
        weights_path: str | Path | None = None,
    ) -> None:
        self.policy = policy.eval().requires_grad_(False)
        for module in self.policy.modules():
            if isinstance(module, nn.Conv2d):  # channels-last kernels match the channels-last activations
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
        self.config = policy.config
        self.apply_lastlayer = bool(apply_lastlayer)
        self.window = int(window if window is not None else self.config.timesteps)
        self.stride = int(stride if stride is not None else max(1, self.window // 2))
        if self.window < 1 or not 1 <= self.stride <= self.window:
            raise ConfigError(f"need window >= 1 and 1 <= stride <= window, got window={window}, stride={stride}")
        if max_windows < 1 or frame_chunk < 1:
            raise ConfigError(f"max_windows={max_windows} and frame_chunk={frame_chunk} must be >= 1")
        self.max_windows = int(max_windows)
        self.frame_chunk = int(frame_chunk)
        self._name = name
        self._weights_path = Path(weights_path) if weights_path is not None else None
        self._sha256: str | None = None

    # -- construction -------------------------------------------------------------------------------------------

    @classmethod
    def from_state_dict(
        cls,
        config: VPTIDMConfig,
        state_dict: Mapping[str, torch.Tensor],
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        source: str = "state dict",
        **kwargs: Any,
    ) -> VPTInverseDynamicsModel:
        """Strictly check ``state_dict`` against ``config`` and load it (no copy where dtype/device already match).

        ``kwargs`` go to the constructor (``apply_lastlayer``, ``window``, ``stride``, ...).
        """
        if dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise ConfigError(f"dtype={dtype} unsupported: use torch.float32 (reference), float16/bfloat16 (GPU) or "
                              "float64 (numerical checks)")
        check_state_dict(state_dict, config, source)
        with torch.device("meta"):
            policy = VPTIDMPolicy(config)
        converted = {k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}
        policy.load_state_dict(converted, strict=True, assign=True)
        return cls(policy, **kwargs)

    @classmethod
    def from_files(
        cls,
        model_path: str | Path,
        weights_path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        apply_lastlayer: bool = False,
        expected_sha256: str | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> VPTInverseDynamicsModel:
        """Load the released ``4x_idm.model`` (restricted unpickler) and ``4x_idm.weights`` (``weights_only``).

        Args:
            model_path: the ``.model`` pickle (architecture kwargs and head temperature).
            weights_path: the ``.weights`` state dict, checked strictly (100 tensors for 4x).
            device: where to run.
            dtype: ``torch.float32`` (reference), ``float16``/``bfloat16`` on GPU (check with
                :func:`argmax_agreement`), or ``float64`` for numerical checks.
            apply_lastlayer: see the class docstring.
            expected_sha256: if given, the weights file's sha256 must match (else :class:`IntegrityError`).
            name: report name; default ``"vpt-" + weights file stem`` with ``_`` -> ``-`` (``"vpt-4x-idm"``).
            **kwargs: ``window``, ``stride``, ``max_windows``, ``frame_chunk``.

        Raises:
            MissingFileError, UnsafePickleError, ConfigError, CheckpointError, IntegrityError.
        """
        config = config_from_model_dict(load_model_file(model_path), str(model_path))
        weights_path = Path(weights_path)
        state = load_weights_file(weights_path)
        model = cls.from_state_dict(
            config,
            state,
            device=device,
            dtype=dtype,
            source=str(weights_path),
            apply_lastlayer=apply_lastlayer,
            name=name or "vpt-" + weights_path.stem.replace("_", "-"),
            weights_path=weights_path,
            **kwargs,
        )
        if expected_sha256 is not None and model.sha256 != expected_sha256.lower():
            raise IntegrityError(
                f"{weights_path} has sha256 {model.sha256}, expected {expected_sha256}; the file is corrupted or "
                f"not the released weights, re-download it from {WEIGHTS_URL}"
            )
        return model

    # -- identity -----------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def sha256(self) -> str | None:
        """sha256 of the weights file (computed once, on first access); ``None`` without a file."""
        if self._sha256 is None and self._weights_path is not None:
            self._sha256 = _file_sha256(self._weights_path)
        return self._sha256

    @property
    def device(self) -> torch.device:
        return self.policy.net.final_ln.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.policy.net.final_ln.weight.dtype

    # -- windows ------------------------------------------------------------------------------------------------

    def window_plan(self, n_frames: int) -> list[tuple[int, int, int]]:
        """:func:`window_plan` with this model's ``window`` and ``stride``."""
        return window_plan(n_frames, self.window, self.stride)

    # -- inference ----------------------------------------------------------------------------------------------

    def _prepare(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        if not isinstance(frames, torch.Tensor):
            raise FrameError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
        if frames.dtype != torch.uint8:
            raise FrameError(
                f"frames must be uint8 RGB in [0, 255], got {frames.dtype}; floats in [0, 1] must be scaled by 255 "
                "and cast (float input would silently ruin predictions)"
            )
        if frames.ndim != 5 or frames.shape[-1] != 3 or min(frames.shape) < 1:
            raise FrameError(
                f"frames must have shape [B, T, H, W, 3] with every size >= 1, got {tuple(frames.shape)}; "
                "add a batch axis with frames[None] for a single video"
            )
        frames = frames.to(self.device)
        height, width = self.config.img_height, self.config.img_width
        return resize_linear_uint8(frames, height, width)

    @torch.no_grad()
    def log_probs(self, frames: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-frame log-probabilities after the temperature.

        Args:
            frames: ``uint8[B, T, H, W, 3]`` RGB (resized to 128x128 if needed; cv2 video frames are BGR, flip them).

        Returns:
            ``{"buttons": float32[B, T, 20, 2], "camera": float32[B, T, 2, 11]}`` on the model's device;
            ``buttons[..., i, 1]`` is the log-probability that ``IDM_BUTTONS[i]`` is pressed, ``camera[..., 0, :]``
            is pitch and ``camera[..., 1, :]`` yaw over the 11 ``VPT_IDM_CAMERA`` bins.
        """
        frames = self._prepare(frames)
        batch, n_frames = frames.shape[:2]
        plan = self.window_plan(n_frames)
        length = min(n_frames, self.window)
        clips = torch.stack([frames[:, start : start + length] for start, _, _ in plan], dim=1)  # [B, nw, L, ...]
        clips = clips.flatten(0, 1)
        outputs: dict[str, list[torch.Tensor]] = {"buttons": [], "camera": []}
        for first in range(0, clips.shape[0], self.max_windows):
            result = self.policy(
                clips[first : first + self.max_windows],
                apply_lastlayer=self.apply_lastlayer,
                frame_chunk=self.frame_chunk,
            )
            for key in outputs:
                outputs[key].append(result[key])
        stitched = {}
        for key, parts in outputs.items():
            per_window = torch.cat(parts).unflatten(0, (batch, len(plan)))  # [B, nw, L, ...]
            stitched[key] = torch.cat(
                [per_window[:, i, keep_from - start : keep_to - start] for i, (start, keep_from, keep_to) in
                 enumerate(plan)], dim=1)  # fmt: skip
        return stitched

    def predict_arrays(self, frames: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """Argmax actions as arrays.

        Returns:
            ``{"buttons": int64[B, T, 20]`` (0/1, ``IDM_BUTTONS`` order), ``"camera_bins": int64[B, T, 2]``
            (pitch, yaw bins), ``"camera": float32[B, T, 2]`` (bin centres in degrees, ``VPT_IDM_CAMERA``)}.
        """
        log_probs = self.log_probs(frames)
        buttons = log_probs["buttons"].argmax(dim=-1).cpu().numpy().astype(np.int64)
        bins = log_probs["camera"].argmax(dim=-1).cpu().numpy().astype(np.int64)
        camera = VPT_IDM_CAMERA.undiscretize(bins).astype(np.float32)
        return {"buttons": buttons, "camera_bins": bins, "camera": camera}

    def predict(self, frames: np.ndarray | torch.Tensor) -> list[list[dict[str, Any]]]:
        """MineRL 1.0 action dicts (all 24 keys) per frame: ``result[b][t]``.

        The 20 predicted buttons (``IDM_BUTTONS`` order) are ``int`` 0/1; ``ESC``, ``swapHands`` and ``pickItem``
        are 0 (the IDM does not predict them); ``camera`` is ``float32[2]`` ``[pitch, yaw]`` degrees.
        """
        arrays = self.predict_arrays(frames)
        buttons, camera = arrays["buttons"], arrays["camera"]
        return [
            [
                {**dict(zip(IDM_BUTTONS, map(int, buttons[b, t]))), **dict.fromkeys(UNPREDICTED_BUTTONS, 0),
                 "camera": camera[b, t].copy()}  # fmt: skip
                for t in range(buttons.shape[1])
            ]
            for b in range(buttons.shape[0])
        ]

    predict_actions = predict


def argmax_agreement(
    candidate: VPTInverseDynamicsModel, reference: VPTInverseDynamicsModel, frames: np.ndarray | torch.Tensor
) -> dict[str, float]:
    """Fraction of argmax decisions two IDMs share on ``frames`` (e.g. a bf16/fp16 copy vs the fp32 reference).

    Returns:
        ``{"buttons": ..., "camera": ...}``: agreement over all (frame, button) and (frame, axis) decisions, and
        ``"max_abs_log_prob"``: the largest absolute log-probability difference.
    """
    a, b = candidate.log_probs(frames), reference.log_probs(frames)
    result = {key: float((a[key].argmax(-1).cpu() == b[key].argmax(-1).cpu()).double().mean()) for key in a}
    result["max_abs_log_prob"] = max(float((a[k].cpu() - b[k].cpu()).abs().max()) for k in a)
    return result
