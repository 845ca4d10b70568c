"""Named world models: which files each needs, where they live, how they are checked and loaded.

Files of downloadable models live under ``$RLIR_HOME`` (default ``~/.cache/rlir``), keeping the official relative
layout; bundled models (files shipped inside the package) register with their own ``root``. A sha256 is checked
when known (the official MineWorld hashes are not published, so they are ``None``).

    >>> model = load_world_model("mineworld-300m-16f", device="cpu")        # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from worldmodels import hashing
from worldmodels.errors import ConfigError, IntegrityError, MissingFileError


@dataclass(frozen=True)
class ModelFile:
    """One file of a registered model."""

    role: str
    """What the loader uses it for (``"checkpoint"``, ``"config"``, ``"vae_config"``, ``"vae_checkpoint"``)."""
    path: str
    """Relative to the entry's root (``$RLIR_HOME`` unless the entry has its own root)."""
    sha256: str | None = None
    """Expected hex digest, or ``None`` when unknown (not checked)."""
    required: bool = True
    """Optional files are passed to the loader only if present."""


Loader = Callable[..., Any]
"""``loader(paths: dict[role, Path], *, device, dtype, **kwargs) -> model``."""


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    files: tuple[ModelFile, ...]
    loader: Loader
    root: Path | None = None
    """Directory the file paths are relative to; ``None`` means :func:`rlir_home`."""
    source: str = ""
    """Where the files come from (shown when one is missing)."""
    description: str = ""

    def base(self) -> Path:
        return self.root if self.root is not None else rlir_home()


REGISTRY: dict[str, RegistryEntry] = {}


def rlir_home() -> Path:
    """``$RLIR_HOME``, default ``~/.cache/rlir``."""
    return Path(os.environ.get("RLIR_HOME", "~/.cache/rlir")).expanduser()


def register(
    name: str,
    *,
    files: tuple[ModelFile, ...] | list[ModelFile],
    loader: Loader,
    root: str | Path | None = None,
    source: str = "",
    description: str = "",
    overwrite: bool = False,
) -> RegistryEntry:
    """Add a named model. ``root`` (e.g. a package directory for bundled weights) overrides ``$RLIR_HOME``."""
    if name in REGISTRY and not overwrite:
        raise ConfigError(f"a world model named {name!r} is already registered; pass overwrite=True to replace it")
    roles = [f.role for f in files]
    if len(set(roles)) != len(roles):
        raise ConfigError(f"{name}: file roles must be unique, got {roles}")
    entry = RegistryEntry(
        name=name,
        files=tuple(files),
        loader=loader,
        root=None if root is None else Path(root),
        source=source,
        description=description,
    )
    REGISTRY[name] = entry
    return entry


def registered() -> list[str]:
    """Names of all registered models."""
    return sorted(REGISTRY)


_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file (memoised per path, size and mtime within the process)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = hashing.sha256_file(path)
    return _HASHES[key]


def resolve_checkpoint_path(name_or_path: str | Path) -> Path | None:
    """The checkpoint file behind a registered name or a path (``None`` if there is none)."""
    if isinstance(name_or_path, str) and name_or_path in REGISTRY:
        return resolve_files(name_or_path).get("checkpoint")
    path = Path(name_or_path).expanduser()
    return path if path.is_file() else None


def resolve_files(name: str) -> dict[str, Path]:
    """Paths of ``name``'s files by role, after checking that required files exist and known hashes match."""
    entry = _entry(name)
    base = entry.base()
    paths: dict[str, Path] = {}
    missing: list[ModelFile] = []
    for spec in entry.files:
        path = base / spec.path
        if path.is_file():
            paths[spec.role] = path
        elif spec.required:
            missing.append(spec)
    if missing:
        lines = [
            f"  {base / f.path}  ({f.role}: put {Path(f.path).name!r} in {(base / f.path).parent})" for f in missing
        ]
        where = "set $RLIR_HOME to use another directory" if entry.root is None else "the package is incomplete"
        raise MissingFileError(
            f"world model {name!r} is missing {len(missing)} file(s):\n" + "\n".join(lines) + f"\n({where}.) "
            + entry.source
        )
    for spec in entry.files:
        if spec.sha256 and spec.role in paths:
            actual = sha256_file(paths[spec.role])
            if actual != spec.sha256.lower():
                raise IntegrityError(
                    f"{paths[spec.role]} has sha256 {actual}, but {name!r} pins {spec.sha256}: the file is corrupted "
                    "or not the expected one; download it again"
                )
    return paths


def _entry(name: str) -> RegistryEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"no world model named {name!r}; registered: {registered()}") from None


def load_world_model(
    name_or_path: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
):
    """Load a registered model by name, or a checkpoint by path: an NFD ``.safetensors`` (recognised by its metadata,
    :func:`worldmodels.nfd.is_nfd_checkpoint`), else a MineWorld one (``.safetensors`` or ``.ckpt``).

    ``kwargs`` go to the loader (for MineWorld: ``config``, ``vae_config``, ``reference_frames``, ``sampling``,
    ``compile``).
    """
    if isinstance(name_or_path, str) and name_or_path in REGISTRY:
        entry = REGISTRY[name_or_path]
        return entry.loader(resolve_files(name_or_path), device=device, dtype=dtype, **kwargs)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        from worldmodels.nfd.model import is_nfd_checkpoint, load_nfd

        if is_nfd_checkpoint(path):  # NFD safetensors carry their configs (kwargs: reference_frames, sampling)
            return load_nfd(path, device=device, dtype=dtype, **kwargs)
        from worldmodels.mineworld import MineWorld

        config = kwargs.pop("config", None)
        return MineWorld.from_checkpoint(path, config, device=device, dtype=dtype, **kwargs)
    if path.suffix or os.sep in str(name_or_path):
        raise MissingFileError(f"world model file {str(path)!r} does not exist")
    raise ConfigError(f"no world model named {str(name_or_path)!r}; registered: {registered()} (or pass a file path)")


# --- MineWorld --------------------------------------------------------------------------------------------------

MINEWORLD_SOURCE = (
    "Official MineWorld files come from huggingface.co/microsoft/mineworld (checkpoints/<name>.ckpt, "
    "checkpoints/vae/config.json, checkpoints/vae/vae.ckpt; taken down in May 2025 - the maintainers point to an "
    "unofficial copy with the same relative paths at modelscope.cn/models/AI-ModelScope/mineworld) and "
    "configs/<name>.yaml from github.com/microsoft/mineworld. Keep the relative paths under <RLIR_HOME>/mineworld/."
)


def load_mineworld_files(
    paths: Mapping[str, Path],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    preset: str | None = None,
    **kwargs: Any,
):
    """Loader for MineWorld entries: ``checkpoint`` (+ optional ``config`` yaml, else ``preset``; ``vae_config``)."""
    from worldmodels.mineworld import MineWorld

    config = kwargs.pop("config", None) or paths.get("config") or preset
    vae_config = kwargs.pop("vae_config", None) or paths.get("vae_config")
    return MineWorld.from_checkpoint(
        paths["checkpoint"], config, vae_config=vae_config, device=device, dtype=dtype, **kwargs
    )


def _register_official_mineworld() -> None:
    for stem in ("300M_16f", "700M_16f", "700M_32f", "1200M_16f", "1200M_32f"):
        register(
            "mineworld-" + stem.lower().replace("_", "-"),
            files=(
                ModelFile("checkpoint", f"mineworld/checkpoints/{stem}.ckpt"),
                # the yaml equals the built-in preset; it is used when present, as the official code does
                ModelFile("config", f"mineworld/configs/{stem}.yaml", required=False),
                ModelFile("vae_config", "mineworld/checkpoints/vae/config.json"),
                # read only if the .ckpt lacks tokenizer.* weights (then a missing file is reported by the loader)
                ModelFile("vae_checkpoint", "mineworld/checkpoints/vae/vae.ckpt", required=False),
            ),
            loader=lambda paths, _stem=stem, **kw: load_mineworld_files(paths, preset=_stem, **kw),
            source=MINEWORLD_SOURCE,
            description=f"MineWorld {stem} (microsoft/mineworld), Minecraft 224x384, naive or diagonal decoding",
        )


_register_official_mineworld()


# --- the bundled Crafter world models ----------------------------------------------------------------------------

CRAFTER_MODEL_NAME = "crafter-mineworld"
CRAFTER_MODEL_FILE = "crafter-mineworld.safetensors"
CRAFTER_NFD_NAME = "crafter-nfd"
BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    CRAFTER_MODEL_NAME: (CRAFTER_MODEL_FILE, "MineWorld architecture trained on real Crafter (500k frames, one token "
                                             "per 8x8 cell, 1,024 codes), 72x72, 17 actions"),
    "crafter-mineworld-v1": ("crafter-mineworld-v1.safetensors", "the first crafter-mineworld (100k frames, 512 "
                             "codes, 43 CPU-minutes), kept as the baseline v2 is measured against"),
    "crafter-mineworld-rlir": ("crafter-mineworld-rlir.safetensors", "crafter-mineworld post-trained with RLIR (GRPO, "
                               "the reward IDM ensemble's probability of the commanded action plus a pixel term, "
                               "KL to the base)"),
    CRAFTER_NFD_NAME: ("crafter-nfd.safetensors", "NFD (next-frame diffusion) trained on real Crafter, 72x72, 17 actions"),
}
"""Name -> (file in ``worldmodels/bundled/``, description); ``worldmodels/bundled/MODEL_CARD.md`` describes them."""


def load_bundled(paths: Mapping[str, Path], *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 **kwargs: Any):  # fmt: skip
    """Loader for bundled models: their files carry their configs, so envs' ``config=None`` / ``vae_config=None``
    are dropped and the file type (MineWorld or NFD) decides the loader."""
    kwargs = {k: v for k, v in kwargs.items() if not (k in ("config", "vae_config") and v is None)}
    return load_world_model(paths["checkpoint"], device=device, dtype=dtype, **kwargs)


def _register_bundled() -> None:
    from worldmodels.bundled import bundled_dir, read_pins

    root = bundled_dir()
    pins = read_pins(root)
    for name, (file, description) in BUNDLED_MODELS.items():
        register(
            name,
            files=(ModelFile("checkpoint", file, sha256=pins.get(file)),),
            loader=load_bundled,
            root=root,
            source="It ships with rlir (worldmodels/bundled/); rebuild it with scripts/build_embedded.sh.",
            description=description,
        )


_register_bundled()
