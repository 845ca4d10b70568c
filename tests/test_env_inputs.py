"""Bad inputs at the envs' and the action tools' edges: one clear error naming the value (and the line), nothing
half done."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import rlir_env  # noqa: F401  (registers the env ids)
from rlir.commands.rollout import read_action_script
from worldmodels.actions import minecraft
from worldmodels.errors import ActionError, ConfigError


@pytest.fixture(scope="module")
def crafter_model_env():
    env = gym.make("RLIR-Crafter-v0")
    env.reset(seed=0)
    yield env
    env.close()


@pytest.mark.parametrize("action, shown", [(True, "True"), (np.float32(2.0), "2.0"), (np.float64("nan"), "nan"),
                                           (np.array(float("-inf")), "-inf")])  # fmt: skip
def test_world_model_envs_refuse_bools_and_floats_naming_the_value(crafter_model_env, action, shown):
    with pytest.raises(ActionError, match=rf"Crafter actions must be integers, got {shown} \(dtype"):
        crafter_model_env.step(action)


def test_valid_actions_still_step_and_the_real_game_agrees(crafter_model_env):
    obs, *_ = crafter_model_env.step(np.int64(2))
    assert obs.dtype == np.uint8
    real = gym.make("RLIR-CrafterReal-v0")
    real.reset(seed=0)
    for action in (True, np.float32(2.0)):
        with pytest.raises(ActionError):
            real.step(action)
    real.step(3)


def test_compact_minecraft_actions_name_a_non_finite_value():
    bad = np.zeros(9)
    bad[4] = np.inf
    with pytest.raises(ActionError, match=r"compact Minecraft actions must be integers, got inf \(dtype float64\)"):
        minecraft.validate_compact(bad)


def test_crafter_real_vector_env_checks_the_number_of_actions():
    envs = gym.make_vec("RLIR-CrafterReal-v0", num_envs=3)
    envs.reset(seed=0)
    with pytest.raises(ActionError, match=r"with 3 envs takes 3 actions \(shape \(3,\)\), got shape \(2,\)"):
        envs.step(np.array([1, 2]))
    with pytest.raises(ActionError, match=r"got shape \(4,\)"):
        envs.step([1, 2, 3, 4])
    obs, rewards, *_ = envs.step(np.array([0, 1, 2]))
    assert obs.shape[0] == 3 and rewards.shape == (3,)
    envs.close()


def test_nfd_env_without_a_checkpoint_says_what_it_needs():
    with pytest.raises(ConfigError, match=r"no world model given: pass checkpoint= .*crafter-nfd.*rlir train nfd"):
        gym.make("RLIR-NFD-v0")


def test_rollout_scripts_name_the_line_of_an_unknown_action(tmp_path):
    script = tmp_path / "crafter.jsonl"
    script.write_text('"noop"\n\n"move_left"\n"fly"\n')
    with pytest.raises(ActionError, match=rf"{script}:4: unknown Crafter action 'fly'"):
        read_action_script(script, "crafter")
    script.write_text('"noop"\n{"action": 5}\n')
    assert read_action_script(script, "crafter").tolist() == [0, 5]
    mc = tmp_path / "mc.jsonl"
    good = json.dumps(minecraft.noop() | {"camera": [0.0, 0.0]}, default=lambda a: a.tolist())
    mc.write_text(good + "\n" + good.replace('"forward": 0', '"forward": 7') + "\n")
    with pytest.raises(ActionError, match=rf"{mc}:2: "):
        read_action_script(mc, "minecraft")


def test_actions_encode_prints_nothing_unless_every_line_is_valid():
    line = json.dumps(minecraft.noop() | {"camera": [0.0, 0.0]}, default=lambda a: a.tolist())
    bad = line.replace('"forward": 0', '"forward": 7')
    result = subprocess.run([sys.executable, "-m", "rlir", "actions", "encode"], input=f"{line}\n{bad}\n",
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "<stdin>:2" in result.stderr
    assert result.stdout == ""
