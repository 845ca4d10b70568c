"""IDMs by name: the official VPT IDM under ``$RLIR_HOME`` and the bundled Crafter IDMs, or any file path."""

from __future__ import annotations

from pathlib import Path

import torch

from worldmodels.bundled import read_pins
from worldmodels.errors import ConfigError, MissingFileError
from worldmodels.registry import rlir_home

VPT_SOURCE = (
    "download https://openaipublic.blob.core.windows.net/minecraft-rl/idm/4x_idm.model and "
    "https://openaipublic.blob.core.windows.net/minecraft-rl/idm/4x_idm.weights"
)

BUNDLED_IDMS: dict[str, tuple[Path, str | None]] = {}
"""Bundled IDM name -> (safetensors path, pinned sha256). Filled by :func:`register_bundled_idm`."""


def register_bundled_idm(name: str, path: Path, sha256: str | None) -> None:
    BUNDLED_IDMS[name] = (Path(path), sha256)


BUNDLED_IDM_DIR = Path(__file__).with_name("bundled")
REWARD_IDM = "crafter-idm-reward"
"""The GRPO reward of the embedded world (trained on the first half of the training recording)."""
HELDOUT_IDM = "crafter-idm-heldout"
"""Every reported Crafter score (another recording, seed and width than the reward IDM)."""
REWARD_ENSEMBLE = "crafter-idm-ensemble"
"""Three reward IDMs, each trained on its own recording of the v2 behaviour policy (seeds 201, 202, 203): data and
seeds disjoint from each other and from the held-out IDM's. As a reward IDM name it stands for all three."""
IDM_ENSEMBLES: dict[str, tuple[str, ...]] = {
    REWARD_ENSEMBLE: ("crafter-idm-reward-a", "crafter-idm-reward-b", "crafter-idm-reward-c"),
}
"""Ensemble name -> its member IDMs' names (:func:`expand_idm_names`)."""


def _register_bundled_idms() -> None:
    pins = read_pins(BUNDLED_IDM_DIR)
    for name in (REWARD_IDM, HELDOUT_IDM, *IDM_ENSEMBLES[REWARD_ENSEMBLE]):
        register_bundled_idm(name, BUNDLED_IDM_DIR / f"{name}.safetensors", pins.get(f"{name}.safetensors"))


def expand_idm_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """``names`` with every ensemble name (:data:`IDM_ENSEMBLES`) replaced by its members, in order."""
    return [member for name in names for member in IDM_ENSEMBLES.get(str(name), (name,))]


_register_bundled_idms()


def load_idm(name_or_path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Load an IDM: ``"vpt-4x-idm"`` (files under ``$RLIR_HOME/idm/``), a bundled Crafter IDM name
    (``"crafter-idm-heldout"``, ``"crafter-idm-reward"``), a VPT ``.weights`` file (its ``.model`` next to it) or a
    Crafter IDM ``.safetensors`` file."""
    text = str(name_or_path)
    if text in BUNDLED_IDMS:
        path, sha256 = BUNDLED_IDMS[text]
        from evaluation.idm.crafter import CrafterIDM

        return CrafterIDM.load(path, device=device, expected_sha256=sha256)
    if text == "vpt-4x-idm":
        directory = rlir_home() / "idm"
        model, weights = directory / "4x_idm.model", directory / "4x_idm.weights"
        for path in (model, weights):
            if not path.is_file():
                raise MissingFileError(f"the VPT IDM needs {path}; {VPT_SOURCE} into {directory}/")
        return _load_vpt(weights, device, dtype)
    path = Path(text).expanduser()
    if path.suffix == ".weights":
        if not path.is_file() or not path.with_suffix(".model").is_file():
            raise MissingFileError(f"a VPT IDM needs {path} and {path.with_suffix('.model')} next to it; {VPT_SOURCE}")
        return _load_vpt(path, device, dtype)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise MissingFileError(f"IDM file {path} does not exist")
        from evaluation.idm.crafter import CrafterIDM

        return CrafterIDM.load(path, device=device)
    if text in IDM_ENSEMBLES:
        raise ConfigError(f"{text!r} names an ensemble of {len(IDM_ENSEMBLES[text])} IDMs "
                          f"({', '.join(IDM_ENSEMBLES[text])}); load them one by one (expand_idm_names), or pass it as "
                          "a reward IDM (reward.idm), which averages them")  # fmt: skip
    known = ["vpt-4x-idm", *sorted(BUNDLED_IDMS)]
    raise ConfigError(f"unknown IDM {text!r}: use one of {known}, a VPT .weights file, or a Crafter IDM "
                      f".safetensors (reward ensembles: {sorted(IDM_ENSEMBLES)})")  # fmt: skip


def _load_vpt(weights: Path, device, dtype):
    from evaluation.idm.vpt import VPTInverseDynamicsModel

    return VPTInverseDynamicsModel.from_files(weights.with_suffix(".model"), weights, device=device, dtype=dtype)
