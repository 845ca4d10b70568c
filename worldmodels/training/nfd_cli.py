"""``rlir train nfd``: train an NFD world model (frame autoencoder, then diffusion transformer).

    rlir train nfd --data runs/data/crafter-train --out runs/nfd/crafter-nfd.safetensors --ae-steps 600 --steps 1500

Data-parallel: ``torchrun --nproc_per_node N -m worldmodels.training.nfd_cli --data ... --out ...`` (gloo on CPU).
Heavy imports (torch, diffusers) happen inside the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from worldmodels.cli_options import add_progress, add_report_to, add_resume, resolve_out, resume_mode
from worldmodels.training.cli import TRAIN_HELP, get_or_add_subparsers

__all__ = ["add_arguments", "main", "register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``nfd`` to ``rlir train`` (creating ``train`` if needed)."""
    train = get_or_add_subparsers(subparsers, "train", help=TRAIN_HELP)
    parser = train.add_parser("nfd", help="train an NFD (next-frame diffusion) world model: autoencoder + transformer")
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="trajectory-shard directory (repeatable), a MineWorld clip folder or VPT recordings")
    p.add_argument("--layout", choices=("auto", "shards", "mineworld", "vpt"), default="auto",
                   help="data layout (auto: shards if manifest.json exists, else MineWorld clips)")
    p.add_argument("--clip-frames", type=int, default=16, help="frames per VPT episode chunk")
    p.add_argument("--clip-limit", type=int, default=None, help="read at most this many clips")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="writes DIR/nfd.safetensors, its autoencoder, summary .json and run directories (or a "
                        ".safetensors path)")
    p.add_argument("--size", default="nfd-crafter-small",
                   help="preset (nfd-crafter-small, nfd-tiny, nfd-310m, nfd-774m)")
    p.add_argument("--config", metavar="JSON", default=None, help="an NFDConfig as JSON (overrides --size)")
    p.add_argument("--ae-config", metavar="JSON", default=None,
                   help="diffusers AutoencoderKL config.json (default: the Crafter config, 72x72 -> 9x9x8)")
    p.add_argument("--autoencoder", metavar="FILE", default=None, help="use this trained autoencoder (skip stage 1)")
    p.add_argument("--ae-steps", type=int, default=1500)
    p.add_argument("--ae-batch-size", type=int, default=16)
    p.add_argument("--ae-lr", type=float, default=2e-3)
    p.add_argument("--kl-weight", type=float, default=1e-4)
    p.add_argument("--ae-pool-frames", type=int, default=20000, help="training frames held in memory for stage 1")
    p.add_argument("--steps", type=int, default=2000, help="transformer steps")
    p.add_argument("--batch-size", type=int, default=8, help="windows per transformer step")
    p.add_argument("--window-frames", type=int, default=None, help="frames per window (default: the context)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--context-prob", type=float, default=0.5,
                   help="share of windows whose prefix is clean context at t_ctx (next-frame windows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--val-windows", type=int, default=64)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--checkpoint-every", type=int, default=250)
    add_resume(p, what="interrupted stages from their checkpoints")
    p.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                   help="stop the transformer stage after this many steps (resumable with --resume auto)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    add_progress(p)
    add_report_to(p)


def run(args: argparse.Namespace) -> int:
    import torch

    from worldmodels.errors import MissingFileError
    from worldmodels.nfd import NFDConfig, get_preset
    from worldmodels.training.nfd import train_nfd

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    def read_json(path: str, what: str) -> dict:
        if not Path(path).is_file():
            raise MissingFileError(f"{what} {path!r} does not exist")
        return json.loads(Path(path).read_text())

    config = NFDConfig.from_dict(read_json(args.config, "config")) if args.config else get_preset(args.size)
    ae_config = read_json(args.ae_config, "autoencoder config") if args.ae_config else None
    out = resolve_out(args.out, "nfd")
    result = train_nfd(
        args.data, out, config=config, ae_config=ae_config, autoencoder=args.autoencoder, layout=args.layout,
        clip_frames=args.clip_frames, clip_limit=args.clip_limit, ae_steps=args.ae_steps,
        ae_batch_size=args.ae_batch_size, ae_lr=args.ae_lr, kl_weight=args.kl_weight,
        ae_pool_frames=args.ae_pool_frames, steps=args.steps, batch_size=args.batch_size,
        window_frames=args.window_frames, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
        context_prob=args.context_prob, seed=args.seed, val_fraction=args.val_fraction, val_windows=args.val_windows,
        eval_every=args.eval_every, log_every=args.log_every, checkpoint_every=args.checkpoint_every,
        resume=resume_mode(args.resume) == "auto", stop_after=args.stop_after, progress=args.progress, report_to=args.report_to,
    )  # fmt: skip
    summary = result["transformer"]
    final = summary.get("final") or {}
    from rich.console import Console

    state = f"wrote {out}" if summary["finished"] else f"stopped at step {summary['steps_done']} (--resume auto)"
    Console().print(f"{state}; validation {json.dumps({k: round(v, 4) for k, v in final.items()})}", highlight=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m worldmodels.training.nfd_cli`` (e.g. under ``torchrun``): the arguments of ``rlir train nfd``."""
    from rich.console import Console

    from worldmodels.errors import RlirError

    parser = argparse.ArgumentParser(prog="rlir train nfd", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except RlirError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
