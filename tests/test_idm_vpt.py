"""evaluation.idm.vpt: the VPT inverse dynamics model, loaded from files written like the released ones.

The released 4x weights cannot be downloaded here, so the tests write a small model with the same structure and
key names (hidsize 64, impala_width 1, 8 conv3d channels, 4 heads), then compare the forward with a functional
reference written below from the documented math (shared/reference/vpt_idm.md sections 2-3 and 11).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import pickle
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evaluation.idm.base import InverseDynamicsModel
from evaluation.idm.vpt import (
    IDM_BUTTONS,
    OFFICIAL_4X_NET_KWARGS,
    VPTIDMConfig,
    VPTInverseDynamicsModel,
    argmax_agreement,
    expected_state_dict_shapes,
    window_plan,
)
from worldmodels.actions.minecraft import ACTION_KEYS, validate_env_action
from worldmodels.errors import CheckpointError, ConfigError, FrameError, UnsafePickleError

HID, HEADS, C0, CHANS, RATIO, BLOCKS = 64, 4, 8, (16, 32, 32), 4, 2
TINY_NET_KWARGS = {
    **copy.deepcopy(OFFICIAL_4X_NET_KWARGS),
    "attention_heads": HEADS,
    "conv3d_params": {"inchan": 3, "outchan": C0, "kernel_size": [5, 1, 1], "padding": [2, 0, 0]},
    "hidsize": HID,
    "img_shape": [128, 128, C0],
    "impala_width": 1,
}


def _model_dict(net_kwargs: dict, temperature: object = 4) -> dict:
    """The official ``.model`` nesting (vpt_idm.md section 1.2), plain dicts only."""
    return {
        "version": 1361,
        "model": {
            "args": {
                "net": {
                    "args": net_kwargs,
                    "function": "ypt.model.inverse_action_model:InverseActionNet",
                    "local_args": {"hidsize": 128, "impala_width": 1},
                },
                "pi_head_opts": {"temperature": temperature},
            },
            "function": "ypt.model.inverse_action_model:create",
        },
        "extra_args": {"ac_space": "Dict(buttons=D2[20], camera=D11[2])"},
    }


def _layout(hid: int, heads: int, c0: int, chans: tuple[int, ...], flat: int, ratio: int, blocks: int) -> dict:
    """Key -> shape, transcribed from the key table of vpt_idm.md section 1.3 (independent of the code)."""
    out = {"net.conv3d_layer.layer.weight": (c0, 3, 5, 1, 1), "net.conv3d_layer.layer.bias": (c0,)}
    cins = (c0, *chans[:-1])
    for s, (cin, cout) in enumerate(zip(cins, chans)):
        p = f"net.img_process.cnn.stacks.{s}."
        out |= {p + "firstconv.norm.weight": (cin,), p + "firstconv.norm.bias": (cin,)}
        out[p + "firstconv.layer.weight"] = (cout, cin, 3, 3)
        out |= {p + "n.weight": (cout,), p + "n.bias": (cout,)}
        for b in range(2):
            for c in range(2):
                q = f"{p}blocks.{b}.conv{c}."
                out |= {q + "norm.weight": (cout,), q + "norm.bias": (cout,), q + "layer.weight": (cout, cout, 3, 3)}
    out |= {"net.img_process.cnn.dense.norm.weight": (flat,), "net.img_process.cnn.dense.norm.bias": (flat,)}
    out["net.img_process.cnn.dense.layer.weight"] = (256, flat)
    out |= {"net.img_process.linear.norm.weight": (256,), "net.img_process.linear.norm.bias": (256,)}
    out["net.img_process.linear.layer.weight"] = (hid, 256)
    for i in range(blocks):
        p = f"net.recurrent_layer.blocks.{i}."
        a = p + "r.orc_block."
        out |= {p + "pre_r_ln.weight": (hid,), p + "pre_r_ln.bias": (hid,)}
        out |= {a + "q_layer.weight": (hid, hid), a + "q_layer.bias": (hid,), a + "k_layer.weight": (hid, hid)}
        out |= {a + "v_layer.weight": (hid, hid), a + "proj_layer.weight": (hid, hid), a + "proj_layer.bias": (hid,)}
        out |= {a + "r_layer.weight": (10 * heads, hid), a + "r_layer.bias": (10 * heads,), a + "b_nd": (10, 0)}
        out |= {p + "mlp0.norm.weight": (hid,), p + "mlp0.norm.bias": (hid,)}
        out |= {p + "mlp0.layer.weight": (hid * ratio, hid)}
        out |= {p + "mlp1.layer.weight": (hid, hid * ratio), p + "mlp1.layer.bias": (hid,)}
    out |= {"net.lastlayer.norm.weight": (hid,), "net.lastlayer.norm.bias": (hid,)}
    out |= {"net.lastlayer.layer.weight": (hid, hid), "net.final_ln.weight": (hid,), "net.final_ln.bias": (hid,)}
    out |= {"pi_head.buttons.linear_layer.weight": (40, hid), "pi_head.buttons.linear_layer.bias": (40,)}
    out |= {"pi_head.camera.linear_layer.weight": (22, hid), "pi_head.camera.linear_layer.bias": (22,)}
    return out


TINY_LAYOUT = _layout(HID, HEADS, C0, CHANS, 32 * 16 * 16, RATIO, BLOCKS)


def _random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Fan-in scaled random weights, norms near 1, small biases; heads scaled up so argmax margins are clear."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in TINY_LAYOUT.items():
        if "norm" in key or "_ln" in key or key.endswith(".n.weight") or key.endswith(".n.bias"):
            base = 1.0 if key.endswith("weight") else 0.0
            state[key] = base + 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("bias"):
            state[key] = 0.1 * torch.randn(shape, generator=gen)
        else:
            fan_in = max(1, math.prod(shape[1:]))
            scale = 8.0 if key.startswith("pi_head") else 1.0
            state[key] = scale * torch.randn(shape, generator=gen) / math.sqrt(fan_in)
    return state


def _write(tmp: Path, stem: str, state: dict, net_kwargs: dict | None = None, temperature: object = 4) -> tuple:
    model_path, weights_path = tmp / f"{stem}.model", tmp / f"{stem}.weights"
    with model_path.open("wb") as handle:
        pickle.dump(_model_dict(net_kwargs or TINY_NET_KWARGS, temperature), handle)
    torch.save(state, weights_path)
    return model_path, weights_path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    state = _random_state(0)
    model_path, weights_path = _write(tmp_path_factory.mktemp("idm"), "tiny_idm", state)
    return model_path, weights_path, state


@pytest.fixture(scope="module")
def idm(files: tuple) -> VPTInverseDynamicsModel:
    return VPTInverseDynamicsModel.from_files(files[0], files[1])


def _frames(batch: int, steps: int, seed: int, size: tuple[int, int] = (128, 128)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, steps, *size, 3), dtype=np.uint8)


# --- the functional reference ----------------------------------------------------------------------------------


def reference_log_probs(state: dict, frames: np.ndarray, *, lastlayer: bool = False, temperature: float = 4.0):
    """The documented forward (float64): /255; conv3d (5,1,1) pad (2,0,0) + ReLU; ImpalaCNN with GroupNorm(1) before
    every conv, maxpool(3,2,1) -> GroupNorm; channel-major flatten; LN->Linear->ReLU twice; blocks h = LN(x),
    h = h + proj(attn(h)) with logits / head_dim and no mask, x = h + mlp1(ReLU(mlp0(LN(h)))); ReLU; final_ln;
    heads / temperature, log_softmax."""
    sd = {k: v.double() for k, v in state.items()}
    x = (torch.from_numpy(frames).float() / 255.0).double()  # the reference divides in fp32
    batch, steps = x.shape[:2]
    x = F.relu(F.conv3d(x.permute(0, 4, 1, 2, 3), sd["net.conv3d_layer.layer.weight"],
                        sd["net.conv3d_layer.layer.bias"], padding=(2, 0, 0)))  # fmt: skip
    x = x.permute(0, 2, 1, 3, 4).reshape(batch * steps, *x.shape[1:2], *x.shape[3:])

    def conv(x: torch.Tensor, prefix: str) -> torch.Tensor:
        x = F.group_norm(x, 1, sd[prefix + "norm.weight"], sd[prefix + "norm.bias"], eps=1e-5)
        return F.relu(F.conv2d(x, sd[prefix + "layer.weight"], padding=1))

    def dense(x: torch.Tensor, prefix: str) -> torch.Tensor:
        x = F.layer_norm(x, x.shape[-1:], sd[prefix + "norm.weight"], sd[prefix + "norm.bias"], eps=1e-5)
        return F.relu(F.linear(x, sd[prefix + "layer.weight"]))

    def ln(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], sd[prefix + "weight"], sd[prefix + "bias"], eps=1e-5)

    for s in range(3):
        p = f"net.img_process.cnn.stacks.{s}."
        x = F.max_pool2d(conv(x, p + "firstconv."), kernel_size=3, stride=2, padding=1)
        x = F.group_norm(x, 1, sd[p + "n.weight"], sd[p + "n.bias"], eps=1e-5)
        for b in range(2):
            x = x + conv(conv(x, f"{p}blocks.{b}.conv0."), f"{p}blocks.{b}.conv1.")
    x = x.reshape(batch, steps, -1)  # NCHW rows flatten channel-major
    x = dense(dense(x, "net.img_process.cnn.dense."), "net.img_process.linear.")
    head_dim = HID // HEADS
    for i in range(BLOCKS):
        p = f"net.recurrent_layer.blocks.{i}."
        a = p + "r.orc_block."
        h = ln(x, p + "pre_r_ln.")
        q = (h @ sd[a + "q_layer.weight"].T + sd[a + "q_layer.bias"]).view(batch, steps, HEADS, head_dim)
        k = (h @ sd[a + "k_layer.weight"].T).view(batch, steps, HEADS, head_dim)
        v = (h @ sd[a + "v_layer.weight"].T).view(batch, steps, HEADS, head_dim)
        weights = torch.softmax(torch.einsum("bthd,bshd->bhts", q, k) / head_dim, dim=-1)
        attended = torch.einsum("bhts,bshd->bthd", weights, v).reshape(batch, steps, HID)
        h = h + attended @ sd[a + "proj_layer.weight"].T + sd[a + "proj_layer.bias"]
        x = h + F.linear(dense(h, p + "mlp0."), sd[p + "mlp1.layer.weight"], sd[p + "mlp1.layer.bias"])
    x = F.relu(x)
    if lastlayer:
        x = dense(x, "net.lastlayer.")
    x = ln(x, "net.final_ln.")
    buttons = F.linear(x, sd["pi_head.buttons.linear_layer.weight"], sd["pi_head.buttons.linear_layer.bias"])
    camera = F.linear(x, sd["pi_head.camera.linear_layer.weight"], sd["pi_head.camera.linear_layer.bias"])
    return {
        "buttons": F.log_softmax(buttons.view(batch, steps, 20, 2) / temperature, dim=-1),
        "camera": F.log_softmax(camera.view(batch, steps, 2, 11) / temperature, dim=-1),
    }


def _assert_matches_reference(ours: dict, ref: dict, atol: float) -> None:
    for key in ("buttons", "camera"):
        torch.testing.assert_close(ours[key].double(), ref[key], atol=atol, rtol=0)
        assert torch.equal(ours[key].argmax(-1), ref[key].argmax(-1))


# fp32 rounding (~1e-7 relative per op) is amplified by every GroupNorm of a low-variance input (the conv3d output of
# noise frames has per-frame std ~0.1) and reaches ~1e-4 on the log-probs of these random weights; changing the batch
# size or chunking changes the conv algorithm and so the rounding. The float64 model pins the math exactly instead.
FP32_ATOL = 5e-4


def _assert_fp32_matches_reference(ours: dict, ref: dict) -> None:
    assert ours["buttons"].dtype == ours["camera"].dtype == torch.float32
    _assert_matches_reference(ours, ref, atol=FP32_ATOL)


# --- layout and loading ----------------------------------------------------------------------------------------


def test_official_4x_layout_on_meta() -> None:
    shapes = expected_state_dict_shapes(VPTIDMConfig.official_4x())
    layout = _layout(4096, 32, 128, (256, 512, 512), 512 * 16 * 16, 4, 2)
    assert shapes == layout
    assert len(shapes) == 100
    assert sum(k.startswith("net.") for k in shapes) == 96 and sum(k.startswith("pi_head.") for k in shapes) == 4
    assert sum(math.prod(s) for s in shapes.values()) == 482_330_046
    assert sum(math.prod(s) for k, s in shapes.items() if k.startswith("net.")) == 482_076_032
    assert shapes["net.recurrent_layer.blocks.0.r.orc_block.b_nd"] == (10, 0)
    assert shapes["net.img_process.cnn.dense.layer.weight"] == (256, 131072)


def test_loads_and_reports_identity(files: tuple, idm: VPTInverseDynamicsModel) -> None:
    model_path, weights_path, _ = files
    assert idm.name == "vpt-tiny-idm"
    assert idm.domain == "minecraft"
    assert idm.sha256 == hashlib.sha256(weights_path.read_bytes()).hexdigest()
    assert isinstance(idm, InverseDynamicsModel)
    assert idm.config.temperature == 4.0 and isinstance(idm.config.temperature, float)
    assert idm.config.impala_chans == CHANS and idm.window == 128 and idm.stride == 64
    named = VPTInverseDynamicsModel.from_files(model_path, weights_path, name="custom")
    assert named.name == "custom"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.pop("net.recurrent_layer.blocks.1.r.orc_block.k_layer.weight"), "missing (1)"),
        (lambda s: s.__setitem__("net.extra.weight", torch.zeros(3)), "unexpected (1)"),
        (lambda s: s.__setitem__("net.final_ln.weight", torch.zeros(HID + 1)), "wrong shape (1)"),
        (lambda s: s.pop("pi_head.camera.linear_layer.bias"), "pi_head.camera.linear_layer.bias"),
    ],
)
def test_strict_key_check(tmp_path: Path, files: tuple, edit, expected: str) -> None:
    state = dict(files[2])
    edit(state)
    model_path, weights_path = _write(tmp_path, "bad", state)
    with pytest.raises(CheckpointError, match=expected.replace("(", r"\(").replace(")", r"\)")) as info:
        VPTInverseDynamicsModel.from_files(model_path, weights_path)
    assert str(weights_path) in str(info.value)


def test_wrong_shape_message_names_both_shapes(tmp_path: Path, files: tuple) -> None:
    state = dict(files[2])
    state["net.final_ln.weight"] = torch.zeros(HID + 1)
    model_path, weights_path = _write(tmp_path, "bad", state)
    with pytest.raises(CheckpointError, match=rf"net.final_ln.weight: expected \[{HID}\], got \[{HID + 1}\]"):
        VPTInverseDynamicsModel.from_files(model_path, weights_path)


def _evil_payload(marker: Path) -> bytes:
    """A protocol-0 pickle calling os.system (written by hand so the global is literally ``os.system``)."""
    return b"cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR."


def test_model_pickle_with_os_system_is_refused(tmp_path: Path, files: tuple) -> None:
    marker = tmp_path / "pwned"
    model_path = tmp_path / "evil.model"
    model_path.write_bytes(_evil_payload(marker))
    with pytest.raises(UnsafePickleError, match=r"os\.system"):
        VPTInverseDynamicsModel.from_files(model_path, files[1])
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "global_name"),
    [(Counter({"a": 1}), "collections.Counter"), (np.zeros(2), "numpy"), (Path("x"), "pathlib")],
)
def test_model_pickle_with_objects_is_refused(tmp_path: Path, files: tuple, value: object, global_name: str) -> None:
    data = _model_dict(copy.deepcopy(TINY_NET_KWARGS))
    data["model"]["args"]["net"]["args"]["hidsize"] = value
    model_path = tmp_path / "objects.model"
    model_path.write_bytes(pickle.dumps(data))
    with pytest.raises(UnsafePickleError, match=global_name):
        VPTInverseDynamicsModel.from_files(model_path, files[1])


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_model_pickle_plain_data_any_protocol(tmp_path: Path, files: tuple, protocol: int) -> None:
    """Tuples, sets and all protocols are plain data (protocol < 4 pickles a set via builtins.set)."""
    net_kwargs = copy.deepcopy(TINY_NET_KWARGS)
    net_kwargs["conv3d_params"]["kernel_size"] = (5, 1, 1)
    net_kwargs["img_shape"] = (128, 128, C0)
    data = _model_dict(net_kwargs)
    data["extra"] = {"tags": {"a", "b"}, "frozen": frozenset({1}), "pair": (1.5, True), "none": None}
    model_path = tmp_path / "plain.model"
    model_path.write_bytes(pickle.dumps(data, protocol=protocol))
    model = VPTInverseDynamicsModel.from_files(model_path, files[1])
    assert model.config == VPTInverseDynamicsModel.from_files(files[0], files[1]).config


def test_weights_with_pickled_callable_is_refused(tmp_path: Path, files: tuple) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    weights_path = tmp_path / "evil.weights"
    torch.save({**files[2], "net.evil": Evil()}, weights_path)
    with pytest.raises(UnsafePickleError, match=r"system"):
        VPTInverseDynamicsModel.from_files(files[0], weights_path)
    assert not marker.exists()


def test_weights_not_a_checkpoint(tmp_path: Path, files: tuple) -> None:
    junk = tmp_path / "junk.weights"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        VPTInverseDynamicsModel.from_files(files[0], junk)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("recurrence_type", "lstm", "recurrence_type='lstm'"),
        ("attention_mask_style", "clipped_causal", "attention_mask_style='clipped_causal'"),
        ("attention_memory_size", 256, "attention_memory_size=256"),
        ("init_norm_kwargs", {"batch_norm": True, "group_norm_groups": 1}, "batch_norm=True"),
        ("init_norm_kwargs", {"group_norm_groups": None}, "group_norm_groups=None"),
        ("img_shape", [128, 128, C0 + 1], "img_shape channels"),
        ("conv3d_params", {"inchan": 3, "outchan": C0, "kernel_size": [5, 3, 3], "padding": [2, 1, 1]}, "kernel_size"),
        ("use_pointwise_layer", False, "use_pointwise_layer=False"),
        ("brand_new_option", 1, "brand_new_option"),
        ("hidsize", 66, "attention_heads"),
    ],
)
def test_unsupported_config_is_named(key: str, value: object, match: str) -> None:
    kwargs = {**copy.deepcopy(TINY_NET_KWARGS), key: value}
    with pytest.raises(ConfigError, match=match.replace("[", r"\[")):
        VPTIDMConfig.from_net_kwargs(kwargs, 4)


def test_model_dict_without_net_args(tmp_path: Path, files: tuple) -> None:
    model_path = tmp_path / "empty.model"
    model_path.write_bytes(pickle.dumps({"model": {"args": {}}}))
    with pytest.raises(ConfigError, match="model.args.net.args"):
        VPTInverseDynamicsModel.from_files(model_path, files[1])


# --- forward ---------------------------------------------------------------------------------------------------


def test_forward_matches_functional_reference(files: tuple, idm: VPTInverseDynamicsModel) -> None:
    frames = _frames(2, 6, seed=1)
    ref = reference_log_probs(files[2], frames)
    exact = VPTInverseDynamicsModel.from_files(files[0], files[1], dtype=torch.float64).log_probs(frames)
    assert exact["buttons"].dtype == torch.float64
    _assert_matches_reference(exact, ref, atol=1e-10)
    ours = idm.log_probs(frames)
    assert ours["buttons"].shape == (2, 6, 20, 2) and ours["camera"].shape == (2, 6, 2, 11)
    _assert_fp32_matches_reference(ours, ref)
    torch.testing.assert_close(ours["camera"].exp().sum(-1), torch.ones(2, 6, 2))


def test_temperature_comes_from_the_model_file(tmp_path: Path, files: tuple) -> None:
    model_path, weights_path = _write(tmp_path, "warm", files[2], temperature=2.5)
    frames = _frames(1, 4, seed=2)
    ours = VPTInverseDynamicsModel.from_files(model_path, weights_path).log_probs(frames)
    _assert_fp32_matches_reference(ours, reference_log_probs(files[2], frames, temperature=2.5))


def test_lastlayer_inert_by_default_and_applied_on_request(tmp_path: Path, files: tuple) -> None:
    frames = _frames(1, 3, seed=3)
    state = dict(files[2])
    state["net.lastlayer.layer.weight"] = torch.randn(HID, HID)  # different lastlayer: default output unchanged
    model_path, weights_path = _write(tmp_path, "last", state)
    default = VPTInverseDynamicsModel.from_files(model_path, weights_path).log_probs(frames)
    base = VPTInverseDynamicsModel.from_files(files[0], files[1]).log_probs(frames)
    for key in default:
        assert torch.equal(default[key], base[key])
    applied = VPTInverseDynamicsModel.from_files(model_path, weights_path, apply_lastlayer=True).log_probs(frames)
    _assert_fp32_matches_reference(applied, reference_log_probs(state, frames, lastlayer=True))
    assert (applied["buttons"] - default["buttons"]).abs().max() > 1e-3


def test_relative_attention_weights_are_inert(tmp_path: Path, files: tuple, idm: VPTInverseDynamicsModel) -> None:
    state = dict(files[2])
    for i in range(BLOCKS):
        p = f"net.recurrent_layer.blocks.{i}.r.orc_block.r_layer."
        state[p + "weight"] = 5 * torch.randn_like(state[p + "weight"])
        state[p + "bias"] = 5 * torch.randn_like(state[p + "bias"])
    model_path, weights_path = _write(tmp_path, "rel", state)
    frames = _frames(1, 5, seed=4)
    changed = VPTInverseDynamicsModel.from_files(model_path, weights_path).log_probs(frames)
    base = idm.log_probs(frames)
    for key in base:
        assert torch.equal(changed[key], base[key])


def test_batch_equals_singles_and_no_state(idm: VPTInverseDynamicsModel) -> None:
    frames = _frames(3, 4, seed=5)
    batched = idm.log_probs(frames)
    idm.log_probs(_frames(2, 3, seed=6))  # an unrelated call in between must not matter
    for b in range(3):
        single = idm.log_probs(frames[b : b + 1])
        for key in batched:
            torch.testing.assert_close(batched[key][b : b + 1], single[key], atol=FP32_ATOL, rtol=0)
            assert torch.equal(batched[key][b : b + 1].argmax(-1), single[key].argmax(-1))
    again = idm.log_probs(frames)
    for key in batched:
        assert torch.equal(again[key], batched[key])


def test_frame_chunks_do_not_change_results(files: tuple, idm: VPTInverseDynamicsModel) -> None:
    chunked = VPTInverseDynamicsModel.from_files(files[0], files[1], frame_chunk=3, max_windows=1)
    frames = _frames(2, 7, seed=7)
    a, b = idm.log_probs(frames), chunked.log_probs(frames)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=FP32_ATOL, rtol=0)


def test_not_causal(idm: VPTInverseDynamicsModel) -> None:
    frames = _frames(1, 8, seed=8)
    changed = frames.copy()
    changed[:, -1] = 255 - changed[:, -1]
    a, b = idm.log_probs(frames), idm.log_probs(changed)
    # frame 0 is 7 frames away from the change, outside the 5-tap conv: only attention can carry it there
    assert (a["buttons"][:, 0] - b["buttons"][:, 0]).abs().max() > 1e-6


def test_resizes_any_resolution_like_cv2(idm: VPTInverseDynamicsModel) -> None:
    frames = _frames(1, 4, seed=9, size=(360, 640))
    resized = np.stack([[cv2.resize(f, (128, 128), interpolation=cv2.INTER_LINEAR) for f in clip] for clip in frames])
    a, b = idm.log_probs(frames), idm.log_probs(resized)
    for key in a:
        assert torch.equal(a[key], b[key])


def test_long_video_windows_equal_hand_stitching(files: tuple) -> None:
    model = VPTInverseDynamicsModel.from_files(files[0], files[1], window=8, stride=4, max_windows=5)
    frames = _frames(2, 26, seed=10)
    # window 8, stride 4, margin 2: starts 0, 4, 8, 12, 16 (each ends before frame 26) and a last one at 26 - 8 = 18
    keeps = [(0, 0, 6), (4, 6, 10), (8, 10, 14), (12, 14, 18), (16, 18, 22), (18, 22, 26)]
    assert model.window_plan(26) == keeps
    ours = model.log_probs(frames)
    assert ours["buttons"].shape == (2, 26, 20, 2)
    pieces: dict[str, list] = {"buttons": [], "camera": []}
    for start, keep_from, keep_to in keeps:
        window = model.log_probs(frames[:, start : start + 8])
        for key in pieces:
            pieces[key].append(window[key][:, keep_from - start : keep_to - start])
    for key in pieces:
        torch.testing.assert_close(ours[key], torch.cat(pieces[key], dim=1), atol=FP32_ATOL, rtol=0)
    # a short video is one window; when a stride start fits exactly (16 + 8 = 24) it is the last window
    assert model.window_plan(8) == [(0, 0, 8)] and model.window_plan(3) == [(0, 0, 3)]
    assert model.window_plan(24) == [(0, 0, 6), (4, 6, 10), (8, 10, 14), (12, 14, 18), (16, 18, 24)]


def test_default_windows_are_minestudios() -> None:
    # 128-frame windows, stride 64, keep [32:96] of each; first keeps [0:96]; last (aligned to the end) its tail
    assert window_plan(300) == [(0, 0, 96), (64, 96, 160), (128, 160, 224), (172, 224, 300)]
    assert window_plan(256) == [(0, 0, 96), (64, 96, 160), (128, 160, 256)]
    assert window_plan(128) == [(0, 0, 128)]


def test_fp16_argmax_agrees_with_fp32(files: tuple, idm: VPTInverseDynamicsModel) -> None:
    half = VPTInverseDynamicsModel.from_files(files[0], files[1], dtype=torch.float16)
    assert half.dtype == torch.float16
    agreement = argmax_agreement(half, idm, _frames(1, 6, seed=11))
    assert agreement["buttons"] >= 0.95 and agreement["camera"] >= 0.95
    assert agreement["max_abs_log_prob"] < 0.1


# --- decoding --------------------------------------------------------------------------------------------------


def test_predict_dicts_and_camera_decoding(tmp_path: Path, files: tuple) -> None:
    """Heads forced through their biases: pressed buttons and camera bins are known, whatever the frames."""
    state = dict(files[2])
    pressed = {0, 2, 11, 19}  # attack, forward, hotbar.1, hotbar.9 in the VPT Buttons.ALL order
    buttons_bias = torch.zeros(20, 2)
    for i in range(20):
        buttons_bias[i, 1 if i in pressed else 0] = 100.0
    state["pi_head.buttons.linear_layer.weight"] = torch.zeros(40, HID)
    state["pi_head.buttons.linear_layer.bias"] = buttons_bias.flatten()
    camera_bias = torch.zeros(2, 11)
    camera_bias[0, 0] = camera_bias[1, 10] = 100.0  # pitch bin 0, yaw bin 10
    state["pi_head.camera.linear_layer.weight"] = torch.zeros(22, HID)
    state["pi_head.camera.linear_layer.bias"] = camera_bias.flatten()
    model = VPTInverseDynamicsModel.from_files(*_write(tmp_path, "forced", state))
    frames = _frames(2, 3, seed=12, size=(224, 384))

    arrays = model.predict_arrays(frames)
    assert arrays["buttons"].shape == (2, 3, 20) and arrays["buttons"].dtype == np.int64
    assert arrays["camera_bins"].shape == (2, 3, 2) and arrays["camera_bins"].dtype == np.int64
    assert np.all(arrays["camera_bins"] == [0, 10])
    np.testing.assert_array_equal(arrays["camera"], np.broadcast_to(np.float32([-10.0, 10.0]), (2, 3, 2)))

    actions = model.predict(frames)
    assert len(actions) == 2 and all(len(clip) == 3 for clip in actions)
    action = actions[1][2]
    assert set(action) == set(ACTION_KEYS) and len(action) == 24
    assert list(action)[:20] == list(IDM_BUTTONS)
    assert {k for k, v in action.items() if k != "camera" and v == 1} == {"attack", "forward", "hotbar.1", "hotbar.9"}
    assert action["ESC"] == action["swapHands"] == action["pickItem"] == 0
    assert action["camera"].dtype == np.float32 and action["camera"].tolist() == [-10.0, 10.0]
    validate_env_action(action)
    again = model.predict_actions(frames)[1][2]
    assert {k: v for k, v in again.items() if k != "camera"} == {k: v for k, v in action.items() if k != "camera"}
    assert VPTInverseDynamicsModel.predict_actions is VPTInverseDynamicsModel.predict


def test_zero_bin_decodes_to_zero(tmp_path: Path, files: tuple) -> None:
    state = dict(files[2])
    camera_bias = torch.zeros(2, 11)
    camera_bias[:, 5] = 100.0
    state["pi_head.camera.linear_layer.weight"] = torch.zeros(22, HID)
    state["pi_head.camera.linear_layer.bias"] = camera_bias.flatten()
    model = VPTInverseDynamicsModel.from_files(*_write(tmp_path, "still", state))
    arrays = model.predict_arrays(_frames(1, 2, seed=13))
    assert np.all(arrays["camera_bins"] == 5) and np.all(arrays["camera"] == 0.0)


def test_rejects_bad_frames(idm: VPTInverseDynamicsModel) -> None:
    with pytest.raises(FrameError, match="uint8"):
        idm.log_probs(np.zeros((1, 2, 128, 128, 3), np.float32))
    with pytest.raises(FrameError, match=r"frames\[None\]"):
        idm.log_probs(np.zeros((2, 128, 128, 3), np.uint8))
    with pytest.raises(FrameError, match="shape"):
        idm.log_probs(np.zeros((1, 0, 128, 128, 3), np.uint8))
