"""scripts/replace_tokenizer_decoder.py: a fine-tuned decoder goes into a MineWorld file only when the tokens stay the
same; the transformer, the tokenizer's encoder and codebook and the default sampling are kept bit for bit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from worldmodels.mineworld import TINY_VQ_CONFIG, MineWorld, SamplingConfig, get_preset, save_safetensors
from worldmodels.mineworld.vq import VQTokenizer
from worldmodels.training.tokenizer import save_tokenizer
from worldmodels.training.tokenizer_decoder import DECODER_PREFIXES

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("replace_tokenizer_decoder",
                                               ROOT / "scripts" / "replace_tokenizer_decoder.py")
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)


def tokenizer_like(model: MineWorld, *, change: str) -> VQTokenizer:
    """A copy of ``model``'s tokenizer with the parameters whose names start with ``change`` perturbed."""
    tokenizer = VQTokenizer(model.tokenizer.config, model.spec.frame_size)
    tokenizer.model.load_state_dict(model.tokenizer.model.state_dict())
    with torch.no_grad():
        for name, param in tokenizer.model.named_parameters():
            if name.startswith(change):
                param.add_(0.01 * torch.randn_like(param))
    return tokenizer.eval()


def test_the_decoder_is_replaced_and_everything_else_kept(tmp_path):
    torch.manual_seed(0)
    model = MineWorld.from_config(get_preset("tiny"), TINY_VQ_CONFIG, sampling=SamplingConfig(top_p=0.9)).eval()
    path = save_safetensors(model, tmp_path / "wm.safetensors")
    (tmp_path / "wm.json").write_text(json.dumps({"sha256": "old", "steps": 3}))
    tuned = tokenizer_like(model, change="decoder.")
    save_tokenizer(tuned, tmp_path / "tok.safetensors")

    sha256 = script.replace_decoder(path, tmp_path / "tok.safetensors")
    loaded = MineWorld.from_checkpoint(path)
    assert loaded.sampling == SamplingConfig(top_p=0.9)
    before, after = model.state_dict(), loaded.state_dict()
    for key, value in after.items():
        tokenizer_key = key.removeprefix("tokenizer.model.")
        if key.startswith("tokenizer.model.") and tokenizer_key.startswith(DECODER_PREFIXES):
            assert torch.equal(value, tuned.model.state_dict()[tokenizer_key]), key
        else:
            assert torch.equal(value, before[key]), key
    assert any(not torch.equal(after[k], before[k]) for k in after if k.startswith("tokenizer.model.decoder."))
    summary = json.loads((tmp_path / "wm.json").read_text())
    assert summary["sha256"] == sha256 and summary["steps"] == 3
    assert summary["tokenizer_decoder"]["name"] == "tok.safetensors"


def test_a_tokenizer_that_tokenizes_differently_is_refused(tmp_path):
    torch.manual_seed(1)
    model = MineWorld.from_config(get_preset("tiny"), TINY_VQ_CONFIG).eval()
    path = save_safetensors(model, tmp_path / "wm.safetensors")
    original = path.read_bytes()
    for part in ("encoder.", "quantize."):
        save_tokenizer(tokenizer_like(model, change=part), tmp_path / "tok.safetensors")
        with pytest.raises(SystemExit, match=f"tokenizes differently.*{part}"):
            script.replace_decoder(path, tmp_path / "tok.safetensors")
        assert path.read_bytes() == original  # nothing written
