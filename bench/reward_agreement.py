"""How far RLIR's reward tracks the benchmark's judge, per reward form: on the videos of result bundles (and on the
suite's real frames), the reward IDM's and the held-out IDM's readings side by side.

For each bundle (and ``real``, the suite's ground truth): the share of transitions the reward IDM and the held-out IDM
read as the same action (the mean over the members of an ensemble), and per reward form
(:data:`posttrain.config.REWARD_FORMS`) the mean reward under each and the Pearson correlation of their per-clip
rewards (a reward that the judge's IDM would give the same ranking of clips correlates near 1; a reward made of one
IDM's quirks near 0). 95% intervals: bootstrap over clips.

    rlir demo --out runs/demo --no-leaderboard; rlir demo --model crafter-mineworld-v1 --out runs/demo --no-leaderboard
    .venv/bin/python bench/reward_agreement.py runs/demo/crafter-mineworld-v1 runs/demo/crafter-mineworld
    .venv/bin/python bench/reward_agreement.py runs/demo/crafter-mineworld --idm crafter-idm-ensemble
"""

from __future__ import annotations

import argparse

import numpy as np

from evaluation.bundle import load_bundle, load_video
from evaluation.idm.registry import HELDOUT_IDM, REWARD_IDM, expand_idm_names, load_idm
from evaluation.scoring import taxonomy_for
from evaluation.suites import load_suite
from posttrain.config import REWARD_FORMS
from posttrain.rewards import IDMReward, compute_rewards, task_class_weights

RESAMPLES = 1000


def interval(values: np.ndarray, statistic, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    draws = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(RESAMPLES)]
    return tuple(np.percentile(draws, [2.5, 97.5]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", help="bundle directories with videos/ of the same suite")
    parser.add_argument("--suite", default="crafter-af-v1")
    parser.add_argument("--idm", default=REWARD_IDM,
                        help="the reward IDM(s), comma-separated; several (or crafter-idm-ensemble) average their rewards")
    parser.add_argument("--weights-suite", default=None,
                        help="suite whose commanded actions set the task-weighted form's weights (default: --suite)")
    args = parser.parse_args()
    suite = load_suite(args.suite)
    taxonomy = taxonomy_for(suite)
    items = [suite[i] for i in range(len(suite))]
    weights_suite = load_suite(args.weights_suite) if args.weights_suite else suite
    weights = task_class_weights(np.concatenate([taxonomy.labels(weights_suite[i].actions)
                                                 for i in range(len(weights_suite))]), taxonomy)  # fmt: skip
    reward_idms = [load_idm(name) for name in expand_idm_names(args.idm.split(","))]
    judge = load_idm(HELDOUT_IDM)
    actions = np.stack([item.actions for item in items])
    sources = {"real": np.stack([np.concatenate([it.context_frames[-1:], it.ground_truth]) for it in items])}
    for path in args.bundles:
        bundle = load_bundle(path)
        videos = [load_video(path, bundle.videos[item.id]) for item in items]
        sources[bundle.model.name] = np.stack([np.concatenate([it.context_frames[-1:], v]) for it, v in zip(items, videos)])

    print(f"{suite.name}, {len(items)} clips of {suite.n_frames} frames; reward IDM(s) {args.idm}, judge {HELDOUT_IDM}\n")
    print("| frames | IDMs read the same action | form | reward (reward IDM) | reward (held-out IDM) | "
          "per-clip correlation [95% CI] |")
    print("|---|---:|---|---:|---:|---:|")
    for name, frames in sources.items():
        judged = judge.predict_actions(frames)
        same = float(np.mean([(idm.predict_actions(frames) == judged).mean() for idm in reward_idms]))
        for form in REWARD_FORMS:
            kwargs = {"class_weights": weights} if form == "task-weighted" else {}
            per_clip = np.stack([compute_rewards(IDMReward(reader, taxonomy, form=form, **kwargs), frames, actions,
                                                 items).mean(axis=1) for reader in (reward_idms, judge)], axis=1)  # fmt: skip
            corr = float(np.corrcoef(per_clip.T)[0, 1])
            lo, hi = interval(per_clip, lambda v: np.corrcoef(v.T)[0, 1])
            print(f"| {name} | {same:.3f} | {form} | {per_clip[:, 0].mean():.3f} | {per_clip[:, 1].mean():.3f} | "
                  f"{corr:.2f} [{lo:.2f}, {hi:.2f}] |")


if __name__ == "__main__":
    main()
