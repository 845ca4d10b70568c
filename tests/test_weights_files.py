"""Files we write: byte-reproducible safetensors, weights identified by their content, and modes set by the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from worldmodels.weights import save_safetensors_file, tensors_sha256

ROOT = Path(__file__).resolve().parents[1]

WRITE = """
import sys, torch
from worldmodels.weights import save_safetensors_file
g = torch.Generator().manual_seed(0)
tensors = {"b.weight": torch.randn(3, 4, generator=g), "a.bias": torch.arange(5, dtype=torch.int64),
           "c": torch.ones(2, dtype=torch.bfloat16), "flag": torch.tensor([True, False])}
meta = {"zeta": "1", "alpha": "2", "kind": "test", "config": '{"x": 1}'}
if sys.argv[2] == "reversed":
    tensors, meta = dict(reversed(tensors.items())), dict(reversed(meta.items()))
save_safetensors_file(tensors, sys.argv[1], meta)
"""


def test_equal_tensors_give_equal_bytes_across_processes(tmp_path):
    """safetensors' own writer orders the metadata by a per-process hash seed: two runs wrote different files."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for i, order in enumerate(("given", "reversed", "given")):
        env["PYTHONHASHSEED"] = str(i)  # each process hashes strings differently
        subprocess.run([sys.executable, "-c", WRITE, str(tmp_path / f"{i}.safetensors"), order], env=env, check=True)
    files = [(tmp_path / f"{i}.safetensors").read_bytes() for i in range(3)]
    assert files[0] == files[1] == files[2]
    with safe_open(str(tmp_path / "0.safetensors"), framework="pt") as f:  # the official reader reads it
        assert f.metadata() == {"zeta": "1", "alpha": "2", "kind": "test", "config": '{"x": 1}'}
        assert f.get_tensor("a.bias").tolist() == [0, 1, 2, 3, 4] and f.get_tensor("flag").tolist() == [True, False]
        assert f.get_tensor("c").dtype == torch.bfloat16 and f.get_tensor("b.weight").shape == (3, 4)


def test_weights_identity_is_the_content_of_the_tensors():
    g = torch.Generator().manual_seed(1)
    tensors = {"w": torch.randn(4, 3, generator=g), "b": torch.zeros(3)}
    digest = tensors_sha256(tensors)
    assert tensors_sha256(dict(reversed(tensors.items()))) == digest  # order does not matter
    assert tensors_sha256({k: v.clone() for k, v in tensors.items()}) == digest
    changed = [
        {"w": tensors["w"].clone().index_put_((torch.tensor([0]), torch.tensor([0])), torch.tensor(9.0)),
         "b": tensors["b"]},  # one value
        {"w": tensors["w"].reshape(3, 4), "b": tensors["b"]},  # shape
        {"w": tensors["w"].double(), "b": tensors["b"]},  # dtype
        {"w2": tensors["w"], "b": tensors["b"]},  # name
    ]  # fmt: skip
    assert len({digest, *map(tensors_sha256, changed)}) == 5


def test_a_model_saved_twice_has_one_identity_in_its_bundle(tmp_path):
    """Identity in bundles and on the leaderboard is the content hash: the same tensors, any file."""
    from evaluation.evaluator import model_info_for
    from tests.world_models import tiny_mineworld
    from worldmodels.mineworld import MineWorld, save_safetensors

    model = tiny_mineworld()
    save_safetensors(model, tmp_path / "a.safetensors")
    save_safetensors(model, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    reloaded = MineWorld.from_checkpoint(tmp_path / "b.safetensors")
    first, second = model_info_for(model, "m", tmp_path / "a.safetensors"), model_info_for(reloaded, "m", None)
    assert first.weights_sha256 == second.weights_sha256 == tensors_sha256(model.state_dict())
    assert second.checkpoint_sha256 is None


def test_output_files_honour_the_umask(tmp_path):
    """Suites, bundles, item records, videos and weights were created 0600 (mkstemp's mode) whatever the umask."""
    from evaluation.bundle import save_video
    from evaluation.suites import SuiteItem, make_suite, save_suite
    from worldmodels.runtime.files import write_json

    old = os.umask(0o022)
    try:
        save_safetensors_file({"x": torch.zeros(2)}, tmp_path / "w.safetensors")
        save_video(np.zeros((2, 4, 4, 3), np.uint8), tmp_path / "bundle", "clip")
        write_json(tmp_path / "items" / "clip.json", {"id": "clip"}, indent=None, durable=True)  # the evaluator's records
        item = SuiteItem(id="i", context_frames=np.zeros((1, 4, 4, 3), np.uint8), context_actions=np.zeros((0,), np.int64),
                         actions=np.zeros((2,), np.int64), ground_truth=None)  # fmt: skip
        save_suite(make_suite("s", 1, "crafter", [item]), tmp_path / "suite")
    finally:
        os.umask(old)
    written = [tmp_path / "w.safetensors", tmp_path / "bundle" / "videos" / "clip.npz", tmp_path / "items" / "clip.json",
               tmp_path / "suite" / "data.npz", tmp_path / "suite" / "manifest.json"]  # fmt: skip
    assert {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {
        str(p.relative_to(tmp_path)): "0o644" for p in written
    }
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]  # no temporary file left behind


@pytest.mark.parametrize("dtype", [torch.complex64])
def test_unstorable_dtypes_are_refused_by_name(tmp_path, dtype):
    from worldmodels.errors import ConfigError

    with pytest.raises(ConfigError, match="tensor 'z' has dtype torch.complex64"):
        save_safetensors_file({"z": torch.zeros(2, dtype=dtype)}, tmp_path / "z.safetensors")
