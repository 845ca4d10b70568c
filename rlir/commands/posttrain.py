"""``rlir posttrain``: GRPO post-training of a world model with inverse-dynamics (or pixel) rewards: token-level GRPO
for MineWorld-architecture models, Flow-GRPO (SDE rollouts, per-step ratios) for NFD checkpoints.

    rlir posttrain --model NAME|PATH --data SUITE_OR_DIR [--suite EVAL_SUITE] --reward idm|pixel|idm+pixel
                   [--idm NAME[,NAME...]] [--reward-form agreement|exact|soft|task-weighted] [--pixel-weight W]
                   [--config run.yaml] [key=value ...] --out RUN_DIR [--resume auto]

Settings come from the defaults (RLIR's), then ``--config``, then the flags, then ``section.key=value`` overrides
(``algo.beta=1e-4 rollout.group_size=8``). Data-parallel: ``torchrun --nproc_per_node N -m rlir posttrain ...``.
"""

from __future__ import annotations

import argparse

FLAG_KEYS = {
    "model": "model.path",
    "data": "data.suite",
    "suite": "data.eval_suite",
    "reward": "reward.kind",
    "idm": "reward.idm",
    "reward_form": "reward.form",
    "pixel_weight": "reward.pixel_weight",
    "out": "out",
    "resume": "checkpoint.resume",
    "device": "model.device",
    "progress": "logging.progress",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="registered world model name, MineWorld or NFD checkpoint path (model.path)")
    parser.add_argument("--data", help="training prompts: suite name or directory (data.suite)")
    parser.add_argument("--suite", help="held-out suite scored every logging.eval_every iterations (data.eval_suite)")
    parser.add_argument("--reward", choices=("idm", "pixel", "idm+pixel"),
                        help="reward.kind (default idm; idm+pixel: the idm reward plus --pixel-weight x the pixel one)")
    parser.add_argument("--idm", help="IDM name or file for the idm reward; several, comma-separated, make an "
                                      "ensemble whose rewards are averaged (reward.idm)")
    parser.add_argument("--reward-form", choices=("agreement", "exact", "soft", "task-weighted"),
                        help="per-frame form of the idm reward (reward.form; default agreement): see "
                             "posttrain.config.REWARD_FORMS")  # fmt: skip
    parser.add_argument("--pixel-weight", type=float,
                        help="weight of the pixel term in --reward idm+pixel (reward.pixel_weight; default 1)")
    parser.add_argument("--device", help="device of the model and the reward IDM (model.device; default cpu)")
    parser.add_argument("--config", help="YAML file with any of the config sections")
    parser.add_argument("--out", help="run directory (out)")
    parser.add_argument("--resume", metavar="auto|never|PATH",
                        help="auto: continue the run in --out from its latest checkpoint; never: start afresh (refuses a "
                             "run directory that holds checkpoints); or a checkpoint path (checkpoint.resume; "
                             "default never)")  # fmt: skip
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar (logging.progress; default on)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. algo.beta=1e-4")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "posttrain",
        help="post-train a world model with GRPO on inverse-dynamics rewards (RLIR)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    """The run's config: Flow-GRPO's (:mod:`posttrain.flow.config`, RLIR's NFD defaults) when the model is an NFD
    checkpoint, else GRPO's (:mod:`posttrain.config`, RLIR's MineWorld defaults)."""
    from posttrain.config import load_config
    from posttrain.flow.config import is_flow_model, load_flow_config, requested_model_path

    values = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items() if getattr(args, flag) is not None}
    if is_flow_model(requested_model_path(args.config, list(args.overrides), values)):
        return load_flow_config(args.config, list(args.overrides), values=values)
    return load_config(args.config, list(args.overrides), values=values)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from posttrain.loop import train

    from worldmodels.device import check_device
    from worldmodels.training.report import check_report_to

    config = config_from_args(args)
    check_device(config.model.device)  # the device may come from --config or model.device=...: checked before loading
    check_report_to(config.logging.report_to)
    summary = train(config)
    final = summary.get("final") or {}
    if "reward_mean" in final:
        Console().print(
            f"{summary['iterations']} iterations; last reward {final['reward_mean']:.4f}; model written to "
            f"{summary['output']}"
        )
    return 0
