"""``rlir demo``: the whole benchmark on the embedded default, on a CPU, with nothing to download.

Generates the ``crafter-af-v1`` suite with the bundled Crafter world model in a batched env, reads the actions back
with the held-out IDM, scores the same IDM on the real frames (the ceiling), prints the result table, writes both
result bundles and ends with the leaderboard of the local database (pre-populated with the shipped bundles).
"""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_OUT = "runs/demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="evaluate the bundled Crafter world model on crafter-af-v1 (CPU, minutes, no downloads)",
        description="The main job on the embedded default: generate crafter-af-v1 with the bundled world model, "
        "score it with the held-out IDM next to the ground-truth ceiling, write the bundles, show the leaderboard.",
    )
    parser.add_argument("--model", default="crafter-mineworld", help="registered model name or checkpoint path")
    parser.add_argument("--model-name", help="name recorded in the bundle (default: the model argument); the bundled "
                        "models' names belong to the leaderboard's seed rows, so submit your run under your own name")
    parser.add_argument("--suite", default="crafter-af-v1")
    parser.add_argument("--idm", default="crafter-idm-heldout", help="the IDM every reported score uses")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"where the bundles go (default {DEFAULT_OUT})")
    parser.add_argument("--num-envs", type=int, default=64, help="environments generated together")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", help="leaderboard database (default: $RLIR_HOME/leaderboard.db)")
    parser.add_argument("--no-leaderboard", dest="leaderboard", action="store_false",
                        help="only write the bundles (scripts/build_embedded.sh regenerates the seed bundles so)")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from evaluation.evaluator import EvalSettings, evaluate, evaluate_ground_truth, model_info_for
    from evaluation.idm.registry import load_idm
    from evaluation.suites import load_suite
    from evaluation.views import print_bundle_summary
    from leaderboard.ranking import leaderboards
    from leaderboard.render import print_terminal
    from leaderboard.seed import seed_store
    from leaderboard.store import Store
    from worldmodels.registry import load_world_model, resolve_checkpoint_path

    console = Console()
    out = Path(args.out)
    suite = load_suite(args.suite)
    model = load_world_model(args.model)
    idm = load_idm(args.idm)
    console.print(f"{suite.name}: {len(suite)} clips of {suite.n_frames} frames; model {args.model}; IDM {idm.name}")
    info = model_info_for(model, args.model_name or args.model, resolve_checkpoint_path(args.model))
    settings = EvalSettings(num_envs=args.num_envs, seed=args.seed)
    # a checkpoint path as --model names its bundle folder by the file's stem, never by the path itself
    folder = out / (args.model_name or (Path(args.model).stem if Path(args.model).suffix else info.name))
    bundle = evaluate(model, suite, idm, folder, model_info=info, settings=settings, resume=False, previews=8)
    ceiling = evaluate_ground_truth(suite, idm, out / "ground-truth")
    print_bundle_summary(bundle, console, ceiling=ceiling)
    gap = ceiling.metrics.primary.value - bundle.metrics.primary.value
    console.print(f"action-following gap to the ceiling: {gap:.3f} mean macro-F1; bundles in {out}/, previews to watch "
                  f"in {folder}/previews/")

    if not args.leaderboard:
        return 0
    store = Store(args.db)
    for note in seed_store(store).notes:
        console.print(f"note: {note}", style="dim", highlight=False, markup=False)
    print_terminal(leaderboards(store, suite=suite.name), console)
    return 0
