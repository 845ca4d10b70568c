"""Evaluate your own world-model checkpoint on a suite: how faithfully does it follow actions?

    python examples/evaluate_checkpoint.py --checkpoint my-model.safetensors     # the whole crafter-af-v1 suite
    python examples/evaluate_checkpoint.py --short                               # 2 items of the bundled model

Any MineWorld-format or NFD ``.safetensors`` (from ``rlir train worldmodel|nfd`` or ``rlir posttrain``) works; the
same is ``rlir eval --checkpoint FILE --suite crafter-af-v1 --idm crafter-idm-heldout --out DIR``. The result is a
bundle (``bundle.json``) the leaderboard verifies, plus ``previews/*.mp4`` to watch.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from evaluation.evaluator import EvalSettings, evaluate, model_info_for
from evaluation.idm.registry import load_idm
from evaluation.suites import first_items, load_suite
from worldmodels.registry import load_world_model, resolve_checkpoint_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="your .safetensors (default: the bundled crafter-mineworld)")
    parser.add_argument("--suite", default="crafter-af-v1")
    parser.add_argument("--idm", default="crafter-idm-heldout", help="the IDM every reported Crafter score uses")
    parser.add_argument("--out", default="runs/examples/eval")
    parser.add_argument("--short", action="store_true", help="only 2 items (smoke test)")
    args = parser.parse_args()

    checkpoint = args.checkpoint or resolve_checkpoint_path("crafter-mineworld")
    model = load_world_model(checkpoint)
    suite = load_suite(args.suite)
    if args.short:
        suite = first_items(suite, 2)
    idm = load_idm(args.idm)
    bundle = evaluate(model, suite, idm, args.out, model_info=model_info_for(model, Path(checkpoint).stem, checkpoint),
                      settings=EvalSettings(num_envs=2 if args.short else 16), previews=2, progress=not args.short)
    primary = bundle.metrics.primary
    print(f"{suite.name}: mean macro-F1 {primary.value:.3f} (95% CI {primary.ci95[0]:.3f}-{primary.ci95[1]:.3f}, "
          f"{primary.n_items} items); bundle and previews in {args.out}/")


if __name__ == "__main__":
    main()
