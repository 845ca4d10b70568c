"""Write the run summary shipped next to a post-trained bundled model (worldmodels/bundled/<name>.json): the recipe,
the per-iteration training curves and probe readings of an `rlir posttrain` run folder, and the paired comparison
with its base on the benchmark (two bundles of the same suite, IDM, scoring seed and sampling: the post-trained
model's default, which is its rollouts' — so the comparison isolates what training changed).

    python scripts/posttrain_summary.py runs/embedded/rlir runs/embedded/demo/crafter-mineworld-t1 \\
        runs/embedded/demo/crafter-mineworld-rlir --out worldmodels/bundled/crafter-mineworld-rlir.json

With --rescore, the first argument is an existing summary instead of a run folder: its recipe and curves are kept and
the comparison is recomputed from new bundles (after a change that left the post-trained transformer as it was, such
as a fine-tuned tokenizer decoder put into both files by scripts/replace_tokenizer_decoder.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from evaluation.bundle import load_bundle
from evaluation.compare import compare_bundles

_ITERATION_KEYS = ("step", "lr", "reward_mean", "reward_mean_idm", "reward_mean_pixel", "reward_std_in_group", "kl_ref",
                   "entropy", "grad_norm", "time_iteration_s")
_PROBE_KEYS = ("step", "eval_reward_mean", "eval_reward_sem", "eval_reward_crafter_idm_heldout_mean",
               "eval_reward_crafter_idm_heldout_sem", "eval_psnr_mean", "eval_psnr_sem")
_SAMPLING = ("decoding", "temperature", "top_p", "top_k")
# The run folder records the paths it was given; the summary names the ones build_embedded.sh uses, so it does not
# depend on where the run happened.
_RECIPE_SUITES = {"suite": "runs/embedded/train-suite", "eval_suite": "runs/embedded/val-suite"}


def summarize(run: Path, base_bundle: Path, run_bundle: Path, *, name: str, base: str, resamples: int) -> dict:
    for required in ("config.yaml", "summary.json", "log.jsonl"):
        if not (run / required).is_file():
            raise SystemExit(f"{run} has no {required}: pass the --out folder of a finished `rlir posttrain` run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config.pop("out", None)
    config["data"].update(_RECIPE_SUITES)
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return {
        "name": name,
        "base": base,
        **comparison(base_bundle, run_bundle, resamples=resamples),
        "recipe": f"rlir posttrain --config scripts/{name}.yaml --data runs/embedded/train-suite "
                  "--suite runs/embedded/val-suite --out runs/embedded/rlir",
        "config": config,
        "reward": summary["reward"],
        "trainable_parameters": summary["trainable_parameters"],
        "wall_seconds": summary["wall_s"],
        "machine": summary["machine"],
        "iterations": [{k: r[k] for k in _ITERATION_KEYS if k in r} for r in rows if "lr" in r],
        "probe": [{k: r[k] for k in _PROBE_KEYS if k in r} for r in rows if "eval_reward_mean" in r],
    }


def comparison(base_bundle: Path, run_bundle: Path, *, resamples: int) -> dict:
    """Both models' weights sha256 and the paired comparison ``heldout_vs_base`` of their bundles."""
    base_result, run_result = load_bundle(base_bundle), load_bundle(run_bundle)
    sampling = {name: getattr(run_result.runtime, name) for name in _SAMPLING}
    base_sampling = {name: getattr(base_result.runtime, name) for name in _SAMPLING}
    if base_sampling != sampling:
        raise SystemExit(f"the bundles sampled differently (base {base_sampling}, post-trained {sampling}): score "
                         "the base with the post-trained model's sampling (e.g. rlir eval --top-p 1)")  # fmt: skip
    return {
        "base_weights_sha256": base_result.model.weights_sha256,
        "weights_sha256": run_result.model.weights_sha256,
        "heldout_vs_base": {
            "suite": run_result.suite.name,
            "idm": run_result.idm.name,
            "seed": run_result.runtime.seed,
            "sampling": sampling,
            "resamples": resamples,
            "rows": [{"metric": c.metric, "base": c.a, "rlir": c.b, "difference": c.difference, "ci95": list(c.ci95)}
                     for c in compare_bundles(base_result, run_result, n_resamples=resamples)],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the `rlir posttrain --out` folder (with --rescore: a summary)")
    parser.add_argument("base_bundle", type=Path, help="the base model's bundle (directory or bundle.json)")
    parser.add_argument("run_bundle", type=Path, help="the post-trained model's bundle, same suite, IDM and seed")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="crafter-mineworld-rlir")
    parser.add_argument("--base", default="crafter-mineworld")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--rescore", action="store_true",
                        help="RUN is an existing summary: keep its recipe and curves, recompute the comparison")
    args = parser.parse_args()
    if args.rescore:
        doc = json.loads(args.run.read_text())
        doc.update(comparison(args.base_bundle, args.run_bundle, resamples=args.resamples))
    else:
        doc = summarize(args.run, args.base_bundle, args.run_bundle, name=args.name, base=args.base,
                        resamples=args.resamples)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    first = doc["heldout_vs_base"]["rows"][0]
    print(f"{first['metric']}: {first['base']:.4f} -> {first['rlir']:.4f} ({first['difference']:+.4f}, 95% CI "
          f"[{first['ci95'][0]:+.4f}, {first['ci95'][1]:+.4f}]); wrote {args.out}")


if __name__ == "__main__":
    main()
