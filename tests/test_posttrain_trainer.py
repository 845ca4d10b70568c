"""The GRPO post-trainer end to end on the tiny MineWorld: config, a real learning signal, the on-policy invariant,
skipped zero-std groups, the KL reference (full and LoRA), the output file, checkpoints (corruption, kill -9 and
resume bit-identically) and data parallelism over two gloo processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from evaluation.suites import save_suite
from rlir.cli import main as rlir_main
from rlir.commands.posttrain import add_arguments, config_from_args
from posttrain.config import PostTrainConfig, load_config, save_config
from posttrain.loop import train
from posttrain.rewards import PixelReward, WeightedRewardSum
from tests.launch import torchrun
from tests.world_models import tiny_minecraft_suite, tiny_mineworld
from worldmodels.errors import CheckpointError, ConfigError
from worldmodels.mineworld import MineWorld, SamplingConfig, save_safetensors


class EvenTokenReward:
    """Per frame, the fraction of its image tokens that are even: a reward the policy can clearly learn.

    Decoding is deterministic, so the reward reads a frame's tokens back from a table of every frame the model
    decoded (keyed by the frame's bytes): it is a function of the frames, as the trainer requires."""

    name = "even-tokens"

    def __init__(self, model: MineWorld):
        self.table: dict[bytes, np.ndarray] = {}
        decode = model.detokenize

        def recording(ids):
            frames = decode(ids)
            for grid, frame in zip(ids.reshape(len(ids), -1).cpu().numpy(), frames.cpu().numpy()):
                self.table[frame.tobytes()] = grid
            return frames

        model.detokenize = recording

    def __call__(self, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return np.array([[np.mean(self.table[f.tobytes()] % 2 == 0) for f in video[1:]] for video in frames])


def _config(out: Path, *overrides: str) -> PostTrainConfig:
    base = [f"out={out}", "iterations=2", "rollout.group_size=4", "rollout.prompts_per_iter=2", "algo.micro_batch=4",
            "logging.progress=false", "logging.report_to=none", "checkpoint.every=1"]  # fmt: skip
    return load_config(None, base + list(overrides), validate=False)


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


# -- configuration ----------------------------------------------------------------------------------------------------


def test_config_yaml_overrides_and_errors(tmp_path):
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text("model:\n  path: tiny.safetensors\ndata:\n  suite: s\nalgo:\n  beta: 1e-4\n  scale: batch\n"
                         "out: runs/x\n")  # fmt: skip
    config = load_config(yaml_path, ["rollout.group_size=8", "rollout.top_p=0.9", "optim.betas=[0.9, 0.95]"])
    assert config.algo.beta == 1e-4 and config.algo.scale == "batch"  # YAML reads "1e-4" as a string: coerced
    assert config.rollout.group_size == 8 and config.rollout.top_p == 0.9 and config.optim.betas == [0.9, 0.95]
    assert config.off_policy
    defaults = PostTrainConfig()  # RLIR's MineWorld settings
    assert (defaults.optim.lr, defaults.rollout.group_size, defaults.rollout.prompts_per_iter) == (3e-5, 24, 32)
    assert (defaults.algo.eps_low, defaults.algo.eps_high, defaults.algo.beta, defaults.rollout.temperature) == (0.2, 0.2, 0.0, 1.0)
    saved = save_config(config, tmp_path / "resolved.yaml")
    assert load_config(saved) == config
    with pytest.raises(ConfigError, match=r"algo\.betta"):
        load_config(yaml_path, ["algo.betta=0.1"])
    yaml_path.write_text("model:\n  path: x\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"model\.colour"):
        load_config(yaml_path, validate=False)
    with pytest.raises(ConfigError, match="group_size must be >= 2"):
        load_config(None, ["model.path=m", "data.suite=s", "out=o", "rollout.group_size=1"])
    with pytest.raises(ConfigError, match="temperature"):
        load_config(None, ["model.path=m", "data.suite=s", "out=o", "rollout.temperature=0"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(None, ["rollout.group_size=many"], validate=False)
    with pytest.raises(ConfigError, match="model.path is empty"):
        load_config(None, [])


def test_cli_flags_become_config_values():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "m.safetensors", "--data", "suites/train", "--suite", "suites/val",
                              "--reward", "pixel", "--out", "runs/a", "--resume", "auto", "algo.beta=1e-4"])  # fmt: skip
    config = config_from_args(args)
    assert (config.model.path, config.data.suite, config.data.eval_suite) == ("m.safetensors", "suites/train", "suites/val")
    assert (config.reward.kind, config.out, config.checkpoint.resume, config.algo.beta) == ("pixel", "runs/a", "auto", 1e-4)


# -- training in process ----------------------------------------------------------------------------------------------


def test_reward_rises_with_a_learnable_reward(tmp_path):
    model = tiny_mineworld(seed=1)
    model.sampling = SamplingConfig(top_p=0.5)  # a base whose default truncates: rollouts sample as configured
    suite = tiny_minecraft_suite(model, n_items=4, n_frames=3)
    reward = EvenTokenReward(model)
    config = _config(tmp_path / "run", "iterations=3", "rollout.group_size=8", "rollout.prompts_per_iter=4",
                     "algo.micro_batch=16", "optim.lr=1e-2", "optim.min_lr_ratio=1.0", "logging.eval_every=3",
                     "data.eval_items=4", "logging.report_to=tensorboard", "logging.video_every=2")  # fmt: skip
    summary = train(config, model=model, suite=suite, reward_fn=reward, eval_suite=suite)
    log = _log(tmp_path / "run")
    before, *iterations = log
    assert before["step"] == -1 and [r["step"] for r in iterations] == [0, 1, 2]
    # fixed evaluation seeds before and after 3 updates: the policy learned to emit even tokens
    assert iterations[-1]["eval_reward_mean"] > before["eval_reward_mean"] + 0.08
    # ... and the probe pairs it item by item with the first probe
    assert iterations[-1]["eval_reward_change"] == pytest.approx(iterations[-1]["eval_reward_mean"]
                                                                 - before["eval_reward_mean"])  # fmt: skip
    assert iterations[-1]["eval_reward_change"] > 2 * iterations[-1]["eval_reward_change_sem"]
    assert "eval_reward_change" not in before
    assert before["eval_reward_sem"] > 0 and 0 < before["eval_psnr_mean"] <= 100  # the probe's error bar and PSNR
    for record in iterations:
        assert record["ratio_first_microstep_min"] == 1.0 and record["ratio_first_microstep_max"] == 1.0
        assert record["logp_sampler_replay_max_abs_diff"] < 1e-4
        assert len(record["reward_per_frame"]) == 3 and record["samples_trained"] > 0
        assert record["kl_ref"] == 0.0 and record["grad_norm"] > 0
    assert summary["reference"] is None  # beta = 0: no reference model
    assert not summary["off_policy"]
    # the output is a MineWorld file holding the trained weights
    loaded = MineWorld.from_checkpoint(tmp_path / "run" / "model.safetensors")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # its default decoding is what GRPO optimised (temperature 1, untruncated), not the base's; the policy keeps its own
    assert loaded.sampling == SamplingConfig() and model.sampling == SamplingConfig(top_p=0.5)
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000  # reward curves drawn at the end
    videos = sorted((tmp_path / "run" / "videos").glob("iter_000000_*"))
    assert [p.suffix for p in videos] == [".jsonl", ".mp4", ".jsonl", ".mp4"]
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_a_weighted_reward_sum_trains_on_the_sum_and_logs_each_term(tmp_path):
    model = tiny_mineworld(seed=3)
    suite = tiny_minecraft_suite(model, n_items=2, n_frames=2)
    reward = WeightedRewardSum([EvenTokenReward(model), PixelReward()], [1.0, 0.5], labels=["even", "pixel"])
    train(_config(tmp_path / "run", "iterations=1"), model=model, suite=suite, reward_fn=reward)
    (record,) = _log(tmp_path / "run")
    assert record["reward"] == "1*even-tokens + 0.5*pixel:l1+1-ssim"
    assert 0 < record["reward_mean_even"] < 1 and record["reward_mean_pixel"] < 0
    assert record["reward_mean"] == pytest.approx(record["reward_mean_even"] + 0.5 * record["reward_mean_pixel"])


def test_zero_std_groups_are_skipped(tmp_path):
    model = tiny_mineworld(seed=2)
    suite = tiny_minecraft_suite(model, n_items=2, n_frames=2)
    before = {k: v.clone() for k, v in model.transformer.state_dict().items()}
    train(_config(tmp_path / "run", "iterations=1", "logging.samples=true"), model=model, suite=suite,
          reward_fn=lambda frames, actions: np.ones((len(frames), frames.shape[1] - 1)))  # fmt: skip
    (record,) = _log(tmp_path / "run")
    assert record["frac_zero_std"] == 1.0 and record["samples_trained"] == 0 and record["grad_norm"] is None
    for key, value in model.transformer.state_dict().items():
        assert torch.equal(value, before[key]), key  # no optimizer step at all (Adam would move weights on zeros)
    (line,) = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert line["advantages"] == [[0.0] * 4] * 2 and line["train"] == [[False] * 4] * 2


def test_kl_reference_full_copy_and_lora(tmp_path):
    model = tiny_mineworld(seed=4)
    suite = tiny_minecraft_suite(model, n_items=2, n_frames=2)
    reward = EvenTokenReward(model)
    summary = train(_config(tmp_path / "full", "algo.beta=0.1", "optim.lr=1e-2", "rollout.top_p=0.95"), model=model,
                    suite=suite, reward_fn=reward)  # fmt: skip
    first, second = _log(tmp_path / "full")
    assert summary["reference"] == "frozen-copy"
    assert first["kl_ref"] == 0.0 and second["kl_ref"] > 0  # the policy equals the reference until the first step
    assert first["off_policy"] and summary["off_policy"]  # top-p: sampler log-probs differ from the replay's
    assert first["ratio_first_microstep_min"] == first["ratio_first_microstep_max"] == 1.0
    assert first["logp_sampler_replay_max_abs_diff"] > 1e-3
    checkpoint = tmp_path / "full" / "checkpoints" / "iter_000002.safetensors"
    from safetensors import safe_open

    with safe_open(str(checkpoint), framework="pt") as f:
        assert json.loads(f.metadata()["extra"])["off_policy"] is True

    base = tiny_mineworld(seed=5)
    model = tiny_mineworld(seed=5)
    reward = EvenTokenReward(model)
    summary = train(_config(tmp_path / "lora", "algo.beta=0.1", "optim.lr=1e-2", "model.lora_rank=2",
                            "model.lora_targets=[q_proj, v_proj, down_proj]"), model=model, suite=suite,
                    reward_fn=reward)  # fmt: skip
    first, second = _log(tmp_path / "lora")
    assert summary["reference"] == "lora-disabled"
    assert first["kl_ref"] == 0.0 and second["kl_ref"] > 0
    merged = load_file(str(tmp_path / "lora" / "model.safetensors"))
    changed = {k for k, v in base.state_dict().items() if not torch.equal(merged[k], v)}
    assert changed and all(k.split(".")[-2] in ("q_proj", "v_proj", "down_proj") for k in changed)
    MineWorld.from_checkpoint(tmp_path / "lora" / "model.safetensors")  # plain keys: loads like any MineWorld file


def test_corrupted_checkpoint_is_reported_and_nothing_is_deleted(tmp_path):
    model = tiny_mineworld(seed=6)
    suite = tiny_minecraft_suite(model, n_items=2, n_frames=2)
    run = tmp_path / "run"
    train(_config(run, "iterations=2"), model=model, suite=suite, reward_fn=EvenTokenReward(model))
    checkpoints = run / "checkpoints"
    files = sorted(p.name for p in checkpoints.iterdir())
    assert files == ["iter_000001.safetensors", "iter_000002.safetensors", "latest.json"]
    latest = checkpoints / "iter_000002.safetensors"
    data = bytearray(latest.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the tensor data
    latest.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"iter_000002.*corrupted.*--resume .*iter_000001"):
        train(_config(run, "iterations=2", "checkpoint.resume=auto"), model=tiny_mineworld(seed=6), suite=suite,
              reward_fn=EvenTokenReward(model))  # fmt: skip
    assert sorted(p.name for p in checkpoints.iterdir()) == files
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(_config(run, "iterations=2"), model=tiny_mineworld(seed=6), suite=suite, reward_fn=EvenTokenReward(model))


# -- processes: kill -9 + resume, torchrun ----------------------------------------------------------------------------


def _write_inputs(directory: Path) -> tuple[Path, Path]:
    model = tiny_mineworld(seed=7)
    model_path = save_safetensors(model, directory / "tiny.safetensors")
    suite_dir = save_suite(tiny_minecraft_suite(model, n_items=4, n_frames=3), directory / "suite")
    return model_path, suite_dir


def _cli(model_path: Path, suite_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "-m", "rlir", "posttrain", "--model", str(model_path), "--data", str(suite_dir), "--reward", "pixel",
        "--out", str(out), "--resume", "auto", "rollout.group_size=4", "rollout.prompts_per_iter=2",
        "rollout.prompts_per_state=1", "algo.micro_batch=2", "optim.lr=1e-3", "logging.progress=false",
        "logging.report_to=none", "logging.samples=true", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


@pytest.mark.slow
def test_resume_after_kill_is_bit_identical(tmp_path):
    model_path, suite_dir = _write_inputs(tmp_path)
    args = ["iterations=4", "checkpoint.every=1"]
    straight = tmp_path / "straight"
    assert rlir_main(_cli(model_path, suite_dir, straight, *args)[2:]) == 0  # in process (one torch thread, as below)

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, *_cli(model_path, suite_dir, killed, *args)], env=_env())
    latest = killed / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "summary.json").exists()  # it really was interrupted
    subprocess.run([sys.executable, *_cli(model_path, suite_dir, killed, *args)], check=True, env=_env())
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed_from"] is not None

    a, b = _weights(straight), _weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = ("time_", "tokens_per_s", "peak_memory")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(drop) and not k.endswith(drop)} for r in rows]  # noqa: E731
    assert strip(_log(straight)) == strip(_log(killed))  # the log reads like one uninterrupted run


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    """Groups stay whole on a rank and rewards are gathered before normalisation, so both layouts see the same
    rollouts, rewards and advantages; the summed gradient differs from the one-process sum only in float rounding
    (the two ranks' partial sums are added in another order), so weights agree to rounding, not bit for bit."""
    model_path, suite_dir = _write_inputs(tmp_path)
    args = ["iterations=1"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert rlir_main(_cli(model_path, suite_dir, one, *args)[2:]) == 0
    torchrun(*_cli(model_path, suite_dir, two, *args))
    samples_one = [json.loads(x) for x in (one / "samples.jsonl").read_text().splitlines()]
    samples_two = [json.loads(x) for x in (two / "samples.jsonl").read_text().splitlines()]
    assert samples_one == samples_two  # identical prompts, rewards, advantages and kept groups
    (log_one,), (log_two,) = _log(one), _log(two)
    assert log_two["samples_trained"] == log_one["samples_trained"] == 8
    assert log_one["reward_per_frame"] == log_two["reward_per_frame"]
    assert log_two["grad_norm"] == pytest.approx(log_one["grad_norm"], rel=1e-5)  # the averaged first-step gradient
    assert log_two["ratio_first_microstep_min"] == log_two["ratio_first_microstep_max"] == 1.0
    a, b = _weights(one), _weights(two)
    base = load_file(str(model_path))
    moved = [k for k in a if not torch.equal(a[k], base[k])]
    assert moved
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key


@pytest.mark.parametrize("lora", [False, True])
def test_compiled_rollouts_follow_the_updated_weights(tmp_path, lora):
    """Rollouts sampled with the compiled decode step after each update: their log-probs are the replay's (up to
    rounding), so the step reads the current weights (in-place updates, or LoRA's parametrized ones)."""
    model = tiny_mineworld(seed=6)
    model.compile = True
    suite = tiny_minecraft_suite(model, n_items=2, n_frames=2)
    options = ["model.lora_rank=2"] if lora else []
    train(_config(tmp_path / "run", "iterations=3", "optim.lr=1e-2", *options), model=model, suite=suite,
          reward_fn=EvenTokenReward(model))  # fmt: skip
    log = _log(tmp_path / "run")
    assert len(log) == 3 and all(r["grad_norm"] > 0 for r in log)
    for record in log:
        assert record["ratio_first_microstep_min"] == record["ratio_first_microstep_max"] == 1.0
        assert record["logp_sampler_replay_max_abs_diff"] < 1e-4
    decoder = next(iter(model._decoders.values()))
    assert decoder._static_step is not None and decoder._static_step.fallback_reason is None
