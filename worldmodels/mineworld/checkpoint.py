"""Reading official MineWorld checkpoints and writing/reading our safetensors exports.

Official layout (``huggingface.co/microsoft/mineworld``, mineworld.md §1.2)::

    checkpoints/<name>.ckpt          torch.save({"state_dict": {"transformer.*", "tokenizer.model.*"}, ...})
    checkpoints/vae/config.json      diffusers VQModel config
    checkpoints/vae/vae.ckpt         {"state_dict": {"model.*"}} or a plain dict (read only if <name>.ckpt lacks
                                     tokenizer weights)
    configs/<name>.yaml

Pickles are read with ``torch.load(weights_only=True)``: plain tensors and containers only, never code (the
official loader ran on torch 2.6, whose ``torch.load`` defaults to ``weights_only=True``, so official files load).
Everything we write is safetensors with the configs as JSON metadata.

This module is file IO on state dicts and configs; it never builds a model. :meth:`MineWorld.from_checkpoint
<worldmodels.mineworld.model.MineWorld.from_checkpoint>` builds one from what :func:`load_checkpoint` reads, and the
functions that take a model (:func:`load_weights`, :func:`save_safetensors`) touch only its state dict and configs
(:class:`MineWorldWeights`), so imports run one way: model -> checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from worldmodels.errors import CheckpointError, ConfigError, MissingFileError, UnsafePickleError, refused_pickle_reason
from worldmodels.mineworld.config import MineWorldConfig, get_preset
from worldmodels.mineworld.sampling import SamplingConfig
from worldmodels.mineworld.vq import load_vq_config
from worldmodels.weights import save_safetensors_file

SAFETENSORS_KIND = "rlir.mineworld"
_SHOWN = 5


class MineWorldWeights(Protocol):
    """What checkpoint IO touches of a model: a :class:`~worldmodels.mineworld.model.MineWorld` has all of it."""

    config: MineWorldConfig
    tokenizer: Any
    """The VQ tokenizer; its ``config`` is the diffusers ``VQModel`` config dict."""

    def state_dict(self) -> Mapping[str, torch.Tensor]: ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any: ...


def torch_load_weights(path: str | Path, what: str) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafePickleError(
            f"refusing to load {what} {str(path)!r}: its pickle references {refused_pickle_reason(str(err))}, which "
            "could run code, and a weights file holds only tensors and plain containers. Re-export the weights as a "
            "plain state dict (or safetensors) from a trusted environment."
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {what} {str(path)!r}: {err}") from None


def read_official_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an official ``.ckpt`` (``torch.load(...)["state_dict"]``)."""
    obj = torch_load_weights(path, "MineWorld checkpoint")
    if not isinstance(obj, Mapping) or "state_dict" not in obj:
        keys = list(obj)[:8] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(f"{path} has no 'state_dict' entry (found {keys}); expected an official MineWorld .ckpt")
    return _tensor_dict(obj["state_dict"], path)


def read_vae_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tokenizer weights from an official ``vae.ckpt``, renamed ``model.*`` -> ``tokenizer.model.*``.

    Like the official ``VAE.init_from_ckpt``: the ``state_dict`` entry if present, else the whole dict; keys that
    do not start with ``model.`` (e.g. training losses) are ignored, as ``load_state_dict(strict=False)`` does.
    """
    obj = torch_load_weights(path, "VQ tokenizer checkpoint")
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    weights = _tensor_dict(obj, path)
    return {"tokenizer." + k: v for k, v in weights.items() if k.startswith("model.")}


def _tensor_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (mapping of names to tensors), got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state dict entries {bad[:_SHOWN]} are not tensors")
    return dict(obj)


def state_dict_diff(expected: Mapping[str, tuple[int, ...]], given: Mapping[str, torch.Tensor]) -> str:
    """Readable description of missing / unexpected / mis-shaped keys ('' when they match)."""

    def listing(title: str, items: list[str]) -> str:
        more = f" ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
        return f"{len(items)} {title}: " + ", ".join(items[:_SHOWN]) + more

    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    shapes = sorted(
        f"{k} (checkpoint {list(given[k].shape)}, model {list(expected[k])})"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k])
    )
    parts = [
        listing(title, items)
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if items
    ]
    return "; ".join(parts)


def load_weights(model: MineWorldWeights, state_dict: Mapping[str, torch.Tensor], *, source: str) -> None:
    """Strictly load ``state_dict`` into ``model`` (dtype converted); raises CheckpointError with the diff."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    diff = state_dict_diff(expected, state_dict)
    if diff:
        raise CheckpointError(
            f"{source} does not match {model.config.name}: {diff}. Check that the config (yaml / preset) and the VQ "
            "config.json belong to this checkpoint."
        )
    with torch.no_grad():
        model.load_state_dict(state_dict, strict=True)


def resolve_config(config: str | Path | MineWorldConfig | None, ckpt: Path) -> MineWorldConfig:
    """A config from a :class:`MineWorldConfig`, a yaml path, a preset name, or (``None``) the official layout."""
    if isinstance(config, MineWorldConfig):
        return config
    if config is None:
        yaml_path = ckpt.parent.parent / "configs" / f"{ckpt.stem}.yaml"
        if yaml_path.is_file():
            return MineWorldConfig.from_yaml(yaml_path)
        try:
            return get_preset(ckpt.stem)
        except ConfigError:
            raise ConfigError(
                f"no config for {ckpt}: pass config= (an official configs/*.yaml, a preset name or a "
                f"MineWorldConfig), or put {yaml_path.name} at {yaml_path.parent}"
            ) from None
    path = Path(config)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        return MineWorldConfig.from_yaml(path)
    return get_preset(str(config))


def load_checkpoint(
    ckpt: str | Path,
    config: str | Path | MineWorldConfig | None = None,
    *,
    vae_config: str | Path | dict | None = None,
) -> tuple[MineWorldConfig, dict[str, Any], dict[str, torch.Tensor], Path | None]:
    """Read a checkpoint and what is needed to rebuild its model.

    Returns ``(config, vq_config, state_dict, vae_ckpt)``; ``vae_ckpt`` is where missing tokenizer weights would
    come from (``vae.ckpt`` next to the VQ ``config.json``; ``None`` for safetensors), see
    :func:`fill_tokenizer_weights`.
    """
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise MissingFileError(
            f"checkpoint {str(ckpt)!r} does not exist; put the file there (official MineWorld checkpoints are "
            "checkpoints/<name>.ckpt of huggingface.co/microsoft/mineworld, see worldmodels.registry)"
        )
    if ckpt.suffix == ".safetensors":
        state_dict, meta = read_safetensors(ckpt)
        model_config = _config_from_meta(meta, ckpt) if config is None else resolve_config(config, ckpt)
        if vae_config is None:
            if "vq_config" not in meta:
                raise ConfigError(f"{ckpt} stores no VQ config; pass vae_config=<path to config.json>")
            vq_config = json.loads(meta["vq_config"])
        else:
            vq_config = vae_config if isinstance(vae_config, dict) else load_vq_config(vae_config)
        return model_config, vq_config, state_dict, None

    model_config = resolve_config(config, ckpt)
    if isinstance(vae_config, dict):
        vq_config, vae_dir = vae_config, ckpt.parent / "vae"
    else:
        vae_path = Path(vae_config) if vae_config is not None else ckpt.parent / "vae" / "config.json"
        vq_config, vae_dir = load_vq_config(vae_path), vae_path.parent
    return model_config, vq_config, read_official_state_dict(ckpt), vae_dir / "vae.ckpt"


def fill_tokenizer_weights(
    state_dict: dict[str, torch.Tensor], expected: Sequence[str], vae_ckpt: Path | None, *, source: str
) -> None:
    """Take tokenizer weights missing from ``state_dict`` from ``vae_ckpt`` (in place).

    The official loader reads ``vae.ckpt`` first and the main checkpoint on top of it, so the main checkpoint's
    tokenizer weights win and ``vae.ckpt`` only matters for the ones it lacks.
    """
    missing = [k for k in expected if k.startswith("tokenizer.") and k not in state_dict]
    if not missing or vae_ckpt is None:
        return
    if not vae_ckpt.is_file():
        raise MissingFileError(
            f"{source} lacks {len(missing)} tokenizer weights (e.g. {missing[0]}), which are then read from "
            f"{vae_ckpt.name}, but it is missing: put MineWorld's checkpoints/vae/vae.ckpt in {vae_ckpt.parent}"
        )
    vae_weights = read_vae_state_dict(vae_ckpt)
    state_dict.update({k: vae_weights[k] for k in missing if k in vae_weights})


def _config_from_meta(meta: Mapping[str, str], path: Path) -> MineWorldConfig:
    if meta.get("kind") != SAFETENSORS_KIND or "mineworld_config" not in meta:
        raise ConfigError(
            f"{path} was not written by save_safetensors (no MineWorld config in its metadata); pass config="
        )
    return MineWorldConfig.from_dict(json.loads(meta["mineworld_config"]))


def save_safetensors(model: MineWorldWeights, path: str | Path) -> Path:
    """Write ``model``'s weights and configs to ``path`` (safetensors; configs as JSON metadata), so that
    ``MineWorld.from_checkpoint(path)`` rebuilds it without any other file."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_safetensors writes .safetensors files, got {path.name!r}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": "pt",
        "kind": SAFETENSORS_KIND,
        "mineworld_config": model.config.to_json(),
        "vq_config": json.dumps(model.tokenizer.config, sort_keys=True),
    }
    sampling = getattr(model, "sampling", None)
    if sampling is not None and sampling != SamplingConfig():  # files with the plain default stay as they were
        meta[SAMPLING_KEY] = json.dumps(dataclasses.asdict(sampling), sort_keys=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors_file(tensors, path, meta)
    return path


SAMPLING_KEY = "sampling"
"""Metadata key of a model's default :class:`SamplingConfig` (its generation defaults, as a Hugging Face model's
``generation_config.json``): what envs and ``rlir eval`` sample with unless told otherwise."""


def stored_sampling(path: str | Path) -> SamplingConfig | None:
    """The default :class:`SamplingConfig` a ``.safetensors`` written by :func:`save_safetensors` stores, or None
    (official ``.ckpt`` files and files saved with the plain default store none)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            stored = (f.metadata() or {}).get(SAMPLING_KEY)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read safetensors file {str(path)!r}: {err}") from None
    if stored is None:
        return None
    try:
        return SamplingConfig(**json.loads(stored))
    except (TypeError, ValueError) as err:  # ConfigError is a ValueError
        raise CheckpointError(
            f"{path} stores a malformed default sampling {stored!r} ({err}); rewrite it with save_safetensors"
        ) from None


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state_dict, metadata)`` of a safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"cannot read safetensors file {str(path)!r}: {err}") from None
    return tensors, meta
