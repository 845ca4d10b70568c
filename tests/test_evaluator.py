"""Suites, the evaluator and result bundles, end to end on the tiny MineWorld model and a tiny VPT IDM."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from evaluation.bundle import ModelInfo, load_bundle, parse_bundle
from evaluation.evaluator import EvalSettings, as_request, evaluate, item_seed, score_videos
from evaluation.idm.vpt import VPTInverseDynamicsModel
from evaluation.scoring import verify_metrics
from evaluation.suites import load_suite, register_suite, save_suite, suite_from_mineworld_validation
from tests.launch import torchrun
from tests.world_models import tiny_minecraft_suite, tiny_mineworld, tiny_vpt_idm_files
from worldmodels.actions import minecraft
from worldmodels.data.clips import write_mineworld_clip
from worldmodels.errors import ConfigError, DataError, IntegrityError
from worldmodels.mineworld import MineWorld, save_safetensors

SETTINGS = EvalSettings(num_envs=3, seed=5, video_metrics=True)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    model = tiny_mineworld()
    suite = tiny_minecraft_suite(model, n_items=4, n_frames=5)
    save_suite(suite, root / "suite")
    model_path, weights_path = tiny_vpt_idm_files(root)
    idm = VPTInverseDynamicsModel.from_files(model_path, weights_path)
    checkpoint = root / "tiny.safetensors"
    save_safetensors(model, checkpoint)
    return {"root": root, "model": model, "suite": load_suite(root / "suite"), "idm": idm, "checkpoint": checkpoint,
            "weights": weights_path}  # fmt: skip


def run(setup, out, **kwargs):
    kwargs.setdefault("settings", SETTINGS)
    return evaluate(setup["model"], setup["suite"], setup["idm"], out, model_info=ModelInfo(name="tiny"),
                    progress=False, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def reference(setup):
    return run(setup, setup["root"] / "reference")


def test_bundle_is_complete_and_verifiable(setup, reference):
    suite = setup["suite"]
    assert [item.id for item in reference.items] == suite.item_ids
    assert reference.suite.sha256 == suite.sha256 and reference.idm.sha256 == setup["idm"].sha256
    assert verify_metrics(reference) == []
    assert set(reference.metrics.tasks) == {"('back', 'forward')", "('left', 'right')", "('sneak', 'sprint')", "use",
                                            "attack", "jump", "drop"}  # fmt: skip
    assert reference.metrics.camera_l1 is not None and len(reference.metrics.psnr["per_step"]) == 5
    low, high = reference.metrics.primary.ci95
    assert low <= reference.metrics.primary.value <= high
    # seeds depend on the item id only
    assert [item.seed for item in reference.items] == [item_seed(5, i) for i in suite.item_ids]
    # the bundle on disk parses to the same object; tampering with a number is caught
    data = json.loads((setup["root"] / "reference" / "bundle.json").read_text())
    assert parse_bundle(data) == reference
    data["metrics"]["primary"]["value"] += 0.01
    assert verify_metrics(parse_bundle(data)) == [
        f"metrics.primary.value: reported {data['metrics']['primary']['value']!r}, recomputed "
        f"{reference.metrics.primary.value!r}"
    ]
    with pytest.raises(DataError, match="items.0.gt_labels"):
        parse_bundle(json.dumps(data).replace('"gt_labels": [[', '"gt_labels": [["x", '))


def test_targets_are_the_recorded_env_actions(setup, reference):
    # Minecraft suites score against the recorded env actions (float camera in the 11-bin IDM quantiser), not the
    # compact actions the model saw.
    from evaluation.metrics.taxonomy import MINECRAFT_TAXONOMY
    from evaluation.suites import array_to_env_actions

    item = setup["suite"][0]
    expected = MINECRAFT_TAXONOMY.labels(array_to_env_actions(item.score_actions))
    assert reference.items[0].gt_labels == expected.tolist()


def test_resume_refuses_records_of_another_run(setup, tmp_path):
    out = tmp_path / "mixed"
    assert run(setup, out, stop_after=1) is None
    with pytest.raises(ConfigError, match="another run .*settings"):
        run(setup, out, settings=EvalSettings(num_envs=3, seed=6))
    fresh = run(setup, out, settings=EvalSettings(num_envs=3, seed=6), resume=False)  # regenerates every item
    assert {record.seed for record in fresh.items} == {item_seed(6, item_id) for item_id in setup["suite"].item_ids}


def test_fresh_run_removes_stale_bundle_and_unclaimed_records_are_refused(setup, tmp_path):
    out = tmp_path / "stale"
    assert run(setup, out, stop_after=1) is None
    (out / "bundle.json").write_text("{}")  # a bundle of some earlier run
    (out / "run.json").unlink()  # records nobody claims (written before runs were claimed)
    with pytest.raises(ConfigError, match="without the run.json"):
        run(setup, out)
    assert run(setup, out, stop_after=1, resume=False) is None
    assert not (out / "bundle.json").exists()


def test_ground_truth_bundle_is_the_ceiling(setup, tmp_path):
    from evaluation.bundle import CEILING_MODEL_NAME
    from evaluation.evaluator import evaluate_ground_truth

    suite = setup["suite"]
    ceiling = evaluate_ground_truth(suite, setup["idm"], tmp_path / "gt")
    assert ceiling.model.name == CEILING_MODEL_NAME and verify_metrics(ceiling) == []
    expected = score_videos([(item.id, item.ground_truth) for item in suite], suite, setup["idm"], video_metrics=False)
    assert ceiling.items == expected


def test_the_bundle_records_the_models_default_sampling_as_what_ran(setup, reference, tmp_path):
    from worldmodels.mineworld import SamplingConfig

    assert (reference.runtime.decoding, reference.runtime.temperature, reference.runtime.top_p) == ("naive", 1.0, None)
    tuned = MineWorld.from_checkpoint(setup["checkpoint"], sampling=SamplingConfig(top_p=0.4))
    by_default = evaluate(tuned, setup["suite"], setup["idm"], tmp_path / "default", model_info=ModelInfo(name="tiny"),
                          settings=SETTINGS, progress=False)  # fmt: skip
    assert (by_default.runtime.top_p, by_default.runtime.temperature) == (0.4, 1.0)
    # the same draws as asking the plain model for top-p 0.4, and the same run: resuming one with the other is allowed
    explicit = EvalSettings(num_envs=3, seed=5, video_metrics=True, top_p=0.4, temperature=1.0, decoding="naive")
    asked = run(setup, tmp_path / "explicit", settings=explicit)
    assert asked.items == by_default.items and asked.items != reference.items
    assert run(setup, tmp_path / "default", settings=explicit).items == by_default.items
    # top_p=1 on a model whose default truncates: the whole distribution, as the plain model samples by default, and
    # recorded as such (a recorded top_p None must mean what ran, for the bundle and for the leaderboard's re-run)
    whole = evaluate(tuned, setup["suite"], setup["idm"], tmp_path / "whole", model_info=ModelInfo(name="tiny"),
                     settings=dataclasses.replace(SETTINGS, top_p=1.0), progress=False)  # fmt: skip
    assert whole.runtime.top_p is None and whole.items == reference.items
    # what the leaderboard's re-run does with that record: the same run again
    recorded = EvalSettings(num_envs=3, seed=5, video_metrics=True, decoding=whole.runtime.decoding,
                            window=whole.runtime.window, temperature=whole.runtime.temperature, top_p=None, top_k=None)
    again = evaluate(tuned, setup["suite"], setup["idm"], tmp_path / "again", model_info=ModelInfo(name="tiny"),
                     settings=as_request(recorded), progress=False)  # fmt: skip
    assert again.items == whole.items


def test_batching_does_not_change_items(setup, reference, tmp_path):
    other = run(setup, tmp_path / "b", settings=EvalSettings(num_envs=1, seed=5))
    assert other.items == reference.items


def test_resume_after_a_crash_gives_the_same_numbers(setup, reference, tmp_path):
    out = tmp_path / "crashed"
    assert run(setup, out, stop_after=2) is None
    assert len(list((out / "items").glob("*.json"))) == 2
    (out / "items" / "clip_0.json").write_text('{"id": "clip_0", "se')  # a torn write is redone
    generated = []
    resumed = run(setup, out, on_item=lambda record: generated.append(record.id))
    assert generated == ["clip_0", "clip_2", "clip_3"]
    assert resumed.items == reference.items and resumed.metrics.model_dump(exclude={"throughput"}) == \
        reference.metrics.model_dump(exclude={"throughput"})  # fmt: skip


def test_resumed_runs_count_every_part_and_a_finished_run_is_left_alone(setup, reference, tmp_path):
    """frames/s of a resumed run covered only the resumed part; re-running a finished directory rewrote its bundle
    with throughput None; resuming with another number of envs was refused though frames do not depend on it."""
    out = tmp_path / "parts"
    assert run(setup, out, stop_after=2) is None  # the first batch of 3 generated clip_0..2, two records written
    assert json.loads((out / ".throughput-rank0.json").read_text())["frames"] == 3 * 5
    resumed = run(setup, out, settings=EvalSettings(num_envs=2, seed=5, video_metrics=True))  # another num_envs
    stats = json.loads((out / ".throughput-rank0.json").read_text())
    assert stats["frames"] == 3 * 5 + 2 * 5  # clip_2 and clip_3 in one batch of 2
    assert resumed.metrics.throughput.frames_per_second == pytest.approx(stats["frames"] / stats["seconds"])
    assert resumed.items == reference.items
    written = (out / "bundle.json").read_bytes()
    again = run(setup, out, settings=EvalSettings(num_envs=4, seed=5, video_metrics=True))
    assert (out / "bundle.json").read_bytes() == written and again == resumed
    assert again.metrics.throughput is not None


def test_score_videos_rescores_generated_frames(setup, reference):
    from evaluation.bundle import load_video

    out = setup["root"] / "reference"
    videos = [(item.id, load_video(out, reference.videos[item.id])) for item in reference.items]
    records = score_videos(videos, setup["suite"], setup["idm"])
    for record, original in zip(records, reference.items):
        assert record.model_copy(update={"seed": original.seed}) == original


def test_edited_suites_are_refused(setup, tmp_path, monkeypatch):
    from evaluation import suites

    monkeypatch.setattr(suites, "REGISTERED_SUITES", dict(suites.REGISTERED_SUITES))  # other tests never see it
    copy = tmp_path / "suite"
    shutil.copytree(setup["root"] / "suite", copy)
    register_suite("tiny-pinned", copy, setup["suite"].sha256)
    assert load_suite("tiny-pinned").sha256 == setup["suite"].sha256
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["description"] = "edited"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="was edited"):
        load_suite("tiny-pinned")
    with np.load(setup["root"] / "suite" / "data.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["actions"][0, 0, 3] = 1 - arrays["actions"][0, 0, 3]
    np.savez(copy / "data.npz", **arrays)
    (copy / "manifest.json").write_text((setup["root"] / "suite" / "manifest.json").read_text())
    with pytest.raises(IntegrityError, match="'actions' does not match"):
        load_suite(copy)
    with pytest.raises(DataError, match="unknown suite 'no-such-suite'"):
        load_suite("no-such-suite")


def test_model_and_suite_must_agree(setup, tmp_path):
    from tests.world_models import tiny_scenes  # noqa: F401

    suite = setup["suite"]
    with pytest.raises(ConfigError, match="cannot run suite"):
        evaluate(_CrafterSpecModel(setup["model"]), suite, setup["idm"], tmp_path, model_info=ModelInfo(name="x"))


class _CrafterSpecModel:
    def __init__(self, model):
        from dataclasses import replace

        self.spec = replace(model.spec, domain="crafter")


def test_suite_from_mineworld_validation_layout(tmp_path):
    rng = np.random.default_rng(0)
    lines = [minecraft.noop() | {"forward": int(rng.random() < 0.5), "camera": [0.3 * k, 0.0]} for k in range(16)]
    for n in (10, 2):
        write_mineworld_clip(tmp_path, f"clip_{n}", rng.integers(0, 256, (16, 224, 384, 3), dtype=np.uint8), lines,
                             codec="h264-lossless")  # fmt: skip
    suite = suite_from_mineworld_validation(tmp_path)
    assert suite.item_ids == ["clip_2", "clip_10"]  # the official order, by N
    assert suite.n_frames == 15 and suite.context_frames_shape if False else True
    assert suite[0].score_actions[:, -2].tolist() == [0.3 * k for k in range(1, 16)]  # lines 1..15, float camera
    shifted = suite_from_mineworld_validation(tmp_path, offset=-1)
    assert shifted[0].score_actions[0, -2] == 0.0 and shifted.manifest["protocol"]["offset"] == -1
    with pytest.raises(DataError, match="offset=1"):
        suite_from_mineworld_validation(tmp_path, offset=1)


@pytest.mark.slow
def test_torchrun_two_gloo_processes_match_one(setup, reference, tmp_path):
    out = tmp_path / "sharded"
    torchrun(
        "-m", "rlir", "eval",
        "--checkpoint", str(setup["checkpoint"]), "--model-name", "tiny", "--suite", str(setup["root"] / "suite"),
        "--idm", str(setup["weights"]), "--out", str(out), "--num-envs", "3", "--seed", "5",
    )  # fmt: skip
    sharded = load_bundle(out)
    assert sharded.items == reference.items
    assert sharded.metrics.primary == reference.metrics.primary


def test_compiled_decoding_scores_like_eager_and_is_recorded(setup, reference, tmp_path):
    model = MineWorld.from_checkpoint(setup["checkpoint"], compile=True)
    bundle = evaluate(model, setup["suite"], setup["idm"], tmp_path / "c", model_info=ModelInfo(name="tiny"),
                      settings=SETTINGS, progress=False)  # fmt: skip
    assert bundle.runtime.compiled and not reference.runtime.compiled
    # same tokens; VQ pixels may differ by one level, which moves PSNR a little but no IDM label here
    assert [r.pred_labels for r in bundle.items] == [r.pred_labels for r in reference.items]
    assert [r.gt_labels for r in bundle.items] == [r.gt_labels for r in reference.items]
