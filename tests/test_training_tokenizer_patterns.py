"""worldmodels.training.cell_table, the pattern-supervised tokenizer (``--supervision patterns``) and its decoder
fine-tuning (``--supervision decoder``): the table is built from the training frames alone, labels are exact for
table patterns, the tokenizer trains on real Crafter frames and writes the usual VQ tokenizer file, deterministically;
fine-tuning the decoder changes no token; bad inputs give one clear error each."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from rlir.commands.train import register
from rlir_env.crafter.record import record
from worldmodels.data.shards import ShardDataset
from worldmodels.errors import ConfigError, FrameError, MissingFileError
from worldmodels.hashing import sha256_file
from worldmodels.mineworld.vq import VQTokenizer
from worldmodels.training.cell_table import build_cell_table, cell_keys, cells_of, label_cells
from worldmodels.training.tokenizer import evaluate_tokenizer, gather_frames, load_tokenizer
from worldmodels.training.tokenizer_decoder import DECODER_PREFIXES, train_tokenizer_decoder
from worldmodels.training.tokenizer_patterns import train_pattern_tokenizer
from worldmodels.weights import tensors_sha256

SIZE = 36  # 4 px per Crafter cell; the VQ below downsamples by 4: one token per cell (9x9 grid)
VQ = {
    "_class_name": "VQModel", "act_fn": "silu", "block_out_channels": [8, 16, 16],
    "down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3, "in_channels": 3,
    "out_channels": 3, "latent_channels": 8, "layers_per_block": 1, "norm_num_groups": 4, "norm_type": "group",
    "num_vq_embeddings": 64, "vq_embed_dim": None, "mid_block_add_attention": False, "lookup_from_codebook": True,
    "force_upcast": True, "scaling_factor": 0.18215, "sample_size": SIZE,
}  # fmt: skip
RUN = dict(vq_config=VQ, frame_size=(SIZE, SIZE), batch_size=4, lr=3e-3, warmup=2, eval_frames=32, eval_every=0,
           log_every=1, checkpoint_every=100, progress=False, consistency_from=0.5)  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crafter36p")
    record(root, n_frames=240, shard_frames=120, seed=3, size=SIZE, episode_length=60)
    return root


@pytest.fixture(scope="module")
def other(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("crafter36q")
    record(root, n_frames=120, shard_frames=120, seed=9, size=SIZE, episode_length=60)
    return root


def frames_of(path: Path) -> np.ndarray:
    dataset = ShardDataset(path)
    return gather_frames(dataset, np.arange(dataset.n_episodes))


def test_table_is_built_from_the_given_frames_only_and_labels_table_cells_exactly(data, other):
    train, held_out = frames_of(data), frames_of(other)
    table = build_cell_table(train, cell=4, n_codes=64, embed_dim=8, table_codes=40, merge_levels=0.0, seed=0)
    train_keys = set(cell_keys(train, 4).ravel().tolist())
    assert set(table.keys.tolist()) <= train_keys  # every table pattern was seen in training
    only_held_out = set(cell_keys(held_out, 4).ravel().tolist()) - train_keys
    assert only_held_out and not only_held_out & set(table.keys.tolist())
    assert table.n_table == 40 and table.codes.shape == (64, 8) and table.stats["table_codes"] == 40
    # the table holds the most frequent patterns; its cells are labelled with their own centre (no merging here)
    labels = label_cells(train, table)
    assert labels.shape == (len(train), 9, 9) and labels.min() >= 0 and labels.max() < 64
    cells = cells_of(train, 4).reshape(-1, 48)
    in_table = np.isin(cell_keys(train, 4).ravel(), table.keys)
    assert in_table.mean() > 0.5
    np.testing.assert_array_equal(table.centres[labels.ravel()[in_table]], cells[in_table])
    # other cells get the code nearest to their projection
    outside = np.flatnonzero(~in_table)[:50]
    distances = ((table.project(cells[outside])[:, None, :] - table.codes[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels.ravel()[outside], distances.argmin(1))
    # building again from the same frames in another order gives the same table
    again = build_cell_table(train[::-1].copy(), cell=4, n_codes=64, embed_dim=8, table_codes=40, merge_levels=0.0)
    np.testing.assert_array_equal(again.centres, table.centres)


def test_merging_shares_codes_between_near_duplicate_patterns(data):
    train = frames_of(data)
    exact = build_cell_table(train, cell=4, n_codes=64, embed_dim=8, table_codes=60, merge_levels=0.0)
    merged = build_cell_table(train, cell=4, n_codes=64, embed_dim=8, table_codes=60, merge_levels=12.0)
    assert merged.stats["table_patterns"] >= exact.stats["table_patterns"]
    assert merged.stats["table_patterns"] > merged.n_table


def test_pattern_tokenizer_trains_on_real_frames_and_loads_as_a_vq_tokenizer(data, other, tmp_path):
    out = tmp_path / "tok.safetensors"
    summary = train_pattern_tokenizer(data, out, steps=40, seed=0, eval_dirs=[other], **RUN)
    log = [json.loads(line) for line in (tmp_path / "tok.run" / "log.jsonl").read_text().splitlines()]
    rows = [r for r in log if "loss" in r]
    assert len(rows) == 40 and log[0]["table"]["table_codes"] > 0
    first, last = rows[:5], rows[-5:]
    assert np.mean([r["ce"] for r in last]) < 0.5 * np.mean([r["ce"] for r in first])
    assert np.mean([r["rec"] for r in last]) < 0.7 * np.mean([r["rec"] for r in first])
    assert np.mean([r["acc"] for r in last]) > np.mean([r["acc"] for r in first]) + 0.1
    assert all("cons_acc" in r for r in rows[20:]) and not any("cons_acc" in r for r in rows[:20])

    tokenizer = load_tokenizer(out)
    assert isinstance(tokenizer, VQTokenizer) and tokenizer.grid == (9, 9) and tokenizer.codebook_size == 64
    held_out = frames_of(other)[:32]
    trained = evaluate_tokenizer(tokenizer, held_out)
    untrained = evaluate_tokenizer(VQTokenizer(VQ, (SIZE, SIZE)).eval(), held_out)
    assert trained["psnr"] > untrained["psnr"] + 3.0
    assert summary["final"]["label_agreement"] > 0.1 and summary["table"]["cells"] == 240 * 81
    assert json.loads((tmp_path / "tok.json").read_text())["supervision"] == "patterns"


def test_same_seed_same_weights_and_resume_is_bit_exact(data, tmp_path):
    run = {**RUN, "consistency_from": 0.3}
    train_pattern_tokenizer(data, tmp_path / "a.safetensors", steps=8, seed=1, **run)
    train_pattern_tokenizer(data, tmp_path / "b.safetensors", steps=8, seed=1, stop_after=5, **run)
    resumed = train_pattern_tokenizer(data, tmp_path / "b.safetensors", steps=8, seed=1, resume=True, **run)
    assert resumed["resumed_from"] == 5
    a, b = (load_file(str(tmp_path / f"{n}.safetensors")) for n in "ab")
    assert tensors_sha256(a) == tensors_sha256(b)  # the same weights (the metadata holds wall times)


def test_bad_inputs_raise_one_clear_error(data, tmp_path):
    frames = frames_of(data)[:4]
    with pytest.raises(ConfigError, match="table_codes.*64"):
        build_cell_table(frames, cell=4, n_codes=64, embed_dim=8, table_codes=64)
    with pytest.raises(ConfigError, match="do not split into 5x5"):
        build_cell_table(frames, cell=5, n_codes=64, embed_dim=8)
    with pytest.raises(ConfigError, match="merge_levels"):
        build_cell_table(frames, cell=4, n_codes=64, embed_dim=8, merge_levels=-1.0)
    with pytest.raises(ConfigError, match="embed_dim 49"):
        build_cell_table(frames, cell=4, n_codes=64, embed_dim=49)
    with pytest.raises(FrameError, match="uint8"):
        build_cell_table(frames.astype(np.float32), cell=4, n_codes=64, embed_dim=8)
    with pytest.raises(ConfigError, match="tau"):
        train_pattern_tokenizer(data, tmp_path / "t.safetensors", steps=2, **{**RUN, "tau": 0.0})
    with pytest.raises(ConfigError, match="consistency_from"):
        train_pattern_tokenizer(data, tmp_path / "t.safetensors", steps=2, **{**RUN, "consistency_from": 2.0})
    with pytest.raises(ConfigError, match=r"\.safetensors"):
        train_pattern_tokenizer(data, tmp_path / "t.pt", steps=2, **RUN)


def test_cli_trains_with_pattern_supervision(data, tmp_path):
    parser = argparse.ArgumentParser(prog="rlir")
    register(parser.add_subparsers(dest="command", required=True))
    vq_path = tmp_path / "vq.json"
    vq_path.write_text(json.dumps(VQ))
    out = tmp_path / "cli.safetensors"
    args = parser.parse_args([
        "train", "tokenizer", "--data", str(data), "--out", str(out), "--vq-config", str(vq_path), "--steps", "3",
        "--batch-size", "2", "--eval-frames", "8", "--no-progress", "--supervision", "patterns", "--table-codes", "40",
        "--merge-levels", "0.5",
    ])  # fmt: skip
    assert args.func(args) == 0
    summary = json.loads((tmp_path / "cli.json").read_text())
    assert summary["supervision"] == "patterns" and summary["settings"]["table_codes"] == 40
    assert load_tokenizer(out).codebook_size == 64
    torch.testing.assert_close(load_tokenizer(out).model.quantize.embedding.weight.shape[0], 64)


# -- decoder fine-tuning with the tokens frozen (--supervision decoder) ------------------------------------------------

DECODER_RUN = dict(batch_size=4, lr=3e-3, warmup=2, eval_frames=32, eval_every=0, log_every=1, checkpoint_every=100,
                   progress=False)  # fmt: skip


@pytest.fixture(scope="module")
def pattern_tokenizer(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("init") / "init.safetensors"
    train_pattern_tokenizer(data, out, steps=12, seed=0, **RUN)
    return out


def test_decoder_fine_tuning_keeps_every_token_and_draws_them_better(data, other, pattern_tokenizer, tmp_path):
    out = tmp_path / "dec.safetensors"
    summary = train_tokenizer_decoder(pattern_tokenizer, data, out, steps=40, seed=0, eval_dirs=[other], **DECODER_RUN)
    before, after = load_tokenizer(pattern_tokenizer), load_tokenizer(out)
    init_state, state = before.model.state_dict(), after.model.state_dict()
    for key, value in state.items():
        if key.startswith(DECODER_PREFIXES):
            continue
        assert torch.equal(value, init_state[key]), key  # encoder, quant_conv, codebook: bit for bit
    assert any(not torch.equal(state[k], init_state[k]) for k in state if k.startswith("decoder."))
    held_out = frames_of(other)[:32]
    torch.testing.assert_close(after.tokenize(torch.from_numpy(held_out)), before.tokenize(torch.from_numpy(held_out)),
                               rtol=0, atol=0)  # fmt: skip
    assert evaluate_tokenizer(after, held_out)["psnr"] > evaluate_tokenizer(before, held_out)["psnr"] + 1.0
    assert summary["evaluations"][0]["step"] == 0 and summary["final"]["psnr"] > summary["evaluations"][0]["psnr"]
    assert summary["init"]["sha256"] == sha256_file(pattern_tokenizer) and summary["supervision"] == "decoder"
    assert summary["init"]["summary"]["supervision"] == "patterns"  # the tokens' own training travels along
    assert summary["trained_parameters"] < summary["parameters"]
    rows = [json.loads(line) for line in (tmp_path / "dec.run" / "log.jsonl").read_text().splitlines()]
    rec = [r["rec"] for r in rows if "rec" in r]
    assert len(rec) == 40 and np.mean(rec[-5:]) < 0.8 * np.mean(rec[:5])


def test_decoder_fine_tuning_resumes_bit_exactly(data, pattern_tokenizer, tmp_path):
    train_tokenizer_decoder(pattern_tokenizer, data, tmp_path / "a.safetensors", steps=6, seed=1, **DECODER_RUN)
    train_tokenizer_decoder(pattern_tokenizer, data, tmp_path / "b.safetensors", steps=6, seed=1, stop_after=4,
                            **DECODER_RUN)  # fmt: skip
    resumed = train_tokenizer_decoder(pattern_tokenizer, data, tmp_path / "b.safetensors", steps=6, seed=1,
                                      resume=True, **DECODER_RUN)  # fmt: skip
    assert resumed["resumed_from"] == 4 and resumed["schedules"] == [{"from_step": 0, "steps": 6}]
    a, b = (load_file(str(tmp_path / f"{n}.safetensors")) for n in "ab")
    assert tensors_sha256(a) == tensors_sha256(b)
    # a larger `steps` extends the finished run on the longer schedule
    extended = train_tokenizer_decoder(pattern_tokenizer, data, tmp_path / "b.safetensors", steps=9, seed=1,
                                       resume=True, **DECODER_RUN)  # fmt: skip
    assert extended["resumed_from"] == 6 and extended["steps_done"] == 9
    assert extended["schedules"] == [{"from_step": 0, "steps": 6}, {"from_step": 6, "steps": 9}]
    assert tensors_sha256(load_file(str(tmp_path / "b.safetensors"))) != tensors_sha256(a)


def test_decoder_fine_tuning_refuses_bad_inputs(data, pattern_tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="another file"):
        train_tokenizer_decoder(pattern_tokenizer, data, pattern_tokenizer, steps=2, **DECODER_RUN)
    with pytest.raises(ConfigError, match="consistency"):
        train_tokenizer_decoder(pattern_tokenizer, data, tmp_path / "t.safetensors", steps=2, consistency=-1.0,
                                **DECODER_RUN)  # fmt: skip
    with pytest.raises(MissingFileError, match="rlir train tokenizer"):
        train_tokenizer_decoder(tmp_path / "none.safetensors", data, tmp_path / "t.safetensors", steps=2,
                                **DECODER_RUN)  # fmt: skip
    parser = argparse.ArgumentParser(prog="rlir")
    register(parser.add_subparsers(dest="command", required=True))
    base = ["train", "tokenizer", "--data", str(data), "--out", str(tmp_path / "c.safetensors"), "--no-progress"]
    for extra, message in (
        (["--supervision", "decoder"], "--init None with --supervision decoder"),
        (["--init", str(pattern_tokenizer)], "goes with it only"),
        (["--supervision", "decoder", "--init", str(pattern_tokenizer), "--frame-size", "36", "36"], "frame size"),
    ):
        args = parser.parse_args(base + extra)
        with pytest.raises(ConfigError, match=message):
            args.func(args)
    args = parser.parse_args(base + ["--supervision", "decoder", "--init", str(pattern_tokenizer), "--steps", "2",
                                     "--batch-size", "2", "--eval-frames", "8"])  # fmt: skip
    assert args.func(args) == 0 and json.loads((tmp_path / "c.json").read_text())["supervision"] == "decoder"
