"""LoRA adapters on a transformer's linear projections, as weight parametrizations: add, disable (the KL reference
of a LoRA run), merge (the file a run writes)."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from worldmodels.errors import ConfigError


class LoRAWeight(nn.Module):
    """Weight parametrization ``W -> W + (alpha / r) B A`` (``A`` Kaiming-uniform, ``B`` zero: the adapted model
    starts equal to the base). A parametrization rather than a wrapper module, because MineWorld's attention and MLP
    read ``linear.weight`` directly (fused projections)."""

    def __init__(self, out_features: int, in_features: int, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        a = (torch.rand(rank, in_features, generator=generator) * 2 - 1) * bound
        self.lora_A = nn.Parameter(a)
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = alpha / rank
        self.enabled = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return weight
        return weight + self.scale * (self.lora_B @ self.lora_A).to(weight.dtype)


def add_lora(transformer: nn.Module, *, rank: int, alpha: float, targets: list[str], seed: int) -> list[nn.Parameter]:
    """Freeze ``transformer`` and add LoRA adapters to its ``targets`` projections; returns the adapter parameters."""
    transformer.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    params: list[nn.Parameter] = []
    for name, module in transformer.named_modules():
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            weight = module.weight
            lora = LoRAWeight(weight.shape[0], weight.shape[1], rank, alpha, generator).to(weight.device)
            parametrize.register_parametrization(module, "weight", lora)
            params += [lora.lora_A, lora.lora_B]
    if not params:
        raise ConfigError(
            f"no LoRA target {targets} found in the transformer; name linear layers it has in model.lora_targets, "
            "or train every weight with model.lora_rank=0"
        )
    return params


def lora_modules(model: nn.Module) -> list[LoRAWeight]:
    """Every LoRA adapter in ``model``."""
    return [m for m in model.modules() if isinstance(m, LoRAWeight)]


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """The base model (the KL reference of a LoRA run)."""
    modules = lora_modules(model)
    for m in modules:
        m.enabled = False
    try:
        yield
    finally:
        for m in modules:
            m.enabled = True


def merged_copy(model: nn.Module) -> nn.Module:
    """``model`` itself without LoRA, else a copy with every adapter merged into its weight (plain state-dict keys)."""
    if not lora_modules(model):
        return model
    model = copy.deepcopy(model)
    for module in list(model.modules()):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
