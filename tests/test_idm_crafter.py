"""evaluation.idm.crafter and evaluation.idm.train: a Crafter IDM that learns to read moves from real recordings,
round-trips through safetensors with integrity checks, rejects bad frames, and trains deterministically."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.metrics import f1_score, precision_recall_fscore_support

from evaluation.idm import InverseDynamicsModel
from evaluation.idm.crafter import CrafterIDM, CrafterIDMConfig
from rlir.commands.train import register
from evaluation.idm.train import (
    WindowSampler,
    crafter_action_report,
    split_episodes,
    summary_path,
    train_crafter_idm,
)
from rlir_env.crafter.record import record
from worldmodels.actions.crafter import ACTION_NAMES, N_ACTIONS
from worldmodels.data.shards import ShardDataset
from worldmodels.errors import CheckpointError, ConfigError, DataError, FrameError, IntegrityError
from worldmodels.hashing import sha256_file

# 36 px frames with 4 px cells: the same 9 x 9 cell grid as the real 72 px / 8 px setting, at a quarter of the pixels.
TINY = CrafterIDMConfig(width=16, depth=1, frame_size=(36, 36), cell=4, cell_channels=16, window=8)
MOVES_ONLY = [1.0] * 5 + [0.0] * 12  # noop, move_left, move_right, move_up, move_down


@pytest.fixture(scope="module")
def moves_data(tmp_path_factory) -> Path:
    """Eight 75-frame episodes of i.i.d. uniform noop / moves: no temporal pattern an IDM could exploit, and most
    moves shift the view by one cell, so the actions are readable from the frames alone."""
    root = tmp_path_factory.mktemp("crafter-moves")
    record(root, n_frames=600, shard_frames=150, seed=3, policy="uniform", size=36, episode_length=75,
           policy_kwargs={"action_weights": MOVES_ONLY})  # fmt: skip
    return root


@pytest.fixture(scope="module")
def trained(moves_data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("idm") / "moves.safetensors"
    summary = train_crafter_idm(moves_data, out, config=TINY, seed=0, steps=120, batch_size=16, lr=3e-3,
                                warmup_steps=10, eval_fraction=0.25, threads=1, progress=False)  # fmt: skip
    return out, summary


def random_frames(batch: int, n_frames: int, size: int = 36, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, n_frames, size, size, 3), dtype=np.uint8)


def fresh_model(seed: int = 0, config: CrafterIDMConfig = TINY) -> CrafterIDM:
    torch.manual_seed(seed)
    return CrafterIDM(config, name="tiny")


# -- learning -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_short_training_reads_moves_on_held_out_episodes(moves_data, trained):
    out, summary = trained
    report = summary["validation"]
    assert report["n"] >= 100
    # Majority is ~0.23 on five i.i.d. classes; a model that does not read the frames cannot beat it by much.
    assert report["accuracy"] > report["majority_accuracy"] + 0.3
    moves = ("move_left", "move_right", "move_up", "move_down")
    assert np.mean([report["per_action"][m]["recall"] for m in moves]) > 0.5
    assert report["tasks"]["movement"]["f1_macro"] > 0.5

    # the validation episodes were never trained on, and the scores are reproducible from the saved file
    (data,) = summary["data"]
    held_out = data["eval_episodes"]
    assert held_out and data["train_episodes"] + len(held_out) == ShardDataset(moves_data).n_episodes
    model = CrafterIDM.load(out, expected_sha256=summary["weights_sha256"])
    dataset = ShardDataset(moves_data)
    frames, actions = WindowSampler([(dataset, np.array(held_out))], TINY.window).tiled()
    again = crafter_action_report(actions, model.predict_actions(frames))
    assert again["accuracy"] == report["accuracy"] and again["confusion"] == report["confusion"]

    # files: weights + JSON summary next to them, the summary also inside the weights' metadata
    written = json.loads(summary_path(out).read_text())
    assert written == json.loads(json.dumps(summary))
    assert written["weights_sha256"] == sha256_file(out)
    assert model.summary["validation"]["accuracy"] == report["accuracy"]
    assert model.name == "moves" and model.sha256 == sha256_file(out)


@pytest.mark.slow
def test_prediction_t_reads_the_transition_from_frame_t_to_t_plus_1(moves_data, trained):
    # The recorded actions are i.i.d., so predictions agree with the action of their own transition and with the
    # neighbouring transitions' actions only at chance: any off-by-one between frames and labels shows up here.
    out, _ = trained
    dataset = ShardDataset(moves_data)
    frames, actions = WindowSampler([(dataset, np.arange(dataset.n_episodes))], 16).tiled()
    predicted = CrafterIDM.load(out).predict_actions(frames)
    aligned = np.mean(predicted == actions)
    previous = np.mean(predicted[:, 1:] == actions[:, :-1])
    following = np.mean(predicted[:, :-1] == actions[:, 1:])
    assert aligned > max(previous, following) + 0.3
    assert max(previous, following) < 0.4


# -- inference API --------------------------------------------------------------------------------------------------


def test_protocol_shapes_and_consistency():
    model = fresh_model()
    assert isinstance(model, InverseDynamicsModel) and model.domain == "crafter" and model.sha256 is None
    assert model.context_frames == 1  # T + 1 frames in, T transitions out
    frames = random_frames(3, 6)
    logits = model.logits(frames)
    assert logits.shape == (3, 5, N_ACTIONS) and logits.dtype == torch.float32
    log_probs = model.log_probs(torch.from_numpy(frames))
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(3, 5))
    predicted = model.predict_actions(frames)
    assert predicted.dtype == np.int64 and predicted.shape == (3, 5)
    np.testing.assert_array_equal(predicted, logits.argmax(-1).numpy())
    # a batch is labelled like its videos one at a time, also across max_batch chunks
    model.max_batch = 2
    torch.testing.assert_close(torch.cat([model.logits(frames[i : i + 1]) for i in range(3)]), model.logits(frames))
    assert model.training  # inference does not switch a training model to eval for good


def test_long_videos_match_windows_away_from_the_edges():
    # Time is handled by zero-padded convolutions: a prediction depends only on the transitions within
    # receptive_field of it, so labelling a long video in one pass equals labelling any window that contains them.
    config = CrafterIDMConfig(**{**TINY.to_json(), "depth": 2, "temporal_kernel": 5, "frame_size": (36, 36)})
    model = fresh_model(1, config)
    r = config.receptive_field
    assert r == 4
    video = random_frames(2, 41, seed=1)
    full = model.logits(video)  # 40 transitions
    part = model.logits(video[:, 10:31])  # transitions 10..29
    torch.testing.assert_close(full[:, 10 + r : 30 - r], part[:, r : 20 - r], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(full[:, 10], part[:, 0], atol=1e-4)  # the edge differs: it sees zeros beyond the cut


@pytest.mark.parametrize(
    "frames, message",
    [
        (random_frames(1, 4, size=40), "36, 36"),
        (random_frames(1, 4).astype(np.float32) / 255, "uint8"),
        (random_frames(1, 4)[0], "shape"),
        (random_frames(1, 1), "2 frames"),
        (random_frames(1, 4)[..., :1], "shape"),
        ([[0]], "numpy array or torch tensor"),
    ],
)
def test_bad_frames_raise_frame_error(frames, message):
    with pytest.raises(FrameError, match=message):
        fresh_model().predict_actions(frames)


# -- files ----------------------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    model = fresh_model(2)
    path = tmp_path / "idm.safetensors"
    digest = model.save(path, summary={"steps": 3, "note": "x"})
    assert digest == sha256_file(path) == model.sha256
    assert path.stat().st_mode & 0o777 == 0o644
    loaded = CrafterIDM.load(path)
    assert loaded.config == model.config and loaded.name == "tiny" and loaded.sha256 == digest
    assert loaded.summary == {"steps": 3, "note": "x"} and not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    frames = random_frames(2, 5, seed=4)
    torch.testing.assert_close(loaded.logits(frames), model.logits(frames), rtol=0, atol=0)
    assert CrafterIDM.load(path, name="other").name == "other"
    with safe_open(str(path), framework="pt") as handle:
        assert json.loads(handle.metadata()["config"])["width"] == TINY.width


def test_sha256_mismatch_raises_integrity_error(tmp_path):
    path = tmp_path / "idm.safetensors"
    digest = fresh_model().save(path)
    assert CrafterIDM.load(path, expected_sha256=digest.upper()).sha256 == digest
    with pytest.raises(IntegrityError, match=digest):
        CrafterIDM.load(path, expected_sha256="0" * 64)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # one flipped bit in the last weight
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError):
        CrafterIDM.load(path, expected_sha256=digest)


def _rewrite(path: Path, out: Path, edit) -> None:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    state, metadata = edit(state, metadata)
    save_file(state, str(out), metadata=metadata)


def test_tampered_checkpoints_raise_checkpoint_error_with_a_diff(tmp_path):
    path = tmp_path / "idm.safetensors"
    fresh_model().save(path)
    bad = tmp_path / "bad.safetensors"

    def rename_and_reshape(state, metadata):
        state["head.extra"] = state.pop("head.bias")
        state["project.weight"] = state["project.weight"][:, :-1].contiguous()
        return state, metadata

    _rewrite(path, bad, rename_and_reshape)
    with pytest.raises(CheckpointError) as error:
        CrafterIDM.load(bad)
    text = str(error.value)
    assert "missing (1): head.bias" in text and "unexpected (1): head.extra" in text
    assert "project.weight: file (32, 647) vs model (32, 648)" in text

    # a config that describes another architecture is caught by the same key/shape check
    _rewrite(path, bad, lambda s, m: (s, {**m, "config": json.dumps({**json.loads(m["config"]), "width": 24})}))
    with pytest.raises(CheckpointError, match="wrong shape"):
        CrafterIDM.load(bad)
    _rewrite(path, bad, lambda s, m: (s, {**m, "format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a Crafter IDM checkpoint"):
        CrafterIDM.load(bad)
    _rewrite(path, bad, lambda s, m: (s, {**m, "config": json.dumps({"width": 16, "colour": 1})}))
    with pytest.raises(CheckpointError, match="colour"):
        CrafterIDM.load(bad)
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="readable"):
        CrafterIDM.load(bad)


# -- training -------------------------------------------------------------------------------------------------------


def test_training_is_deterministic_given_the_seed(moves_data, tmp_path):
    def weights(seed: int, name: str) -> dict[str, torch.Tensor]:
        out = tmp_path / f"{name}.safetensors"
        train_crafter_idm(moves_data, out, config=TINY, seed=seed, steps=4, batch_size=4, warmup_steps=2,
                          eval_fraction=0.25, eval_max_windows=4, threads=1, progress=False)  # fmt: skip
        return CrafterIDM.load(out).state_dict()

    first, second, other = weights(7, "a"), weights(7, "b"), weights(8, "c")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_split_episodes():
    train, held = split_episodes(40, eval_fraction=0.1, seed=1)
    assert len(held) == 4 and len(train) == 36 and not set(train) & set(held)
    assert np.array_equal(held, split_episodes(40, eval_fraction=0.1, seed=1)[1])
    assert not np.array_equal(held, split_episodes(40, eval_fraction=0.1, seed=2)[1])
    # the "train" / "heldout" halves are complements whatever the seed, and each keeps its own validation episodes
    a_train, a_eval = split_episodes(40, split="train", eval_fraction=0.2, seed=1)
    b_train, b_eval = split_episodes(40, split="heldout", eval_fraction=0.2, seed=9)
    a, b = set(a_train) | set(a_eval), set(b_train) | set(b_eval)
    assert len(a) == len(b) == 20 and a | b == set(range(40)) and not a & b
    assert len(a_eval) == 4 and set(a_eval) <= a
    assert len(split_episodes(3, eval_fraction=0.01)[1]) == 1  # at least one validation episode...
    assert len(split_episodes(1, eval_fraction=0.5)[1]) == 0  # ...but never all of them
    with pytest.raises(ConfigError, match="split"):
        split_episodes(10, split="test")


def test_window_sampler_returns_aligned_recorded_windows(moves_data):
    dataset = ShardDataset(moves_data)
    episodes = np.array([1, 4])
    sampler = WindowSampler([(dataset, episodes)], 8)
    frames, actions = sampler.tiled()
    for e in episodes:  # consecutive tiles of one episode rebuild its frames and actions
        episode = dataset.episode(int(e))
        count = (len(episode) - 1) // 8
        mine = [i for i in range(len(frames)) if any(np.array_equal(frames[i], episode.frames[s : s + 9])
                                                     for s in range(0, 8 * count, 8))]  # fmt: skip
        assert len(mine) == count
        np.testing.assert_array_equal(np.concatenate(actions[mine]), episode.actions[: 8 * count])
    drawn, drawn_actions = sampler.sample(6, np.random.default_rng(0))
    for window, window_actions in zip(drawn, drawn_actions):
        matches = [(e, s) for e in episodes for s in range(len(dataset.episode(int(e))) - 8)
                   if np.array_equal(dataset.window(int(e), s, 8)[0], window)]  # fmt: skip
        assert len(matches) == 1
        np.testing.assert_array_equal(dataset.window(int(matches[0][0]), matches[0][1], 8)[1], window_actions)


def test_training_rejects_mismatched_settings(moves_data, tmp_path):
    with pytest.raises(DataError, match="frame_size"):
        train_crafter_idm(moves_data, tmp_path / "x.safetensors", config=CrafterIDMConfig(), steps=1, progress=False)
    with pytest.raises(ConfigError, match="class_weighting"):
        train_crafter_idm(moves_data, tmp_path / "x.safetensors", config=TINY, class_weighting="focal", progress=False)
    with pytest.raises(ConfigError, match="summary"):
        train_crafter_idm(moves_data, tmp_path / "x.json", config=TINY, progress=False)
    with pytest.raises(ConfigError, match="multiples of cell"):
        CrafterIDMConfig(frame_size=(60, 60))


def test_command_line_trains_and_writes_files(moves_data, tmp_path):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli.safetensors"
    args = parser.parse_args(
        ["train", "idm", "--data", str(moves_data), "--out", str(out), "--width", "8", "--depth", "1", "--cell", "4",
         "--window", "4", "--steps", "2", "--batch-size", "2", "--warmup-steps", "1", "--eval-max-windows", "4",
         "--threads", "1", "--seed", "5"]
    )  # fmt: skip
    assert args.func(args) == 0
    model = CrafterIDM.load(out)
    assert model.config.width == 8 and model.config.frame_size == (36, 36) and model.summary["seed"] == 5
    assert json.loads(summary_path(out).read_text())["weights_sha256"] == model.sha256



# -- metrics --------------------------------------------------------------------------------------------------------


def test_action_report_matches_sklearn():
    rng = np.random.default_rng(0)
    gt = rng.choice(N_ACTIONS, size=500, p=np.r_[np.full(5, 0.15), np.full(12, 0.25 / 12)])
    pred = np.where(rng.random(500) < 0.6, gt, rng.integers(0, N_ACTIONS, 500))
    report = crafter_action_report(gt, pred)
    assert report["accuracy"] == pytest.approx(np.mean(gt == pred))
    assert report["majority_accuracy"] == pytest.approx(np.bincount(gt).max() / 500)
    precision, recall, f1, support = precision_recall_fscore_support(
        gt, pred, labels=range(N_ACTIONS), zero_division=0
    )
    for a, name in enumerate(ACTION_NAMES):
        entry = report["per_action"][name]
        assert entry["count"] == support[a]
        assert entry["recall"] == pytest.approx(recall[a]) and entry["precision"] == pytest.approx(precision[a])
        assert entry["f1"] == pytest.approx(f1[a])
    # tasks, written out independently: movement 1-4, do 5, sleep 6, place 7-10, make 11-16; everything else is 0
    groups = {"movement": range(1, 5), "do": [5], "sleep": [6], "place": range(7, 11), "make": range(11, 17)}
    for task, members in groups.items():
        label = {a: i + 1 for i, a in enumerate(members)}
        g = [label.get(a, 0) for a in gt]
        p = [label.get(a, 0) for a in pred]
        assert report["tasks"][task]["f1_macro"] == pytest.approx(f1_score(g, p, average="macro", zero_division=0))
    expected_mean = np.mean([report["tasks"][t]["f1_macro"] for t in groups])
    assert report["mean_task_f1_macro"] == pytest.approx(expected_mean)
    assert np.sum(report["confusion"]) == 500 and np.trace(np.array(report["confusion"])) == np.sum(gt == pred)


def test_command_line_choices_are_the_training_codes():
    # the CLI spells them out so that `rlir --help` loads no torch; they must stay the ones training accepts
    from evaluation.idm.train import CLASS_WEIGHTINGS, SPLITS
    from rlir.commands.train import IDM_CLASS_WEIGHTINGS, IDM_SPLITS

    assert (IDM_SPLITS, IDM_CLASS_WEIGHTINGS) == (SPLITS, CLASS_WEIGHTINGS)
