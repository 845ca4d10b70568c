"""The Minecraft action domain against the reference documents (mineworld.md §6, vpt_idm.md §5, §7, §8)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worldmodels.actions import camera, crafter, get_domain, minecraft
from worldmodels.errors import ActionError

# --- camera quantizers --------------------------------------------------------------------------------------------

# Documented bin edges (|x| in degrees) where the bin index changes: mineworld.md §6.3, vpt_idm.md §5.2.
MINEWORLD_EDGES = [1.054, 3.607, 6.893, 11.123, 16.567, 23.575, 32.597, 44.209, 59.156, 78.397]
VPT_EDGES = [0.2710, 1.0531, 2.3166, 4.3577, 7.6547]
VPT_CENTRES = [-10, -5.8095, -3.2154, -1.6095, -0.6154, 0, 0.6154, 1.6095, 3.2154, 5.8095, 10]


def exact_edges(maxval: float, binsize: float, mu: float) -> list[float]:
    """Positive edges from the definition: the encoded value (k + 1/2) * binsize - maxval, mapped back by inverse mu-law."""
    edges = []
    n_bins = int(2 * maxval / binsize) + 1
    for k in range(n_bins // 2, n_bins - 1):
        encoded = ((k + 0.5) * binsize - maxval) / maxval
        edges.append(((1 + mu) ** encoded - 1) / mu * maxval)
    return edges


@pytest.mark.parametrize(
    ("quantizer", "documented", "n_bins", "zero_bin"),
    [(camera.MINEWORLD_CAMERA, MINEWORLD_EDGES, 21, 10), (camera.VPT_IDM_CAMERA, VPT_EDGES, 11, 5)],
)
def test_quantizer_edges(quantizer, documented, n_bins, zero_bin):
    assert quantizer.n_bins == n_bins and quantizer.zero_bin == zero_bin
    edges = exact_edges(quantizer.maxval, quantizer.binsize, quantizer.mu)
    assert np.allclose(edges, documented, atol=6e-4)
    for k, edge in enumerate(edges):
        below, above = edge * (1 - 1e-9), edge * (1 + 1e-9)
        assert quantizer.discretize(below) == zero_bin + k
        assert quantizer.discretize(above) == zero_bin + k + 1
        assert quantizer.discretize(-below) == zero_bin - k
        assert quantizer.discretize(-above) == zero_bin - k - 1
    assert quantizer.discretize([0.0, 1e9, -1e9]).tolist() == [zero_bin, n_bins - 1, 0]


def test_quantizer_centres():
    assert np.allclose(camera.VPT_IDM_CAMERA.centres(), VPT_CENTRES, atol=1e-4)
    mineworld = [0, 2.25, 5.146, 8.874, 13.673, 19.85, 27.802, 38.037, 51.212, 68.17, 90]
    assert np.allclose(camera.MINEWORLD_CAMERA.centres()[10:], mineworld, atol=1e-3)
    # Centres are fixed points of discretize(undiscretize(.)).
    for q in (camera.MINEWORLD_CAMERA, camera.VPT_IDM_CAMERA):
        assert q.discretize(q.centres()).tolist() == list(range(q.n_bins))


def test_quantizer_matches_the_documented_formula_on_random_angles():
    rng = np.random.default_rng(0)
    for q in (camera.MINEWORLD_CAMERA, camera.VPT_IDM_CAMERA):
        x = rng.uniform(-2 * q.maxval, 2 * q.maxval, size=10_000)
        v = np.clip(x, -q.maxval, q.maxval) / q.maxval
        encoded = np.sign(v) * np.log1p(q.mu * np.abs(v)) / math.log1p(q.mu) * q.maxval
        expected = np.rint((encoded + q.maxval) / q.binsize)  # rint: IEEE half-to-even, like np.round
        assert (q.discretize(x) == expected).mean() > 0.9999  # may differ only within 1 ulp of an edge


def test_quantizer_rejects_bad_input():
    with pytest.raises(ActionError, match="finite"):
        camera.MINEWORLD_CAMERA.discretize([0.0, float("nan")])
    with pytest.raises(ActionError, match=r"\[0, 20\]"):
        camera.MINEWORLD_CAMERA.undiscretize([21])
    with pytest.raises(ActionError, match="multiple of binsize"):
        camera.CameraQuantizer(10, 3, 10)


# --- spaces -------------------------------------------------------------------------------------------------------


def test_action_space_has_the_24_minerl_keys():
    expected = ["forward", "left", "back", "right", "jump", "inventory", "drop", "swapHands", "sneak", "sprint",
                "attack", "use", "pickItem"] + [f"hotbar.{i}" for i in range(1, 10)] + ["ESC", "camera"]  # fmt: skip
    assert sorted(minecraft.ACTION_SPACE.spaces) == sorted(expected) and len(expected) == 24
    for key in expected[:-1]:
        assert minecraft.ACTION_SPACE[key] == gym.spaces.Discrete(2)
    cam = minecraft.ACTION_SPACE["camera"]
    assert cam.shape == (2,) and cam.dtype == np.float32 and cam.low.tolist() == [-180, -180]
    assert minecraft.ACTION_SPACE.contains(minecraft.noop())
    assert minecraft.COMPACT_SPACE == gym.spaces.MultiDiscrete([21, 21, 10, 3, 3, 3, 3, 2, 3])


# --- token ids ----------------------------------------------------------------------------------------------------


def official_token_table() -> dict[str, int]:
    """The vocabulary exactly as listed in mineworld.md §6.1."""
    buttons = ["use", "attack", "forward", "back", "left", "right", "jump", "sneak", "sprint", "drop", "swapHands",
               "pickItem", "inventory", "ESC"] + [f"hotbar.{i}" for i in range(1, 10)]  # fmt: skip
    table = {name: 8192 + i for i, name in enumerate(buttons)}
    table |= {f"cam_0_{b}": 8215 + b for b in range(21)} | {f"cam_1_{b}": 8236 + b for b in range(21)}
    table |= {"<act_bos>": 8257, "<null_act>": 8258, "<act_eos>": 8259}
    return table


def test_token_constants():
    table = official_token_table()
    assert (minecraft.ACT_BOS, minecraft.NULL_ACT, minecraft.ACT_EOS) == (8257, 8258, 8259)
    assert table["use"] == 8192 and table["hotbar.1"] == 8206 and table["hotbar.9"] == 8214
    assert table["cam_0_10"] == 8225 and table["cam_1_10"] == 8246
    assert minecraft.ACTION_VOCAB_OFFSET + minecraft.ACTION_VOCAB_SIZE == 8260 <= 8262


def test_full_token_table_through_every_slot_value():
    table = official_token_table()
    null = table["<null_act>"]
    pairs = {3: ("forward", "back"), 4: ("left", "right"), 5: ("sprint", "sneak"), 6: ("use", "attack"),
             8: ("drop", "pickItem")}  # fmt: skip
    for slot, nvec in enumerate(minecraft.COMPACT_NVEC):
        for value in range(nvec):
            compact = minecraft.to_compact(minecraft.noop())
            compact[slot] = value
            tokens = minecraft.compact_to_tokens(compact).tolist()
            expected = [table["<act_bos>"], table["cam_0_10"], table["cam_1_10"]] + [null] * 7 + [table["<act_eos>"]]
            if slot == 0:
                expected[1] = table[f"cam_0_{value}"]
            elif slot == 1:
                expected[2] = table[f"cam_1_{value}"]
            elif slot == 2 and value:
                expected[3] = table[f"hotbar.{value}"]
            elif slot == 7 and value:
                expected[8] = table["jump"]
            elif slot in pairs and value:
                expected[slot + 1] = table[pairs[slot][value - 1]]
            assert tokens == expected, (slot, value)


def test_documented_examples():
    assert minecraft.to_mineworld_tokens(minecraft.noop()).tolist() == [
        8257, 8225, 8246, 8258, 8258, 8258, 8258, 8258, 8258, 8258, 8259]  # fmt: skip
    action = minecraft.noop() | {"forward": 1, "attack": 1, "jump": 1, "hotbar.3": 1, "camera": [-5, 12]}
    assert minecraft.to_mineworld_tokens(action).tolist() == [
        8257, 8223, 8250, 8208, 8194, 8258, 8258, 8193, 8198, 8258, 8259]  # fmt: skip


def test_conflicts_and_hotbar_priority():
    both = minecraft.noop() | {"forward": 1, "back": 1, "left": 1, "right": 1, "sprint": 1, "sneak": 1, "use": 1,
                               "attack": 1, "drop": 1, "pickItem": 1, "hotbar.7": 1, "hotbar.2": 1}  # fmt: skip
    assert minecraft.to_compact(both).tolist() == [10, 10, 2, 0, 0, 0, 0, 0, 0]
    assert minecraft.to_mineworld_tokens(both)[3] == 8207  # hotbar.2, the lowest pressed
    # inventory / ESC / swapHands have no slot: ignored exactly as the official tokenizer does.
    ignored = minecraft.noop() | {"inventory": 1, "ESC": 1, "swapHands": 1}
    assert minecraft.to_compact(ignored).tolist() == minecraft.to_compact(minecraft.noop()).tolist()


env_actions = st.fixed_dictionaries(
    {key: st.integers(0, 1) for key in minecraft.BUTTON_KEYS}
    | {"camera": st.tuples(st.floats(-180, 180), st.floats(-180, 180)).map(list)}
)
compacts = st.tuples(*(st.integers(0, n - 1) for n in minecraft.COMPACT_NVEC)).map(np.array)


@settings(max_examples=200, deadline=None)
@given(compacts)
def test_compact_tokens_dict_round_trip(compact):
    tokens = minecraft.compact_to_tokens(compact)
    assert minecraft.from_mineworld_tokens(tokens).tolist() == compact.tolist()
    action = minecraft.from_compact(compact)
    assert minecraft.ACTION_SPACE.contains(action)
    assert minecraft.to_compact(action).tolist() == compact.tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(env_actions, min_size=1, max_size=5))
def test_batched_equals_single(actions):
    batched = minecraft.to_compact(actions)
    assert batched.shape == (len(actions), 9)
    for row, action in zip(batched, actions):
        assert row.tolist() == minecraft.to_compact(action).tolist()
    # A dict of arrays gives the same result as a list of dicts.
    columns = {key: np.array([a[key] for a in actions]) for key in actions[0]}
    assert minecraft.to_compact(columns).tolist() == batched.tolist()
    # dict -> compact -> dict -> compact is idempotent after the first quantisation.
    again = minecraft.to_compact(minecraft.from_compact(batched))
    assert again.tolist() == batched.tolist()


def test_bad_actions_raise_one_clear_error():
    with pytest.raises(ActionError, match="unknown MineRL action keys"):
        minecraft.to_compact({"fly": 1})
    with pytest.raises(ActionError, match="'forward' must be 0 or 1"):
        minecraft.to_compact({"forward": 2})
    with pytest.raises(ActionError, match="finite"):
        minecraft.to_compact({"camera": [0.0, float("inf")]})
    with pytest.raises(ActionError, match="outside slot 'hotbar'"):
        minecraft.to_mineworld_tokens(np.array([10, 10, 10, 0, 0, 0, 0, 0, 0]))
    with pytest.raises(ActionError, match="trailing dimension of 9"):
        minecraft.to_compact(np.zeros((2, 8), dtype=int))
    with pytest.raises(ActionError, match="not valid in action slot 4"):
        minecraft.from_mineworld_tokens([8257, 8225, 8246, 8258, 8193, 8258, 8258, 8258, 8258, 8258, 8259])
    with pytest.raises(ActionError, match="missing keys"):
        minecraft.validate_env_action({"forward": 1})


# --- VPT contractor lines -----------------------------------------------------------------------------------------


def vpt_line(keys=(), dx=0.0, dy=0.0, buttons=()):
    return {"keyboard": {"keys": list(keys)}, "mouse": {"dx": dx, "dy": dy, "buttons": list(buttons)}}


def test_vpt_keys_mouse_and_float_camera():
    line = vpt_line(["key.keyboard.w", "key.keyboard.left.shift", "key.keyboard.3", "key.keyboard.x"],
                    dx=37.5, dy=-10, buttons=[0, 2])  # fmt: skip
    action = minecraft.from_vpt_jsonl(line)
    pressed = sorted(k for k in minecraft.BUTTON_KEYS if action[k])
    assert pressed == ["attack", "forward", "hotbar.3", "pickItem", "sneak"]
    assert action["camera"].tolist() == [-10 * (360.0 / 2400.0), 37.5 * (360.0 / 2400.0)]  # 5.625, not 5
    assert not minecraft.is_null_vpt_line(line)


def test_vpt_legacy_int_camera_truncates_toward_zero():
    # mineworld.md §6.4: dx=37.5 -> 5.625 -> 5; dy=-10 -> -1.5 -> -1. vpt_idm.md §7.2: 0.75 -> 0, -1.05 -> -1.
    assert minecraft.from_vpt_jsonl(vpt_line(dx=37.5, dy=-10), legacy_int_camera=True)["camera"].tolist() == [-1, 5]
    assert minecraft.from_vpt_jsonl(vpt_line(dx=-7, dy=5), legacy_int_camera=True)["camera"].tolist() == [0, -1]


def test_vpt_conflicts_and_null_flag():
    line = vpt_line(["key.keyboard.w", "key.keyboard.s", "key.keyboard.space", "key.keyboard.left.shift",
                     "key.keyboard.left.control"], buttons=[0, 1])  # fmt: skip
    raw = minecraft.from_vpt_jsonl(line)
    assert raw["forward"] == raw["back"] == raw["attack"] == raw["use"] == 1
    cleared = minecraft.from_vpt_jsonl(line, mineworld_conflicts=True)
    # jump+sneak clears both first, so sprint survives the later sprint+sneak rule (reference order).
    assert [cleared[k] for k in ("forward", "back", "jump", "sneak", "sprint", "attack", "use")] == [0, 0, 0, 0, 1, 0, 0]
    assert minecraft.is_null_vpt_line(vpt_line())
    assert minecraft.is_null_vpt_line(vpt_line(["key.keyboard.x"], buttons=[3]))  # unmapped input only
    assert not minecraft.is_null_vpt_line(vpt_line(dx=0.5))
    inventory = vpt_line(["key.keyboard.e", "key.keyboard.w"])
    assert not minecraft.is_null_vpt_line(inventory) and minecraft.is_null_vpt_line(inventory, mineworld=True)


def test_env_format_lines_pass_through():
    env_line = {key: 0 for key in minecraft.BUTTON_KEYS} | {"camera": [0, 5], "forward": 1}
    action = minecraft.from_vpt_jsonl(env_line)
    assert action["forward"] == 1 and action["camera"].tolist() == [0.0, 5.0]
    assert not minecraft.is_null_vpt_line(env_line)
    with pytest.raises(ActionError, match="lacks 'dx'"):
        minecraft.from_vpt_jsonl({"keyboard": {"keys": []}, "mouse": {"dy": 0, "buttons": []}})
    idle = minecraft.from_vpt_jsonl({"keyboard": None, "mouse": None})  # old recorders: null = no input
    assert idle["camera"].tolist() == [0.0, 0.0] and not any(idle[k] for k in minecraft.BUTTON_KEYS)


# --- domains and the CLI ------------------------------------------------------------------------------------------


def test_domains():
    mc, cr = get_domain("minecraft"), get_domain("crafter")
    assert mc.compact_shape == (9,) and mc.tokens_per_action == 11
    assert mc.to_tokens(mc.noop(), 8192).tolist() == minecraft.to_mineworld_tokens(minecraft.noop()).tolist()
    assert cr.compact_shape == () and cr.compact_space == gym.spaces.Discrete(17)
    tokens = cr.to_tokens(np.array([[0, 16]]), offset=512)
    assert tokens.tolist() == [[[529, 512, 530], [529, 528, 530]]]
    assert cr.from_tokens(tokens, offset=512).tolist() == [[0, 16]]
    assert crafter.ACTION_NAMES[crafter.action_index("do")] == "do"
    with pytest.raises(ActionError, match="outside Discrete"):
        cr.validate([17])
    with pytest.raises(ActionError, match="unknown action domain"):
        get_domain("atari")


def run_cli(*args: str, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlir", *args], input=stdin, capture_output=True, text=True)


def test_cli_encode_decode_and_from_vpt():
    line = json.dumps(minecraft.noop() | {"forward": 1, "attack": 1, "jump": 1, "hotbar.3": 1, "camera": [-5, 12]},
                      default=lambda a: a.tolist())  # fmt: skip
    encoded = run_cli("actions", "encode", stdin=line + "\n" + line + "\n")
    assert encoded.returncode == 0, encoded.stderr
    rows = [json.loads(r) for r in encoded.stdout.splitlines()]
    assert rows == [[8257, 8223, 8250, 8208, 8194, 8258, 8258, 8193, 8198, 8258, 8259]] * 2
    decoded = run_cli("actions", "decode", stdin=encoded.stdout)
    action = json.loads(decoded.stdout.splitlines()[0])
    assert action["forward"] == 1 and math.isclose(action["camera"][0], -5.1462, abs_tol=1e-3)
    vpt = run_cli("actions", "from-vpt", "--legacy-int-camera", stdin=json.dumps(vpt_line(dx=37.5, dy=-10)))
    assert json.loads(vpt.stdout)["camera"] == [-1.0, 5.0]
    bad = run_cli("actions", "encode", stdin=line + "\n{not json\n")
    assert bad.returncode == 2 and "<stdin>:2" in bad.stderr
