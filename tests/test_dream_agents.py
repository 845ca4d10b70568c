"""rlir.agents.ppo and ``rlir agents``: PPO inside a tiny world model (through the CLI, with frame stacking,
periodic real-game evaluation, checkpoints, TensorBoard and a summary), the real-game baseline on the same code path,
seeded evaluation of a saved policy with the Crafter score recomputed from the episodes, and clear errors when a
policy and an env disagree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlir.cli import main as rlir_main
from rlir_env.crafter.env import ACHIEVEMENTS
from rlir.agents.ppo import REAL_WORLD, evaluate_policy, load_policy, train_agent
from tests.test_dream_setup import SIZE, crafter_data, heads_file, tiny_model  # noqa: F401  (fixtures)
from worldmodels.errors import ConfigError, MissingFileError
from worldmodels.mineworld.checkpoint import save_safetensors

TINY_PPO = {"n_steps": 8, "batch_size": 8, "n_epochs": 1}


@pytest.fixture(scope="module")
def dream_run(tiny_model, heads_file, crafter_data, tmp_path_factory):
    """``rlir agents train`` in RLIR-CrafterDream-v0 on the tiny world model: 32 env steps, 2 envs, 2 stacked frames,
    a real-game evaluation every 16 steps."""
    root = tmp_path_factory.mktemp("dream-agent")
    checkpoint = root / "tiny-wm.safetensors"
    save_safetensors(tiny_model, checkpoint)
    out = root / "run"
    code = rlir_main([
        "agents", "train", "--world", "RLIR-CrafterDream-v0", "--algo", "ppo", "--steps", "32", "--num-envs", "2",
        "--seed", "1", "--eval-every", "16", "--eval-episodes", "2", "--eval-max-steps", "8", "--out", str(out),
        "--checkpoint", str(checkpoint), "--heads", str(heads_file), "--scenes", str(crafter_data),
        "--frame-stack", "2", "--max-episode-steps", "12", "--n-steps", "8", "--batch-size", "8", "--n-epochs", "1",
        "--report-to", "tensorboard",
    ])  # fmt: skip
    assert code == 0
    return out


def test_ppo_in_the_dream_completes_and_writes_everything(dream_run):
    summary = json.loads((dream_run / "summary.json").read_text())
    assert summary["world"] == "RLIR-CrafterDream-v0" and summary["env_steps_done"] == 32
    assert summary["observation_shape"] == [SIZE, SIZE, 6] and summary["frame_stack"] == 2
    assert [e["train_env_steps"] for e in summary["evaluations"]] == [16, 32]
    for evaluation in summary["evaluations"]:
        assert evaluation["episodes"] == 2 and evaluation["max_steps"] == 8 and 0 <= evaluation["crafter_score"] <= 100
    assert summary["train_env_steps_per_s"] > 0
    assert sorted(p.name for p in (dream_run / "checkpoints").iterdir()) == ["policy_16.zip", "policy_32.zip"]
    assert len((dream_run / "evals.jsonl").read_text().splitlines()) == 2
    events = list((dream_run / "tb").rglob("events.out.tfevents.*"))
    assert events and any(e.stat().st_size > 0 for e in events)
    model = load_policy(dream_run / "policy.zip")
    assert model.observation_space.shape == (6, SIZE, SIZE)  # SB3 keeps images channel-first


def test_saved_policy_is_scored_in_the_real_game_reproducibly(dream_run, tmp_path):
    policy = dream_run / "policy.zip"
    result = evaluate_policy(policy, episodes=3, seed=4, max_steps=10, parallel=2)
    again = evaluate_policy(policy, episodes=3, seed=4, max_steps=10, parallel=3)
    assert result["episode_results"] == again["episode_results"]  # lockstep width does not change episodes
    other = evaluate_policy(policy, episodes=3, seed=5, max_steps=10, parallel=3)
    hashes = [e["actions_sha256"] for e in result["episode_results"]]
    assert len(set(hashes)) == 3 and not set(hashes) & {e["actions_sha256"] for e in other["episode_results"]}
    assert result["frame_stack"] == 2 and result["frame_size"] == SIZE
    # the official score, recomputed from the episodes: exp(mean(log(1 + p))) - 1 with p in percent
    unlocked = [set(e["unlocked"]) for e in result["episode_results"]]
    rates = np.array([100.0 * np.mean([name in u for u in unlocked]) for name in ACHIEVEMENTS])
    assert result["crafter_score"] == pytest.approx(np.exp(np.mean(np.log(1 + rates))) - 1)
    assert result["return_mean"] == pytest.approx(np.mean([e["return"] for e in result["episode_results"]]))
    assert all(e["length"] <= 10 for e in result["episode_results"])
    out = tmp_path / "eval.json"
    assert rlir_main(["agents", "eval", str(policy), "--episodes", "2", "--seed", "4", "--max-steps", "10",
                      "--out", str(out)]) == 0  # fmt: skip
    on_disk = json.loads(out.read_text())
    assert on_disk["episode_results"] == result["episode_results"][:2]
    random = evaluate_policy("random", episodes=2, seed=0, max_steps=10, env_kwargs={"size": SIZE})
    assert random["policy"] == "random" and random["env_steps"] <= 20


def test_policy_and_env_mismatch_raise_clear_errors(dream_run, tmp_path):
    policy = dream_run / "policy.zip"
    with pytest.raises(ConfigError, match=r"36 x 36 x 6 observations but the real game gives 72 x 72.*size=36"):
        evaluate_policy(policy, episodes=1, max_steps=5, env_kwargs={"size": 72})
    with pytest.raises(ConfigError, match=r"x 1 stacked.*frame_stack=2"):
        evaluate_policy(policy, episodes=1, max_steps=5, frame_stack=1)
    with pytest.raises(MissingFileError, match="rlir agents train"):
        evaluate_policy(tmp_path / "none.zip", episodes=1)
    with pytest.raises(ConfigError, match="NatureCNN needs frames of at least 36"):
        train_agent(REAL_WORLD, steps=8, out=tmp_path / "nature", num_envs=1, extractor="nature",
                    env_kwargs={"size": 27})  # fmt: skip
    with pytest.raises(ConfigError, match="unknown world"):
        train_agent("RLIR-Nowhere-v0", steps=8, out=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="unknown PPO settings"):
        train_agent(REAL_WORLD, steps=8, out=tmp_path / "x", ppo={"n_step": 4})


def test_real_game_baseline_uses_the_same_recipe(tmp_path):
    summary = train_agent(REAL_WORLD, steps=16, out=tmp_path / "real", num_envs=2, seed=0, eval_episodes=1,
                          eval_max_steps=5, ppo=TINY_PPO, env_kwargs={"size": SIZE, "length": 6})  # fmt: skip
    assert summary["world"] == REAL_WORLD and summary["env_steps_done"] == 16
    assert summary["observation_shape"] == [SIZE, SIZE, 3] and len(summary["evaluations"]) == 1
    assert (tmp_path / "real" / "policy.zip").is_file()
