"""Flow-GRPO for NFD (posttrain.flow): the SDE's marginals and Gaussian steps checked numerically, the trained-step
selection, group rollouts whose packed replay reproduces the KV-cached sampler (context slides included), a ratio of
exactly 1 at the first micro-step, and `rlir posttrain` on an NFD checkpoint: a learnable reward rises, the KL
reference, resume bit-identically, and the RLIR defaults."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from evaluation.suites import SuiteItem, make_suite, save_suite
from posttrain.data import prompts_from_suite
from posttrain.flow.config import FlowPostTrainConfig, load_flow_config
from posttrain.flow.rollout import FlowSampling, flow_rollout, replay_logprobs
from posttrain.flow.sde import gaussian_logprob, gaussian_mean_kl, sde_sigma, sde_step, select_train_steps
from posttrain.loop import train
from rlir.cli import main as rlir_main
from rlir.commands.posttrain import add_arguments, config_from_args
from tests.world_models import tiny_nfd
from worldmodels.errors import ConfigError
from worldmodels.nfd import NFD, save_nfd, time_grid

MU, S0 = 0.7, 0.5


def gaussian_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """Exact rectified-flow velocity of data N(MU, S0^2) (see tests/test_nfd_model.py)."""
    var = (1 - t) ** 2 * S0**2 + t**2
    return -MU + (t - (1 - t) * S0**2) / var * (x - (1 - t) * MU)


def tiny_suite(n_items: int = 3, n_frames: int = 3, seed: int = 0, name: str = "tiny-crafter-16"):
    rng = np.random.default_rng(seed)
    items = [SuiteItem(id=f"clip_{i}", context_frames=rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8),
                       context_actions=np.zeros(0, np.int64), actions=rng.integers(0, 17, n_frames),
                       ground_truth=rng.integers(0, 256, (n_frames, 16, 16, 3), dtype=np.uint8))
             for i in range(n_items)]  # fmt: skip
    return make_suite(name, 1, "crafter", items, description="tiny NFD suite")


def brightness(frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Per generated frame, its mean intensity in [0, 1]."""
    return frames[:, 1:].astype(np.float64).mean(axis=(2, 3, 4)) / 255.0


class FirstChannelReward:
    """Per frame, the mean of its latent's first channel: a reward the policy can clearly learn (a shift of its
    velocity moves it), where the random decoder's group norms hide simpler pixel statistics.

    Decoding is deterministic, so the reward reads a frame's latent back from a table of every frame the model
    decoded (keyed by the frame's bytes): it is a function of the frames, as the trainer requires."""

    name = "first-latent-channel"

    def __init__(self, model: NFD):
        self.table: dict[bytes, float] = {}
        decode = model.decode

        def recording(latents):
            frames = decode(latents)
            for z, frame in zip(latents.cpu(), frames.cpu().numpy()):
                self.table[frame.tobytes()] = float(z[0].mean())
            return frames

        model.decode = recording

    def __call__(self, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return np.array([[self.table[f.tobytes()] for f in video[1:]] for video in frames])


# -- the SDE ----------------------------------------------------------------------------------------------------------


def test_sde_drift_is_the_velocity_minus_half_sigma_squared_times_the_score():
    """dx = [v - sigma^2 / 2 * score] dt + sigma dW has the ODE's marginals (Fokker-Planck); for Gaussian data the
    score of x_t ~ N((1 - t) MU, S_t^2) is -(x - (1 - t) MU) / S_t^2, computed here without the velocity."""
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    for t, s in ((0.9, 0.8), (0.5, 0.45), (0.2, 0.1)):
        var = (1 - t) ** 2 * S0**2 + t**2
        score = -(x - (1 - t) * MU) / var
        sigma = 0.75 * math.sqrt(t / (1 - t))
        mean, std = sde_step(x, gaussian_velocity(x, t), torch.tensor(t), torch.tensor(s), t_first=0.9,
                             noise_level=0.75)  # fmt: skip
        expected = x + (gaussian_velocity(x, t) - sigma**2 / 2 * score) * (s - t)
        torch.testing.assert_close(mean.double(), expected, rtol=1e-5, atol=1e-6)
        assert float(std) == pytest.approx(sigma * math.sqrt(t - s), rel=1e-6)
    # sigma_t = a sqrt(t / (1 - t)); at t = 1 the grid's next time stands in for t in the denominator (Flow-GRPO)
    assert sde_sigma(torch.tensor([1.0, 0.5]), 0.9, 0.75).tolist() == pytest.approx([0.75 * math.sqrt(10), 0.75])
    assert sde_sigma(torch.tensor([1.0, 0.5]), 0.9, 0.3, "dance").tolist() == pytest.approx([0.3, 0.3])


def test_sde_samples_have_the_flows_marginals():
    g = torch.Generator().manual_seed(0)
    steps = 400
    grid = time_grid(steps)
    x = torch.randn(100_000, 1, generator=g, dtype=torch.float64)
    checked = 0
    for i in range(steps - 1):
        t, s = grid[i], grid[i + 1]
        mean, std = sde_step(x, gaussian_velocity(x, t), torch.tensor(t), torch.tensor(s), t_first=grid[1],
                             noise_level=0.75)  # fmt: skip
        x = (mean + std * torch.randn(x.shape, generator=g)).double()
        if i + 1 in (100, 200, 360):  # t = 0.75, 0.5, 0.1
            marginal_std = math.sqrt((1 - s) ** 2 * S0**2 + s**2)
            assert abs(float(x.mean()) - (1 - s) * MU) < 0.01
            assert abs(float(x.std()) / marginal_std - 1) < 0.02
            checked += 1
    assert checked == 3


def test_gaussian_logprob_and_mean_kl_follow_their_formulas():
    g = torch.Generator().manual_seed(1)
    mean, sample = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    std = torch.tensor([0.3, 0.7, 1.1]).reshape(3, 1, 1, 1)
    expected = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(sample).flatten(1).mean(1)
    torch.testing.assert_close(gaussian_logprob(sample, mean, std), expected)
    other = torch.randn(3, 4, 2, 2, generator=g)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std.expand_as(mean)),
                                           torch.distributions.Normal(other, std.expand_as(mean)))  # fmt: skip
    torch.testing.assert_close(gaussian_mean_kl(mean, other, std), kl.flatten(1).mean(1))


def test_trained_steps_are_a_fraction_of_the_non_final_ones():
    chosen = select_train_steps(torch.Generator().manual_seed(2), 10, 0.6, frames=200)
    assert chosen.shape == (200, 5)  # int(0.6 * 9) of the 9 non-final steps of a 10-step chain
    assert all(row.tolist() == sorted(set(row.tolist())) for row in chosen) and int(chosen.max()) <= 8
    counts = torch.bincount(chosen.flatten(), minlength=10)
    assert counts[9] == 0 and counts[:9].min() > 0.4 * counts[:9].max()  # every non-final step gets picked
    assert torch.equal(chosen, select_train_steps(torch.Generator().manual_seed(2), 10, 0.6, frames=200))
    assert select_train_steps(torch.Generator().manual_seed(0), 2, 0.6, frames=1).tolist() == [[0]]


# -- rollouts and replay ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> NFD:
    return tiny_nfd(seed=5)


def test_rollouts_share_the_initial_noise_of_a_group_and_do_not_depend_on_the_batch(model):
    suite = tiny_suite(n_items=2, n_frames=2)
    sampling = FlowSampling(steps=4, fraction=1.0)
    prompts = prompts_from_suite(suite, [0, 1], keys=[0, 1])
    batch = flow_rollout(model, prompts, group_size=3, sampling=sampling, seed=1, iteration=0)
    assert batch.x.shape == (6, 2, 3, *batch.latents.shape[2:]) and batch.step_index[0, 0].tolist() == [0, 1, 2]
    x1 = batch.x[:, :, 0]  # every step is trained (fraction 1), so step 0's input is each frame's x_1
    for p in range(2):
        group = x1[p * 3 : (p + 1) * 3]
        assert torch.equal(group[0], group[1]) and torch.equal(group[0], group[2])
        assert not torch.allclose(batch.latents[p * 3], batch.latents[p * 3 + 1])  # the SDE noise differs
    assert not torch.equal(x1[0], x1[3])
    alone = flow_rollout(model, prompts_from_suite(suite, [1], keys=[1]), group_size=3, sampling=sampling, seed=1,
                         iteration=0)  # fmt: skip
    for name in ("latents", "x", "x_next", "sampler_logprobs", "step_index", "frame_latents"):
        assert torch.equal(getattr(alone, name), getattr(batch, name)[3:]), name
    other = flow_rollout(model, prompts, group_size=3, sampling=sampling, seed=1, iteration=1)
    assert not torch.allclose(other.latents, batch.latents)


def test_replay_reproduces_the_cached_sampler_and_its_ratio_is_exactly_one(model):
    """Five frames after one context frame in a window of four: the rollout slides, and the packed replay of every
    window still scores each trained step under exactly the context it was sampled with."""
    suite = tiny_suite(n_items=2, n_frames=5, seed=3)
    batch = flow_rollout(model, prompts_from_suite(suite, [0, 1]), group_size=2, sampling=FlowSampling(steps=6),
                         seed=0, iteration=0)  # fmt: skip
    assert batch.window_start.tolist() == [0, 0, 0, 2, 2]  # 1 + 3 frames fill the window; keep 2, then 2 more
    assert batch.step_index.shape == (4, 5, 3)
    samples = torch.tensor([0, 2, 3])
    with torch.no_grad():
        old, mean, std = replay_logprobs(model.transformer, batch, samples)
    torch.testing.assert_close(old, batch.sampler_logprobs[samples], rtol=0, atol=1e-4)
    assert (old.std() > 0.01) and mean.shape == (3, 5, 3, 4, 4, 4) and std.shape == (3, 5, 3, 1, 1, 1)
    model.transformer.requires_grad_(True)
    try:
        logp, _, _ = replay_logprobs(model.transformer, batch, samples)
        assert logp.requires_grad and torch.equal(torch.exp(logp - old), torch.ones_like(old))
        logp.sum().backward()
        assert model.transformer.final_proj.weight.grad.abs().max() > 0
    finally:
        model.transformer.requires_grad_(False).zero_grad(set_to_none=True)


# -- the trainer ------------------------------------------------------------------------------------------------------


def _config(out: Path, *overrides: str) -> FlowPostTrainConfig:
    base = [f"out={out}", "iterations=2", "rollout.group_size=4", "rollout.prompts_per_iter=2", "rollout.steps=4",
            "algo.micro_batch=8", "logging.progress=false", "logging.report_to=none",
            "checkpoint.every=1"]  # fmt: skip
    return load_flow_config(None, base + list(overrides), validate=False)


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_defaults_are_rlirs_nfd_settings_and_the_cli_picks_them(tmp_path, model):
    defaults = FlowPostTrainConfig()
    assert (defaults.optim.lr, defaults.rollout.group_size, defaults.rollout.prompts_per_iter) == (1e-5, 24, 16)
    assert (defaults.rollout.steps, defaults.rollout.noise_level, defaults.rollout.timestep_fraction) == (10, 0.75, 0.6)
    assert (defaults.algo.clip_range, defaults.algo.beta, defaults.algo.adv_clip) == (1e-4, 0.0, 5.0)
    assert (defaults.rollout.eval_sampler, defaults.rollout.eval_steps) == ("dpmpp2m", 18)
    import argparse

    checkpoint = save_nfd(model, tmp_path / "nfd.safetensors")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(["--model", str(checkpoint), "--data", "s", "--out", "o",
                                                 "rollout.steps=6", "algo.beta=0.01"]))  # fmt: skip
    assert isinstance(config, FlowPostTrainConfig) and config.rollout.steps == 6 and config.algo.beta == 0.01
    (tmp_path / "run.yaml").write_text(f"model:\n  path: {checkpoint}\nrollout:\n  noise_level: 0.5\n")
    config = config_from_args(parser.parse_args(["--config", str(tmp_path / "run.yaml"), "--data", "s", "--out", "o"]))
    assert isinstance(config, FlowPostTrainConfig) and config.rollout.noise_level == 0.5
    with pytest.raises(ConfigError, match="rollout.steps must be >= 2"):
        load_flow_config(None, ["model.path=m", "data.suite=s", "out=o", "rollout.steps=1"])
    with pytest.raises(ConfigError, match=r"data\.n_frames must be >= 1.*logging\.videos"):  # the shared sections
        load_flow_config(None, ["model.path=m", "data.suite=s", "out=o", "data.n_frames=0", "logging.videos=0"])
    with pytest.raises(ConfigError, match=r"rollout\.temperature"):  # an AR-only key
        load_flow_config(None, ["rollout.temperature=1.0"])
    with pytest.raises(ConfigError, match="Flow-GRPO"):
        from posttrain.config import load_config

        train(load_config(None, [f"out={tmp_path / 'x'}"], validate=False), model=tiny_nfd(), suite=tiny_suite(),
              reward_fn=brightness)  # fmt: skip


def test_a_learnable_reward_rises_and_the_first_ratio_is_one(tmp_path):
    model = tiny_nfd(seed=6)
    suite = tiny_suite(n_items=4, n_frames=2, seed=4)
    run = tmp_path / "run"
    config = _config(run, "iterations=4", "rollout.group_size=6", "rollout.prompts_per_iter=2", "optim.lr=1e-2",
                     "optim.min_lr_ratio=1.0", "logging.eval_every=4", "data.eval_items=4", "rollout.eval_steps=6",
                     "algo.micro_batch=6", "logging.video_every=3", "logging.samples=true")  # fmt: skip
    summary = train(config, model=model, suite=suite, reward_fn=FirstChannelReward(model), eval_suite=suite)
    before, *iterations = _log(run)
    assert before["step"] == -1 and [r["step"] for r in iterations] == [0, 1, 2, 3]
    # fixed evaluation seeds (ODE sampler) before and after 4 updates: the policy learned to raise the channel
    assert iterations[-1]["eval_reward_mean"] > before["eval_reward_mean"] + 0.2
    for record in iterations:
        assert record["ratio_first_microstep_min"] == 1.0 and record["ratio_first_microstep_max"] == 1.0
        assert record["logp_sampler_replay_max_abs_diff"] < 1e-4
        assert record["samples_trained"] == 12 and record["grad_norm"] > 0 and record["kl_ref"] == 0.0
    assert summary["paradigm"] == "flow-grpo" and summary["reference"] is None
    assert summary["sampling"]["trained_steps_per_frame"] == 1  # int(0.6 * 3) of a 4-step chain's 3 SDE steps
    loaded = NFD.from_checkpoint(run / "model.safetensors")  # an NFD file with the trained weights
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert sorted(p.suffix for p in (run / "videos").glob("iter_000000_*")) == [".jsonl", ".jsonl", ".mp4", ".mp4"]
    lines = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and np.allclose(np.sum(lines[0]["advantages"], axis=1), 0, atol=1e-9)


def test_kl_reference_and_minibatches_go_off_policy(tmp_path):
    model = tiny_nfd(seed=7)
    suite = tiny_suite(n_items=2, n_frames=2, seed=5)
    summary = train(_config(tmp_path / "run", "algo.beta=0.1", "optim.lr=1e-2", "algo.minibatches=2",
                            "algo.micro_batch=2"), model=model, suite=suite, reward_fn=brightness)  # fmt: skip
    first, second = _log(tmp_path / "run")
    assert summary["reference"] == "frozen-copy"
    assert first["kl_ref"] > 0 and second["kl_ref"] > first["kl_ref"]  # 0 until the first of two steps
    assert isinstance(first["grad_norm"], list) and len(first["grad_norm"]) == 2
    assert first["ratio_first_microstep_min"] == first["ratio_first_microstep_max"] == 1.0
    assert first["ratio_min"] < 1.0 < first["ratio_max"]  # the second step's ratios moved off 1


def test_resuming_with_other_settings_is_refused(tmp_path):
    suite = tiny_suite(n_items=2, n_frames=2, seed=6)
    run = tmp_path / "run"
    train(_config(run, "iterations=1"), model=tiny_nfd(seed=8), suite=suite, reward_fn=brightness)
    with pytest.raises(ConfigError, match="another run"):
        train(_config(run, "iterations=1", "rollout.noise_level=0.5", "checkpoint.resume=auto"),
              model=tiny_nfd(seed=8), suite=suite, reward_fn=brightness)  # fmt: skip
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        train(_config(run, "iterations=1"), model=tiny_nfd(seed=8), suite=suite, reward_fn=brightness)


def test_cli_posttrains_an_nfd_checkpoint_and_resumes(tmp_path):
    checkpoint = save_nfd(tiny_nfd(seed=9), tmp_path / "nfd.safetensors")
    suite_dir = save_suite(tiny_suite(n_items=2, n_frames=2, seed=7), tmp_path / "suite")
    args = ["--model", str(checkpoint), "--data", str(suite_dir), "--reward", "pixel", "--resume", "auto",
            "rollout.group_size=3", "rollout.prompts_per_iter=2", "rollout.steps=4", "algo.micro_batch=3",
            "optim.lr=1e-2", "iterations=3", "checkpoint.every=1", "logging.progress=false",
            "logging.report_to=none", "logging.samples=true"]  # fmt: skip
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert rlir_main(["posttrain", *args, "--out", str(straight)]) == 0
    assert rlir_main(["posttrain", *args, "--out", str(killed)]) == 0
    (killed / "model.safetensors").unlink()  # as if killed after the 2nd checkpoint: drop the last one
    checkpoints = killed / "checkpoints"
    (checkpoints / "iter_000003.safetensors").unlink()
    pointer = json.loads((checkpoints / "latest.json").read_text())
    assert pointer["iteration"] == 3
    from worldmodels.hashing import sha256_file

    previous = checkpoints / "iter_000002.safetensors"
    (checkpoints / "latest.json").write_text(json.dumps({"file": previous.name, "sha256": sha256_file(previous),
                                                          "iteration": 2}))  # fmt: skip
    assert rlir_main(["posttrain", *args, "--out", str(killed)]) == 0
    a, b = load_file(str(straight / "model.safetensors")), load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    drop = ("time_", "tokens_per_s", "frames_per_s", "peak_memory")
    def strip(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if not k.startswith(drop) and not k.endswith(drop)} for r in rows]

    assert strip(_log(straight)) == strip(_log(killed))
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed_from"].endswith("iter_000002.safetensors") and summary["reward"].startswith("pixel")
    initial = load_file(str(checkpoint))
    assert any(not torch.equal(a[k], initial[k]) for k in a)


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    """Groups stay whole on a rank and rewards are gathered before normalisation: both layouts see the same
    rollouts, rewards and advantages, and the summed gradient differs only in float summation order."""
    from tests.launch import torchrun

    checkpoint = save_nfd(tiny_nfd(seed=10), tmp_path / "nfd.safetensors")
    suite_dir = save_suite(tiny_suite(n_items=2, n_frames=2, seed=8), tmp_path / "suite")
    args = ["--model", str(checkpoint), "--data", str(suite_dir), "--reward", "pixel", "rollout.group_size=3",
            "rollout.prompts_per_iter=2", "rollout.steps=4", "algo.micro_batch=3", "optim.lr=1e-3", "iterations=1",
            "logging.progress=false", "logging.report_to=none", "logging.samples=true"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    assert rlir_main(["posttrain", *args, "--out", str(one)]) == 0
    torchrun("-m", "rlir", "posttrain", *args, "--out", str(two))
    samples = [[json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()] for run in (one, two)]
    assert samples[0] == samples[1]  # identical prompts, rewards, advantages and kept groups
    (log_one,), (log_two,) = _log(one), _log(two)
    assert log_one["samples_trained"] == log_two["samples_trained"] == 6
    assert log_two["ratio_first_microstep_min"] == log_two["ratio_first_microstep_max"] == 1.0
    assert log_two["grad_norm"] == pytest.approx(log_one["grad_norm"], rel=1e-5)
    a, b = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=0), key
