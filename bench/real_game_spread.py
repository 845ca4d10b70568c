"""How far the real game drifts from itself: the PSNR/SSIM any world model that samples Crafter's randomness can reach.

A suite clip's ground truth is one draw of the game: cows and zombies wander, saplings drop and night noise is drawn
from the world's random state. A world model sampled at temperature 1 should draw these afresh, so even a perfect
one does not reproduce the ground truth pixel for pixel. This script measures that ceiling on the bundled
``crafter-af-v1`` (or any suite made by ``rlir suite build-crafter``): it replays every clip's recipe (seed, policy,
warm-up) in the real game to the context frame, checks that playing the clip's actions from there gives the ground
truth bit for bit (the control), then plays the same actions again with the world's random state re-seeded
(``--draws`` times) and scores those real frames exactly as ``rlir eval`` scores a model: the held-out IDM's macro-F1,
PSNR and SSIM against the ground truth. It also scores the copy-the-context-frame baseline (a still world).

Each draw is written as a result bundle (``OUT/draw-<k>/bundle.json``), so ``rlir eval compare`` pairs it with a
model's bundle on the same clips::

    .venv/bin/python -m bench.real_game_spread --draws 2 --out runs/real_game_spread
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np

from evaluation.bundle import ModelInfo
from evaluation.evaluator import bundle_from_videos
from evaluation.idm.registry import load_idm
from evaluation.suites import CRAFTER_SUITE, Suite, crafter_clips, load_suite
from rlir_env.crafter.env import CrafterEnv


def clip_start_scenes(suite: Suite) -> list[CrafterEnv]:
    """The real game at each clip's context frame, drawn again from the suite's protocol by the code that drew the
    suite (``crafter_clips``); each scene must replay the clip's actions to its ground truth bit for bit."""
    protocol = suite.manifest["protocol"]
    if protocol.get("source") != "crafter":
        raise SystemExit(f"suite {suite.name!r} was not recorded from Crafter (protocol {protocol})")
    clips = crafter_clips(len(suite), seed=protocol["seed"], n_frames=suite.n_frames, size=suite.frame_size[0],
                          max_warmup=protocol["max_warmup"], policy=protocol["policy"], keep_scenes=True)  # fmt: skip
    scenes = []
    for item, clip in zip(suite, clips):
        replayed = play(copy.deepcopy(clip.scene), item.actions)
        if replayed is None or not np.array_equal(replayed, item.ground_truth):
            raise SystemExit(f"{item.id}: replaying the clip's recipe does not give its ground truth; the suite was "
                             "not built by this version of suite_from_crafter")  # fmt: skip
        scenes.append(clip.scene)
    return scenes


def play(env: CrafterEnv, actions: np.ndarray) -> np.ndarray | None:
    """The frames the actions lead to, or None when the player dies on the way."""
    frames = []
    for action in actions:
        obs, _, terminated, truncated, _ = env.step(int(action))
        if terminated or truncated:
            return None
        frames.append(obs)
    return np.stack(frames)


def redraw(scene: CrafterEnv, actions: np.ndarray, seed: int) -> tuple[np.ndarray, int]:
    """The actions played from the scene with the world's random state re-seeded, so that what happens next is drawn
    afresh; a draw in which the player dies is drawn again from the next seed, as the suite redraws such clips.
    Returns the frames and how many draws that took."""
    frames, tries = None, 0
    while frames is None:
        env = copy.deepcopy(scene)
        env._game._world.random.seed(seed + tries)
        frames = play(env, actions)
        tries += 1
    return frames, tries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", default=CRAFTER_SUITE)
    parser.add_argument("--idm", default="crafter-idm-heldout")
    parser.add_argument("--draws", type=int, default=2, help="re-seeded replays of every clip")
    parser.add_argument("--out", type=Path, default=Path("runs/real_game_spread"))
    args = parser.parse_args()

    suite, idm = load_suite(args.suite), load_idm(args.idm)
    scenes = clip_start_scenes(suite)
    print(f"control: {len(scenes)} clips replayed to their ground truth bit for bit")
    rows = {}
    runs, died = {}, {}
    for k in range(1, args.draws + 1):
        draws = [redraw(scene, item.actions, 1_000_003 * k + 1_009 * i)
                 for i, (item, scene) in enumerate(zip(suite, scenes))]  # fmt: skip
        runs[f"draw-{k}"] = [(item.id, frames) for item, (frames, _) in zip(suite, draws)]
        died[f"draw-{k}"] = sum(tries - 1 for _, tries in draws)
        print(f"draw-{k}: the player died in {died[f'draw-{k}']} draws, drawn again")
    runs["copy-context"] = [(item.id, np.repeat(item.context_frames[-1:], len(item.actions), axis=0)) for item in suite]
    for name, videos in runs.items():
        info = ModelInfo(name=f"real game, {name}",
                         description=f"{args.suite} clips: {name} (bench/real_game_spread.py)")  # fmt: skip
        bundle = bundle_from_videos(videos, suite, idm, args.out / name, model_info=info)
        metrics = bundle.metrics
        rows[name] = {"f1": metrics.primary.value, "ci95": metrics.primary.ci95, "psnr": metrics.psnr["mean"],
                      "ssim": metrics.ssim["mean"], "tasks": {t: v["f1_macro"] for t, v in metrics.tasks.items()},
                      "redrawn_deaths": died.get(name)}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))
    print("\n| clips | mean macro-F1 [95% CI] | PSNR | SSIM |\n|---|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['f1']:.3f} [{row['ci95'][0]:.3f}, {row['ci95'][1]:.3f}] | {row['psnr']:.2f} dB | "
              f"{row['ssim']:.3f} |")


if __name__ == "__main__":
    main()
