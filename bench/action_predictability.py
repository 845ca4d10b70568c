"""How well do the past frames (and past actions) of a Crafter recording predict the next action?

A world model trained on data whose action at ``t`` follows from the frames before it learns to continue the past
motion and to ignore the action token. This script measures that on a recording (``rlir record crafter``): it holds
out whole episodes (``--val-fraction``, split from ``--seed``), fits predictors of ``a_t`` on the training episodes
and scores them on the held-out ones (accuracy with a 95% bootstrap interval over held-out episodes):

* ``majority``: always the most common training action (the chance baseline that knows the action marginal);
* ``repeat``: ``a_t = a_{t-1}`` (how persistent the behaviour policy is);
* ``table a_{t-1}``: the most likely ``a_t`` given ``a_{t-1}`` (fit on training episodes);
* ``logreg frames``: multinomial logistic regression on features of frames ``t-1`` and ``t`` only (what a world
  model sees before the action token): the mismatch of frame ``t`` with frame ``t-1`` shifted by one cell in each
  direction (movement evidence), the player's cell at ``t`` (its sprite shows the facing), per-cell mean colours
  of frame ``t`` and of ``frame_t - frame_{t-1}``;
* ``logreg frames + a_{t-1}``: the same plus the previous action (one-hot).

It also reports what the policy reaches: episode lengths, achievements per 1,000 frames by kind, and the share of
frames asleep. Prints JSON (``--out`` also writes it).

    python bench/action_predictability.py runs/pred/old runs/pred/new
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.metrics.stats import cluster_bootstrap_mean  # noqa: E402
from worldmodels.data.shards import ShardDataset  # noqa: E402
from worldmodels.errors import DataError  # noqa: E402
from worldmodels.training.common import split_episodes  # noqa: E402

CELL = 8  # pixels per Crafter cell at 72x72
N_ACTIONS = 17


def frame_features(prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Features of consecutive frames ``prev, cur uint8[N, H, W, 3]`` -> ``float32[N, D]`` (see the module doc)."""
    a = prev.astype(np.float32) / 255.0
    b = cur.astype(np.float32) / 255.0
    n, h, w, _ = b.shape
    view = slice(0, h - 2 * CELL)  # the local view above the inventory rows
    shifts = []
    for dy, dx in ((0, 0), (CELL, 0), (-CELL, 0), (0, CELL), (0, -CELL)):
        moved = np.roll(a[:, view], (dy, dx), axis=(1, 2))
        inner = (slice(None), slice(CELL, h - 3 * CELL), slice(CELL, w - CELL))
        shifts.append(np.abs(moved[inner] - b[:, view][inner]).mean(axis=(1, 2, 3)))
    shifts = np.stack(shifts, axis=1)
    best = np.eye(5, dtype=np.float32)[shifts.argmin(axis=1)]
    cy, cx = (h - 2 * CELL) // 2 - CELL // 2, w // 2 - CELL // 2
    player = b[:, cy : cy + CELL, cx : cx + CELL].reshape(n, -1)
    cells = b.reshape(n, h // CELL, CELL, w // CELL, CELL, 3).mean(axis=(2, 4)).reshape(n, -1)
    diff = (b - a).reshape(n, h // CELL, CELL, w // CELL, CELL, 3).mean(axis=(2, 4)).reshape(n, -1)
    return np.concatenate([shifts * 10, best, player, cells, diff], axis=1).astype(np.float32)


def transitions(dataset: ShardDataset, episodes: np.ndarray, max_per_episode: int | None = None):
    """``(features, a_prev, a_t, episode_id)`` for every step ``t >= 1`` with both actions recorded."""
    feats, prev_actions, actions, owners = [], [], [], []
    for e in episodes:
        ep = dataset.episode(int(e))
        act = ep.actions
        t = np.flatnonzero((act[1:] >= 0) & (act[:-1] >= 0)) + 1
        if max_per_episode is not None and len(t) > max_per_episode:
            t = t[np.linspace(0, len(t) - 1, max_per_episode).astype(int)]
        if len(t) == 0:
            continue
        feats.append(frame_features(ep.frames[t - 1], ep.frames[t]))
        prev_actions.append(act[t - 1])
        actions.append(act[t])
        owners.append(np.full(len(t), int(e)))
    if not actions:
        raise DataError(f"{dataset.root}: no transitions with two recorded actions in the chosen episodes")
    return (np.concatenate(feats), np.concatenate(prev_actions), np.concatenate(actions), np.concatenate(owners))


def policy_stats(dataset: ShardDataset) -> dict:
    from rlir_env.crafter.env import ACHIEVEMENTS

    lengths = np.asarray(dataset.episode_lengths)
    totals = np.zeros(len(ACHIEVEMENTS))
    asleep = 0
    action_counts = np.zeros(N_ACTIONS)
    for ep in dataset.episodes():
        totals += ep.extras["achievements"].sum(axis=0)
        asleep += int(ep.extras["sleeping"].sum())
        a = ep.actions[ep.actions >= 0]
        action_counts += np.bincount(a, minlength=N_ACTIONS)
    frames = int(lengths.sum())
    per_k = {name: round(1000 * float(v) / frames, 3) for name, v in zip(ACHIEVEMENTS, totals)}
    groups = {
        kind: round(sum(v for k, v in per_k.items() if k.startswith(kind)), 3)
        for kind in ("collect_", "place_", "make_", "eat_", "defeat_", "wake_up")
    }
    return {
        "frames": frames,
        "episodes": int(len(lengths)),
        "episode_length_mean": float(lengths.mean()),
        "achievements_per_1k_frames": groups,
        "achievements_detail_per_1k_frames": per_k,
        "asleep_share": asleep / frames,
        "action_share": [round(float(c), 4) for c in action_counts / action_counts.sum()],
    }


def measure(root: str, *, val_fraction: float, seed: int, max_per_episode: int | None) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    dataset = ShardDataset(root, max_cached_shards=1)
    train_ids, val_ids = split_episodes(dataset.n_episodes, val_fraction, seed)
    xtr, ptr, ytr, _ = transitions(dataset, train_ids, max_per_episode)
    xva, pva, yva, owners = transitions(dataset, val_ids, max_per_episode)
    result: dict = {"data": root, "train_transitions": int(len(ytr)), "heldout_transitions": int(len(yva)),
                    "heldout_episodes": int(len(val_ids)), "accuracy [mean, lo95, hi95]": {}}  # fmt: skip
    acc = result["accuracy [mean, lo95, hi95]"]
    majority = np.bincount(ytr, minlength=N_ACTIONS).argmax()
    acc["majority"] = cluster_bootstrap_mean(yva == majority, owners, seed=seed)
    acc["uniform chance"] = [1 / N_ACTIONS] * 3
    acc["repeat a_{t-1}"] = cluster_bootstrap_mean(yva == pva, owners, seed=seed)
    table = np.zeros((N_ACTIONS, N_ACTIONS))
    np.add.at(table, (ptr, ytr), 1)
    acc["table a_{t-1}"] = cluster_bootstrap_mean(table.argmax(axis=1)[pva] == yva, owners, seed=seed)
    onehot = np.eye(N_ACTIONS, dtype=np.float32)
    for name, (a, b) in {
        "logreg frames": (xtr, xva),
        "logreg frames + a_{t-1}": (np.hstack([xtr, onehot[ptr]]), np.hstack([xva, onehot[pva]])),
    }.items():
        scaler = StandardScaler().fit(a)
        model = LogisticRegression(max_iter=500, C=1.0).fit(scaler.transform(a), ytr)
        acc[name] = cluster_bootstrap_mean(model.predict(scaler.transform(b)) == yva, owners, seed=seed)
    result["policy"] = policy_stats(dataset)
    result["policy_config"] = {k: dataset.config.get(k) for k in ("policy", "policy_kwargs", "seed", "n_frames")}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="+", help="recording directories (rlir record crafter)")
    parser.add_argument("--val-fraction", type=float, default=0.25, help="share of episodes held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-per-episode", type=int, default=None, help="subsample long episodes evenly")
    parser.add_argument("--out", default=None, help="also write the results here (JSON)")
    args = parser.parse_args(argv)
    results = [measure(d, val_fraction=args.val_fraction, seed=args.seed, max_per_episode=args.max_per_episode)
               for d in args.data]  # fmt: skip
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
