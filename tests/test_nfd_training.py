"""worldmodels.training.nfd (``rlir train nfd``): the flow-matching loss and its per-frame times checked against
their definitions, windows inside episodes, a tiny two-stage run through the CLI that writes a loadable model and
resumes bit-identically, and two gloo processes under torchrun matching one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.launch import torchrun
from tests.world_models import tiny_mineworld, tiny_nfd
from worldmodels.data.shards import write_manifest, write_shard
from worldmodels.hashing import sha256_file
from worldmodels.mineworld import save_safetensors
from worldmodels.nfd import NFD, TINY_AE_CONFIG, get_preset, save_nfd
from worldmodels.registry import load_world_model
from worldmodels.training.nfd import (
    LatentData,
    flow_matching_loss,
    gather_windows,
    sample_flow_times,
    save_autoencoder,
)
from rlir.cli import main as rlir_main

EPISODES, LENGTH = 6, 12


def moving_square_episode(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 4x4 bright square on a coloured background, moved one pixel by actions 1-4 (left, right, up, down)."""
    frames = np.empty((LENGTH, 16, 16, 3), dtype=np.uint8)
    actions = rng.integers(0, 5, LENGTH)
    actions[-1] = -1
    background = rng.integers(0, 120, 3)
    y, x = rng.integers(0, 13, 2)
    for k in range(LENGTH):
        frames[k] = background
        frames[k, y : y + 4, x : x + 4] = 255
        if k + 1 < LENGTH:
            dy, dx = {1: (0, -1), 2: (0, 1), 3: (-1, 0), 4: (1, 0)}.get(int(actions[k]), (0, 0))
            y, x = int(np.clip(y + dy, 0, 12)), int(np.clip(x + dx, 0, 12))
    return frames, actions


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("squares")
    rng = np.random.default_rng(0)
    episodes = [moving_square_episode(rng) for _ in range(EPISODES)]
    shards = []
    for j in range(2):
        part = episodes[j * 3 : (j + 1) * 3]
        frames = np.concatenate([f for f, _ in part])
        actions = np.concatenate([a for _, a in part])
        shards.append(write_shard(root / f"shard-{j:05d}.npz", frames=frames, actions=actions,
                                  rewards=np.zeros(len(frames)), terminated=np.zeros(len(frames), bool),
                                  episode_starts=np.arange(3) * LENGTH))  # fmt: skip
    write_manifest(root, shards)
    return root


@pytest.fixture(scope="module")
def ae_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "ae.json"
    path.write_text(json.dumps(TINY_AE_CONFIG))
    return path


def test_flow_times_are_logit_normal_with_clean_context_prefixes():
    g = torch.Generator().manual_seed(0)
    t, mask = sample_flow_times(g, 4000, 6, context_noise=0.05, context_prob=0.5)
    free = t[mask]
    logit = torch.log(free / (1 - free))
    assert abs(float(logit.mean())) < 0.03 and abs(float(logit.std()) - 1.0) < 0.03  # logit(t) ~ N(0, 1)
    assert torch.all(t[~mask] == 0.05)
    prefix = (~mask).sum(1)
    assert torch.equal(~mask, torch.arange(6)[None] < prefix[:, None])  # the context is a prefix
    assert abs(float((prefix > 0).float().mean()) - 0.5) < 0.03 and int(prefix.max()) == 5  # one frame stays free
    t, mask = sample_flow_times(g, 10, 6, context_noise=0.05, context_prob=0.0)
    assert mask.all() and (t > 0).all() and (t < 1).all()


def test_flow_matching_loss_is_the_masked_velocity_mse():
    model = tiny_nfd(seed=2)
    g = torch.Generator().manual_seed(1)
    z, noise = torch.randn(3, 4, 4, 4, 4, generator=g), torch.randn(3, 4, 4, 4, 4, generator=g)
    times, mask = sample_flow_times(g, 3, 4, context_noise=0.05, context_prob=1.0)
    actions, present = torch.randint(0, 17, (3, 4), generator=g), torch.ones(3, 4, dtype=torch.bool)
    present[:, 0] = False
    loss, per_frame = flow_matching_loss(model.transformer, z, actions, present, times, noise, mask)
    expected, count = 0.0, 0
    for b in range(3):
        x = torch.stack([(1 - times[b, j]) * z[b, j] + times[b, j] * noise[b, j] for j in range(4)])[None]
        with torch.no_grad():
            v = model.transformer(x, times[b : b + 1], actions[b : b + 1], present[b : b + 1])[0]
        for j in range(4):
            if mask[b, j]:
                expected += float(((v[j] - (noise[b, j] - z[b, j])) ** 2).mean())
                count += 1
    assert count < 12 and loss.item() == pytest.approx(expected / count, rel=1e-5)
    assert per_frame.shape == (3, 4)


def test_windows_carry_the_action_that_led_to_each_frame():
    latents = np.arange(10, dtype=np.float16)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float16)
    actions = np.array([3, 1, 4, 1, -1, 5, 9, 2, 6, -1])
    data = LatentData(latents, actions, np.array([5, 5]), key="k")
    z, a, present = gather_windows(data, np.array([0, 6]), 3)
    assert z[:, :, 0, 0, 0].tolist() == [[0, 1, 2], [6, 7, 8]]
    assert a.tolist() == [[0, 3, 1], [0, 9, 2]] and present.tolist() == [[False, True, True]] * 2


def _cli(data: Path, ae_config: Path, out: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--out", str(out), "--size", "nfd-tiny", "--ae-config", str(ae_config),
            "--ae-steps", "4", "--ae-batch-size", "4", "--steps", "6", "--batch-size", "4", "--warmup", "2",
            "--val-windows", "4", "--eval-every", "3", "--log-every", "1", "--checkpoint-every", "2",
            "--val-fraction", "0.2", "--lr", "3e-3", "--no-progress", *extra]  # fmt: skip


def _log(path: Path) -> list[dict]:
    drop = ("s_per_step",)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def test_cli_run_finishes_loads_and_resumes_bit_identically(data, ae_config, tmp_path, capsys):
    straight = tmp_path / "straight" / "nfd.safetensors"
    assert rlir_main(["train", "nfd", *_cli(data, ae_config, straight)]) == 0
    summary = json.loads(straight.with_suffix(".json").read_text())
    assert summary["finished"] and summary["steps_done"] == 6 and summary["world_size"] == 1
    assert set(summary["generation"]) == {"euler10", "dpmpp2m18"}
    assert all(np.isfinite(v["psnr"]) for v in summary["generation"].values())
    assert [v["step"] for v in summary["validations"]] == [0, 3, 6]
    model = load_world_model(straight)
    assert isinstance(model, NFD) and model.config.name == "nfd-tiny"
    frames = torch.zeros(1, 1, 16, 16, 3, dtype=torch.uint8)
    state = model.start(frames, None, [torch.Generator().manual_seed(0)])
    assert model.step(state, torch.tensor([2])).shape == (1, 16, 16, 3)

    resumed = tmp_path / "resumed" / "nfd.safetensors"
    assert rlir_main(["train", "nfd", *_cli(data, ae_config, resumed, "--stop-after", "3")]) == 0
    assert not resumed.exists() and (resumed.parent / "nfd.run" / "checkpoint.safetensors").is_file()
    assert rlir_main(["train", "nfd", *_cli(data, ae_config, resumed, "--resume", "auto")]) == 0
    a, b = load_file(str(straight)), load_file(str(resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(resumed.with_suffix(".json").read_text())["resumed_from"] == 3
    assert _log(straight.parent / "nfd.run" / "log.jsonl") == _log(resumed.parent / "nfd.run" / "log.jsonl")
    # the trained transformer moved away from its initialisation (adaLN-Zero: output layer 0 at the start)
    assert a["transformer.final_proj.weight"].abs().max() > 0
    capsys.readouterr()
    assert rlir_main(["train", "nfd", *_cli(data, ae_config, resumed, "--resume", "auto", "--stop-after", "4", "--lr", "1e-3")]) == 2
    assert "belongs to another run" in capsys.readouterr().err  # resuming with other settings is refused


def test_warm_start_continues_the_init_with_its_autoencoder_and_refuses_what_does_not_fit(
    data, ae_config, tmp_path, capsys
):
    """``--init``: the init's transformer and autoencoder, a fresh schedule; step 0 scores the init on the same
    validation windows; the summary nests the init's own summary. Another architecture, another autoencoder, a
    MineWorld file, or resuming with another init are refused."""
    init = tmp_path / "init" / "nfd.safetensors"
    assert rlir_main(["train", "nfd", *_cli(data, ae_config, init)]) == 0
    init_summary = json.loads(init.with_suffix(".json").read_text())
    warm = tmp_path / "warm" / "nfd.safetensors"
    assert rlir_main(["train", "nfd", *_cli(data, ae_config, warm, "--init", str(init))]) == 0
    summary = json.loads(warm.with_suffix(".json").read_text())
    assert summary["init"]["sha256"] == sha256_file(init) and summary["init"]["training"] == init_summary
    assert summary["settings"]["init_sha256"] == sha256_file(init)
    assert summary["validations"][0]["loss"] == pytest.approx(init_summary["final"]["loss"], rel=1e-6)
    assert summary["validations"][0]["loss_next"] == pytest.approx(init_summary["final"]["loss_next"], rel=1e-6)
    a, b = load_file(str(init)), load_file(str(warm))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("autoencoder."))  # the init's autoencoder, frozen
    assert not torch.equal(a["transformer.final_proj.weight"], b["transformer.final_proj.weight"])  # trained on
    init_ae, warm_ae = (load_file(str(path.parent / "nfd.autoencoder.safetensors")) for path in (init, warm))
    assert init_ae.keys() == warm_ae.keys() and all(torch.equal(init_ae[k], warm_ae[k]) for k in init_ae)

    def refused(out: Path, *args: str) -> str:
        capsys.readouterr()
        assert rlir_main(["train", "nfd", *_cli(data, ae_config, out, *args)]) == 2
        return capsys.readouterr().err

    deeper = tmp_path / "deeper.json"
    deeper.write_text(json.dumps(get_preset("nfd-tiny").to_dict() | {"num_hidden_layers": 3}))
    assert "another architecture" in refused(tmp_path / "a" / "nfd.safetensors", "--init", str(init), "--config",
                                             str(deeper))  # fmt: skip
    other_ae = save_autoencoder(tiny_nfd(seed=3).autoencoder, tmp_path / "other.autoencoder.safetensors")
    err = refused(tmp_path / "b" / "nfd.safetensors", "--init", str(init), "--autoencoder", str(other_ae))
    assert "is not the autoencoder of --init" in err and "leave out --autoencoder" in err
    mineworld = save_safetensors(tiny_mineworld(), tmp_path / "mineworld.safetensors")
    assert "not an NFD model file" in refused(tmp_path / "c" / "nfd.safetensors", "--init", str(mineworld))
    other_init = save_nfd(tiny_nfd(seed=3), tmp_path / "other" / "nfd.safetensors")
    resumed = tmp_path / "resumed" / "nfd.safetensors"
    assert rlir_main(["train", "nfd", *_cli(data, ae_config, resumed, "--init", str(init), "--stop-after", "2")]) == 0
    err = refused(resumed, "--init", str(other_init), "--resume", "auto")
    assert "is not the autoencoder of --init" in err and "pass another --out" in err


@pytest.mark.slow
def test_two_gloo_processes_match_one(data, ae_config, tmp_path):
    """Every rank takes its rows of each global batch and DDP averages the gradients of a loss normalised by the
    global frame count, so both layouts take the same steps up to float summation order."""
    args = ["--steps", "3", "--ae-steps", "2", "--eval-every", "0", "--checkpoint-every", "3"]
    one = tmp_path / "one" / "nfd.safetensors"
    assert rlir_main(["train", "nfd", *_cli(data, ae_config, one, *args)]) == 0
    two = tmp_path / "two" / "nfd.safetensors"
    torchrun("-m", "rlir", "train", "nfd", *_cli(data, ae_config, two, *args))
    assert json.loads(two.with_suffix(".json").read_text())["world_size"] == 2
    a, b = load_file(str(one)), load_file(str(two))
    assert a.keys() == b.keys() and a["transformer.final_proj.weight"].abs().max() > 0  # trained (zero at init)
    for key in a:  # Adam turns rounding-level gradient differences of near-zero entries into ~1e-5 of weight
        assert torch.allclose(a[key], b[key], atol=5e-5, rtol=0), key
    log_one, log_two = _log(one.parent / "nfd.run" / "log.jsonl"), _log(two.parent / "nfd.run" / "log.jsonl")
    assert [r["loss"] for r in log_one if "loss" in r] == pytest.approx([r["loss"] for r in log_two if "loss" in r],
                                                                         rel=1e-4)  # fmt: skip
