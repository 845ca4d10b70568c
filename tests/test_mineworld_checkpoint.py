"""MineWorld checkpoint IO: official yaml/.ckpt/vae layout, pickle safety, key diffs, safetensors, registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodels import registry
from worldmodels.errors import CheckpointError, ConfigError, IntegrityError, MissingFileError, UnsafePickleError
from worldmodels.mineworld import PRESETS, TINY_VQ_CONFIG, MineWorld, MineWorldConfig, get_preset, save_safetensors

TINY = get_preset("tiny")

OFFICIAL_300M_YAML = """\
model:
  target: lvm.LlamaLVM
  params:
    model_class: lvm.LlamaForCausalLM
    tokenizer_config:
      target: vae.VAE
      params:
        config_path: checkpoints/vae/config.json
        ckpt_path: checkpoints/vae/vae.ckpt
    transformer_config:
      target: transformers.LlamaConfig
      params:
        max_position_embeddings: 5552
        hidden_size: 1024
        intermediate_size: 4096
        num_attention_heads: 16
        num_key_value_heads: 4
        num_hidden_layers: 20
        initializer_range: 0.02
        rope_theta: 10000.0
        torch_dtype: bfloat16
        rms_norm_eps: 1.0e-05
        vocab_size: 8262
        attention_bias: false
        mlp_bias: false
        token_num: 347
        image_num: 336
        frame: 16
"""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> MineWorld:
    torch.manual_seed(0)
    return MineWorld.from_config(TINY, TINY_VQ_CONFIG).eval()


def tiny_yaml() -> str:
    """An official-format yaml for the tiny model: Llama fields plus our layout fields."""
    extra = (
        "        image_grid: [4, 6]\n        frame_size: [32, 48]\n        image_vocab_size: 64\n"
        "        name: mineworld-tiny\n"
    )
    return (
        OFFICIAL_300M_YAML.replace("5552", "140").replace("1024", "64").replace("4096", "128")
        .replace("num_attention_heads: 16", "num_attention_heads: 4")
        .replace("num_key_value_heads: 4", "num_key_value_heads: 2")
        .replace("num_hidden_layers: 20", "num_hidden_layers: 2").replace("8262", "134")
        + extra
    )  # fmt: skip


def write_official_layout(root: Path, model: MineWorld, *, with_tokenizer: bool = True, vae_ckpt: bool = True) -> Path:
    """``checkpoints/tiny.ckpt``, ``checkpoints/vae/{config.json,vae.ckpt}``, ``configs/tiny.yaml`` under ``root``."""
    (root / "checkpoints" / "vae").mkdir(parents=True)
    (root / "configs").mkdir()
    (root / "configs" / "tiny.yaml").write_text(tiny_yaml())
    (root / "checkpoints" / "vae" / "config.json").write_text(json.dumps(TINY_VQ_CONFIG))
    state = {k: v.half() for k, v in model.state_dict().items()}  # official weights are stored in low precision
    tokenizer = {k[len("tokenizer.") :]: v for k, v in state.items() if k.startswith("tokenizer.")}
    if not with_tokenizer:
        state = {k: v for k, v in state.items() if not k.startswith("tokenizer.")}
    if vae_ckpt:
        extra = {"loss.discriminator.weight": torch.zeros(3)}  # ignored, like load_state_dict(strict=False)
        torch.save({"state_dict": tokenizer | extra}, root / "checkpoints" / "vae" / "vae.ckpt")
    ckpt = root / "checkpoints" / "tiny.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1000, "lr_schedulers": []}, ckpt)
    return ckpt


def assert_same_weights(loaded: MineWorld, model: MineWorld, *, half: bool = True) -> None:
    expected = model.state_dict()
    got = loaded.state_dict()
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v.half().float() if half else v), k


# --- yaml ------------------------------------------------------------------------------------------------------------


def test_official_yaml_gives_the_preset(tmp_path):
    path = tmp_path / "300M_16f.yaml"
    path.write_text(OFFICIAL_300M_YAML)
    assert MineWorldConfig.from_yaml(path) == PRESETS["300M_16f"]
    path.write_text(OFFICIAL_300M_YAML.replace("1024", "2048").replace("4096", "8192").replace("16\n", "32\n")
                    .replace("5552", "11104"))  # fmt: skip
    config = MineWorldConfig.from_yaml(path, name="mineworld-1200m-32f")
    assert config == PRESETS["1200M_32f"]


def test_yaml_without_optional_llama_fields_uses_llama_defaults(tmp_path):
    path = tmp_path / "x.yaml"
    text = OFFICIAL_300M_YAML.replace("        rms_norm_eps: 1.0e-05\n", "")
    path.write_text(text.replace("        rope_theta: 10000.0\n", ""))
    config = MineWorldConfig.from_yaml(path)
    assert (config.rms_norm_eps, config.rope_theta) == (1e-6, 10000.0)  # transformers.LlamaConfig defaults


@pytest.mark.parametrize(
    "edit, match",
    [(("        hidden_size: 1024\n", ""), "hidden_size"),
     (("attention_bias: false", "attention_bias: true"), "attention_bias"),
     (("transformer_config", "transformer_cfg"), "transformer_config"),
     (("num_key_value_heads: 4", "num_key_value_heads: 5"), "num_key_value_heads")],
)  # fmt: skip
def test_bad_yaml_is_refused(tmp_path, edit, match):
    path = tmp_path / "bad.yaml"
    path.write_text(OFFICIAL_300M_YAML.replace(*edit))
    with pytest.raises(ConfigError, match=match):
        MineWorldConfig.from_yaml(path)


def test_config_dict_round_trip_and_unknown_fields():
    assert MineWorldConfig.from_dict(json.loads(TINY.to_json())) == TINY
    with pytest.raises(ConfigError, match="unknown"):
        MineWorldConfig.from_dict(TINY.to_dict() | {"frames": 3})


# --- official checkpoints ---------------------------------------------------------------------------------------------


def test_official_layout_loads_and_generates_the_same(tmp_path, model):
    ckpt = write_official_layout(tmp_path, model)
    loaded = MineWorld.from_checkpoint(ckpt)  # config found at ../configs/tiny.yaml, VQ at vae/config.json
    assert loaded.config == TINY and loaded.tokenizer.config == TINY_VQ_CONFIG
    assert_same_weights(loaded, model)
    first = torch.zeros(1, 4, 6, dtype=torch.long)
    actions = np.zeros((1, 2, 9), dtype=np.int64)
    reference = MineWorld.from_config(TINY, TINY_VQ_CONFIG)
    reference.load_state_dict({k: v.half().float() for k, v in model.state_dict().items()})
    assert torch.equal(loaded.generate_tokens(first, actions, temperature=0),
                       reference.generate_tokens(first, actions, temperature=0))  # fmt: skip


def test_tokenizer_weights_fall_back_to_vae_ckpt(tmp_path, model):
    ckpt = write_official_layout(tmp_path, model, with_tokenizer=False)
    loaded = MineWorld.from_checkpoint(ckpt, tmp_path / "configs" / "tiny.yaml")
    assert_same_weights(loaded, model)
    # partly present: the main checkpoint's tokenizer weights win, vae.ckpt fills the gaps (official order)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    decoder_conv = "tokenizer.model.decoder.conv_out.weight"
    state[decoder_conv] = torch.zeros_like(model.state_dict()[decoder_conv])
    torch.save({"state_dict": state}, ckpt)
    loaded = MineWorld.from_checkpoint(ckpt)
    assert not loaded.state_dict()[decoder_conv].any()
    encoder_conv = "tokenizer.model.encoder.conv_in.weight"
    assert torch.equal(loaded.state_dict()[encoder_conv], model.state_dict()[encoder_conv].half().float())


def test_missing_vae_ckpt_names_the_file_and_directory(tmp_path, model):
    ckpt = write_official_layout(tmp_path, model, with_tokenizer=False, vae_ckpt=False)
    with pytest.raises(MissingFileError, match=r"lacks \d+ tokenizer weights.*vae\.ckpt") as err:
        MineWorld.from_checkpoint(ckpt)
    assert str(tmp_path / "checkpoints" / "vae") in str(err.value)
    with pytest.raises(MissingFileError, match="config.json"):
        MineWorld.from_checkpoint(ckpt, vae_config=tmp_path / "elsewhere" / "config.json")
    with pytest.raises(MissingFileError, match="does not exist"):
        MineWorld.from_checkpoint(tmp_path / "nope.ckpt", TINY)


def _touch(path):  # would run at unpickling time if the pickle were executed
    Path(path).write_text("pwned")


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (_touch, (self.path,))


def test_pickled_callables_are_refused_without_running_them(tmp_path, model):
    marker = tmp_path / "marker"
    ckpt = write_official_layout(tmp_path, model)
    torch.save({"state_dict": model.state_dict(), "callback": _Evil(str(marker))}, ckpt)
    with pytest.raises(UnsafePickleError, match="refusing") as refused:
        MineWorld.from_checkpoint(ckpt)
    assert not marker.exists()
    message = str(refused.value)  # our message names the global, and never passes on torch's unsafe advice
    assert "the global tests.test_mineworld_checkpoint._touch" in message
    assert "weights_only" not in message and "False" not in message


def test_key_and_shape_mismatches_give_a_readable_diff(tmp_path, model):
    ckpt = write_official_layout(tmp_path, model)
    state = dict(model.state_dict())
    del state["transformer.model.norm.weight"]
    state["transformer.model.extra.weight"] = torch.zeros(2)
    state["transformer.lm_head.weight"] = torch.zeros(10, 64)
    for i in range(2):  # many missing keys: a few shown, the rest counted
        for name in ("q", "k", "v", "o"):
            del state[f"transformer.model.layers.{i}.self_attn.{name}_proj.weight"]
    torch.save({"state_dict": state}, ckpt)
    with pytest.raises(CheckpointError) as err:
        MineWorld.from_checkpoint(ckpt)
    message = str(err.value)
    assert "9 missing keys" in message and "and 4 more" in message
    assert "1 unexpected keys: transformer.model.extra.weight" in message
    assert "1 shape mismatches: transformer.lm_head.weight (checkpoint [10, 64], model [134, 64])" in message
    torch.save({"weights": {}}, ckpt)
    with pytest.raises(CheckpointError, match="state_dict"):
        MineWorld.from_checkpoint(ckpt)


def test_config_resolution(tmp_path, model):
    ckpt = write_official_layout(tmp_path, model)
    (tmp_path / "configs" / "tiny.yaml").unlink()
    assert MineWorld.from_checkpoint(ckpt).config == TINY  # no yaml: the preset named like the checkpoint
    assert MineWorld.from_checkpoint(ckpt, "mineworld-tiny").config == TINY
    renamed = ckpt.rename(ckpt.with_name("custom.ckpt"))
    with pytest.raises(ConfigError, match="no config"):
        MineWorld.from_checkpoint(renamed)
    with pytest.raises(ConfigError, match="unknown MineWorld preset"):
        MineWorld.from_checkpoint(renamed, "tiny-2")


# --- safetensors ---------------------------------------------------------------------------------------------------


def test_safetensors_round_trip(tmp_path, model):
    path = save_safetensors(model, tmp_path / "export" / "tiny.safetensors")
    loaded = MineWorld.from_checkpoint(path)
    assert loaded.config == model.config and loaded.tokenizer.config == model.tokenizer.config
    assert_same_weights(loaded, model, half=False)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["mineworld_config"])["image_grid"] == [4, 6]
    with pytest.raises(CheckpointError, match="safetensors"):
        (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
        MineWorld.from_checkpoint(tmp_path / "broken.safetensors")


def test_a_models_default_sampling_travels_with_its_file_and_options_override_it(tmp_path, model):
    from safetensors import safe_open

    from worldmodels.mineworld import SamplingConfig

    plain = save_safetensors(model, tmp_path / "plain.safetensors")
    with safe_open(str(plain), framework="pt") as f:
        assert "sampling" not in f.metadata()  # files with the plain default are written as before
    assert MineWorld.from_checkpoint(plain).sampling == SamplingConfig()

    tuned = MineWorld.from_checkpoint(plain, sampling=SamplingConfig(top_p=0.9))
    path = save_safetensors(tuned, tmp_path / "top-p.safetensors")
    loaded = MineWorld.from_checkpoint(path)
    assert loaded.sampling == SamplingConfig(top_p=0.9)
    assert MineWorld.from_checkpoint(path, sampling=SamplingConfig(temperature=0.5)).sampling.top_p is None
    # what an env asks for: None keeps the default; a truncation given replaces the default's (they are exclusive)
    assert loaded.token_sampling(decoding=None, temperature=None, top_p=None, top_k=None) == SamplingConfig(top_p=0.9)
    assert loaded.token_sampling(temperature=0.7) == SamplingConfig(temperature=0.7, top_p=0.9)
    assert loaded.token_sampling(top_k=4) == SamplingConfig(top_k=4)
    assert loaded.token_sampling(top_p=1.0) == SamplingConfig()  # the whole distribution, exactly
    with pytest.raises(ConfigError, match="mutually exclusive"):
        loaded.token_sampling(top_p=0.5, top_k=4)

    meta = {"format": "pt", "kind": "rlir.mineworld"}
    with safe_open(str(path), framework="pt") as f:
        meta.update(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    from worldmodels.weights import save_safetensors_file

    save_safetensors_file(tensors, tmp_path / "bad.safetensors", {**meta, "sampling": '{"top_p": 2.0}'})
    with pytest.raises(CheckpointError, match="malformed default sampling.*top_p must lie in"):
        MineWorld.from_checkpoint(tmp_path / "bad.safetensors")


# --- registry ------------------------------------------------------------------------------------------------------


@pytest.fixture
def fresh_registry(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    monkeypatch.setenv("RLIR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_official_names_report_missing_files_with_their_source(fresh_registry):
    assert {"mineworld-300m-16f", "mineworld-700m-16f", "mineworld-700m-32f", "mineworld-1200m-16f",
            "mineworld-1200m-32f"} <= set(registry.registered())  # fmt: skip
    with pytest.raises(MissingFileError) as err:
        registry.load_world_model("mineworld-300m-16f")
    message = str(err.value)
    assert str(fresh_registry / "mineworld" / "checkpoints" / "300M_16f.ckpt") in message
    assert "put '300M_16f.ckpt' in " + str(fresh_registry / "mineworld" / "checkpoints") in message
    assert "vae/config.json" in message and "huggingface.co/microsoft/mineworld" in message
    assert "modelscope" in message and "300M_16f.yaml" not in message  # the yaml is optional


def test_official_layout_under_rlir_home_loads(fresh_registry, model):
    write_official_layout(fresh_registry / "mineworld", model)
    registry.register(
        "mineworld-tiny-test",
        files=(
            registry.ModelFile("checkpoint", "mineworld/checkpoints/tiny.ckpt"),
            registry.ModelFile("config", "mineworld/configs/tiny.yaml", required=False),
            registry.ModelFile("vae_config", "mineworld/checkpoints/vae/config.json"),
        ),
        loader=lambda paths, **kw: registry.load_mineworld_files(paths, preset="tiny", **kw),
    )
    loaded = registry.load_world_model("mineworld-tiny-test", reference_frames=1)
    assert loaded.reference_frames == 1
    assert_same_weights(loaded, model)


def test_bundled_models_are_checked_against_their_sha256(fresh_registry, tmp_path, model):
    bundle = tmp_path / "package"
    path = save_safetensors(model, bundle / "tiny.safetensors")
    digest = registry.sha256_file(path)

    def add(sha: str, overwrite: bool = False):
        registry.register("bundled-tiny", files=(registry.ModelFile("checkpoint", "tiny.safetensors", sha),),
                          loader=registry.load_mineworld_files, root=bundle, overwrite=overwrite)  # fmt: skip

    add(digest)
    assert_same_weights(registry.load_world_model("bundled-tiny"), model, half=False)
    with pytest.raises(ConfigError, match="already registered"):
        add(digest)
    add("0" * 64, overwrite=True)
    with pytest.raises(IntegrityError, match=digest):
        registry.load_world_model("bundled-tiny")
    assert_same_weights(registry.load_world_model(path), model, half=False)  # a plain path works too
    with pytest.raises(ConfigError, match="registered"):
        registry.load_world_model("no-such-model")
    with pytest.raises(MissingFileError):
        registry.load_world_model(tmp_path / "missing.safetensors")
