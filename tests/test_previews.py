"""Previews (generated | ground truth with the commanded and the IDM-read action) and post-training curves."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from evaluation.metrics.taxonomy import get_taxonomy
from evaluation.previews import PREVIEW_HEIGHT, describe_labels, preview_frames, preview_strip
from posttrain.curves import draw_curves


def _reddish(pixels: np.ndarray) -> int:
    return int(((pixels[..., 0] > 200) & (pixels[..., 1] < 130) & (pixels[..., 2] < 130)).sum())


def _greenish(pixels: np.ndarray) -> int:
    return int(((pixels[..., 1] > 180) & (pixels[..., 0] < 140) & (pixels[..., 2] < 150)).sum())


def test_preview_marks_the_frames_where_the_idm_reads_another_action():
    taxonomy = get_taxonomy("crafter")
    rng = np.random.default_rng(0)
    generated = rng.integers(0, 256, (3, 72, 72, 3), dtype=np.uint8)
    truth = np.zeros_like(generated)
    commanded = taxonomy.labels(np.array([1, 2, 5]))
    recovered = taxonomy.labels(np.array([1, 3, 5]))  # the IDM misreads frame 1 only
    frames = preview_frames(generated, truth, commanded, recovered, taxonomy)
    scale = PREVIEW_HEIGHT // 72
    assert frames.shape[0] == 3 and frames.shape[1] % 2 == 0 and frames.shape[2] % 2 == 0
    # left panel: the generated frame, enlarged by whole pixels; right panel: the ground truth
    assert np.array_equal(frames[0, :scale * 72:scale, :scale * 72:scale], generated[0])
    assert not frames[0, : scale * 72, -scale * 72 :].any()
    bands = frames[:, scale * 72 :]
    assert _reddish(bands[1]) > 0 and _reddish(bands[0]) == 0 and _reddish(bands[2]) == 0
    assert _greenish(bands[0]) > 0 and _greenish(bands[2]) > 0
    assert describe_labels(commanded[0], taxonomy) == "move_left" and describe_labels(recovered[1], taxonomy) == "move_up"
    strip = preview_strip(frames, count=2)
    assert strip.shape == (2 * frames.shape[1], frames.shape[2], 3)


def test_minecraft_labels_read_as_keys():
    taxonomy = get_taxonomy("minecraft")
    labels = np.zeros(taxonomy.n_tasks, dtype=np.int64)
    keys = [t.key for t in taxonomy.tasks]
    labels[keys.index("('back', 'forward')")] = 2
    labels[keys.index("jump")] = 1
    text = describe_labels(labels, taxonomy)
    assert text.startswith("forward jump") and "camera_pitch=0" in text


def test_curves_png_draws_training_and_held_out_reward(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [{"step": -1, "eval_reward_mean": 0.2}] + [{"step": s, "reward_mean": 0.1 * s} for s in range(5)]
    lines[-1]["eval_reward_mean"] = 0.5
    log.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"step": 5, "rew')  # a torn last line
    png = draw_curves(log, tmp_path / "curves.png")
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape == (420, 720, 3)
    blue = ((image[..., 2] > 200) & (image[..., 0] < 120)).sum()
    assert blue > 50 and _reddish(image) > 10
    (tmp_path / "empty.jsonl").write_text('{"step": 0, "loss": 1.0}\n')
    assert draw_curves(tmp_path / "empty.jsonl", tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_curves_png_adds_the_watching_idm_and_a_psnr_panel(tmp_path):
    from posttrain.curves import read_curves

    log = tmp_path / "log.jsonl"
    probe = {"eval_reward_mean": 0.4, "eval_reward_crafter_idm_heldout_mean": 0.5, "eval_psnr_mean": 21.0}
    lines = [{"step": -1, **probe}] + [{"step": s, "reward_mean": 0.5} for s in range(4)]
    lines[-1].update({"eval_reward_mean": 0.45, "eval_reward_crafter_idm_heldout_mean": 0.6, "eval_psnr_mean": 20.5})
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    curves = read_curves(log)
    assert curves["eval_reward_crafter_idm_heldout_mean"] == [(-1, 0.5), (3, 0.6)]
    assert curves["eval_psnr_mean"] == [(-1, 21.0), (3, 20.5)] and len(curves["reward_mean"]) == 4
    image = np.asarray(Image.open(draw_curves(log, tmp_path / "curves.png")).convert("RGB"))
    assert image.shape == (420 + 280, 720, 3)  # the reward panel and the PSNR panel below it
    green = ((image[..., 1] > 140) & (image[..., 0] < 100) & (image[..., 2] < 120)).sum()
    assert green > 20  # the watching IDM's curve


def test_curves_png_draws_each_reward_term_in_its_own_panel(tmp_path):
    from posttrain.curves import read_curves

    log = tmp_path / "log.jsonl"
    lines = [{"step": s, "reward_mean": 0.3 + 0.01 * s, "reward_mean_idm": 0.5 + 0.01 * s, "reward_mean_pixel": -0.2}
             for s in range(4)]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    curves = read_curves(log)
    assert curves["reward_mean_idm"] == [(s, 0.5 + 0.01 * s) for s in range(4)]
    assert curves["reward_mean_pixel"] == [(s, -0.2) for s in range(4)]
    image = np.asarray(Image.open(draw_curves(log, tmp_path / "curves.png")).convert("RGB"))
    assert image.shape == (420 + 2 * 280, 720, 3)  # the reward panel, then one panel per term
    teal = ((image[420:700, :, 0] < 40) & (image[420:700, :, 1] > 130) & (image[420:700, :, 2] > 120)).sum()
    assert teal > 20  # the idm term's curve, in its own panel
