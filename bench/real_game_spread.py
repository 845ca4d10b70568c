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
import itertools
import json
from pathlib import Path

import numpy as np

from evaluation.bundle import ModelInfo
from evaluation.evaluator import bundle_from_videos
from evaluation.idm.registry import load_idm
from evaluation.suites import CRAFTER_SUITE, Suite, load_suite
from rlir_env.crafter.env import CrafterEnv
from rlir_env.crafter.policies import make_policy


def clip_start_scenes(suite: Suite) -> list[CrafterEnv]:
    """The real game at each clip's context frame, rebuilt from the suite's protocol (as ``suite_from_crafter`` drew
    it: a clip whose player died is redrawn from the next attempt's seed)."""
    protocol = suite.manifest["protocol"]
    if protocol.get("source") != "crafter":
        raise SystemExit(f"suite {suite.name!r} was not recorded from Crafter (protocol {protocol})")
    size, n_frames = suite.frame_size[0], suite.n_frames
    scenes = []
    for index, item in enumerate(suite):
        for attempt in itertools.count():
            rng = np.random.default_rng([protocol["seed"], index, attempt])
            env = CrafterEnv(size=size)
            obs, info = env.reset(seed=int(rng.integers(2**31 - 1)))
            agent = make_policy(protocol["policy"])
            agent.reset(rng)
            total = int(rng.integers(protocol["max_warmup"] + 1)) + n_frames
            scene, died = None, False
            for step in range(total):
                if step == total - n_frames:
                    scene = copy.deepcopy(env)
                obs, _, terminated, truncated, info = env.step(agent.act(obs, info))
                if terminated or truncated:
                    died = True
                    break
            if not died:
                break
        replayed = play(copy.deepcopy(scene), item.actions)
        if replayed is None or not np.array_equal(replayed, item.ground_truth):
            raise SystemExit(f"{item.id}: replaying the clip's recipe does not give its ground truth; the suite was "
                             "not built by this version of suite_from_crafter")  # fmt: skip
        scenes.append(scene)
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
    for tries in itertools.count(1):
        env = copy.deepcopy(scene)
        env._game._world.random.seed(seed + tries - 1)
        frames = play(env, actions)
        if frames is not None:
            return frames, tries
    raise AssertionError("unreachable")


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
