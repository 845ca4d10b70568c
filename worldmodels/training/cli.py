"""``rlir train tokenizer`` and ``rlir train worldmodel``.

Other modules add their own ``rlir train <what>`` through :func:`get_or_add_subparsers`, which creates the ``train``
command on first use and returns the existing one afterwards, so registration order does not matter::

    def register(subparsers):
        train = get_or_add_subparsers(subparsers, "train", help=TRAIN_HELP)
        train.add_parser("idm", ...)

Heavy imports (torch, diffusers) happen inside the handlers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from worldmodels.cli_options import add_progress, add_report_to, add_resume, resolve_out, resume_mode

__all__ = ["TRAIN_HELP", "get_or_add_subparsers", "register", "register_train_commands"]

TRAIN_HELP = "train models (tokenizer, world model, inverse dynamics model)"


def get_or_add_subparsers(
    subparsers: argparse._SubParsersAction, name: str, *, help: str
) -> argparse._SubParsersAction:
    """The subcommands of command ``name`` (``rlir <name> <sub> ...``), creating ``name`` if it does not exist yet.

    The created command's chosen subcommand is stored in ``args.<name>_command``.
    """
    existing = subparsers.choices.get(name)
    if existing is None:
        parser = subparsers.add_parser(name, help=help)
        return parser.add_subparsers(dest=f"{name}_command", required=True, metavar="command")
    for action in existing._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return existing.add_subparsers(dest=f"{name}_command", required=True, metavar="command")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tokenizer`` and ``worldmodel`` to ``rlir train`` (creating ``train`` if needed)."""
    register_train_commands(get_or_add_subparsers(subparsers, "train", help=TRAIN_HELP))


def register_train_commands(train: argparse._SubParsersAction) -> None:
    """Add ``tokenizer`` and ``worldmodel`` to the subcommands of ``rlir train``."""
    tok = train.add_parser("tokenizer", help="train a VQ image tokenizer (diffusers VQModel) on recorded frames")
    tok.add_argument("--data", action="append", required=True, metavar="DIR",
                     help="trajectory-shard directory to train on (repeat for several)")
    tok.add_argument("--out", required=True, metavar="DIR",
                     help="writes DIR/tokenizer.safetensors, its summary .json and run directory (or a .safetensors path)")
    tok.add_argument("--vq-config", metavar="JSON", default=None,
                     help="diffusers VQModel config.json (default: the Crafter config, 72x72 -> 9x9, 512 codes)")
    tok.add_argument("--frame-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                     help="frame size (default: the recording's)")
    tok.add_argument("--steps", type=int, default=2000)
    tok.add_argument("--batch-size", type=int, default=16)
    tok.add_argument("--lr", type=float, default=1e-3)
    tok.add_argument("--warmup", type=int, default=100)
    tok.add_argument("--seed", type=int, default=0)
    tok.add_argument("--val-fraction", type=float, default=0.05, help="share of episodes held out for evaluation")
    tok.add_argument("--eval-data", action="append", default=None, metavar="DIR",
                     help="evaluate on this recording instead of held-out episodes (repeatable)")
    tok.add_argument("--eval-frames", type=int, default=1024)
    tok.add_argument("--eval-every", type=int, default=500)
    tok.add_argument("--restart-every", type=int, default=50, help="re-seed unused codes every N steps (0: never)")
    tok.add_argument("--codebook-update", choices=("ema", "gradient"), default="ema",
                     help="EMA of assigned latents (default) or AdamW on diffusers' codebook loss")
    tok.add_argument("--supervision", choices=("reconstruction", "patterns"), default="reconstruction",
                     help="plain VQ-VAE training, or codes fixed by the training frames' exact cell patterns "
                          "(worldmodels/training/tokenizer_patterns.py)")
    tok.add_argument("--table-codes", type=int, default=None,
                     help="patterns: at most this many codes for exact patterns (default 3/4 of the codebook)")
    tok.add_argument("--merge-levels", type=float, default=1.0,
                     help="patterns: exact patterns within this RMS distance (0..255 levels) share a code")
    tok.add_argument("--consistency", type=float, default=0.3,
                     help="patterns: weight of the decode -> encode classification loss (0: off)")
    tok.add_argument("--checkpoint-every", type=int, default=250)
    _common_options(tok)
    tok.set_defaults(func=_main_tokenizer)

    wm = train.add_parser("worldmodel", help="train a MineWorld-architecture world model on tokenized recordings")
    wm.add_argument("--data", action="append", required=True, metavar="DIR",
                    help="trajectory-shard directory to train on (repeat for several)")
    wm.add_argument("--tokenizer", required=True, metavar="FILE", help="tokenizer from `rlir train tokenizer`")
    wm.add_argument("--out", required=True, metavar="DIR",
                    help="writes DIR/worldmodel.safetensors (MineWorld format), its summary .json, tokens and run "
                         "directory (or a .safetensors path)")
    wm.add_argument("--size", default="small",
                    help="architecture: one of AR_SIZES (small, medium, wide), for the tokenizer's codebook")
    wm.add_argument("--config", metavar="JSON", default=None,
                    help="a MineWorldConfig as JSON (MineWorldConfig.to_dict()); overrides --size")
    wm.add_argument("--steps", type=int, default=2000)
    wm.add_argument("--batch-size", type=int, default=8)
    wm.add_argument("--window-frames", type=int, default=None, help="frames per window (default: the context)")
    wm.add_argument("--lr", type=float, default=1e-3)
    wm.add_argument("--warmup", type=int, default=100)
    wm.add_argument("--weight-decay", type=float, default=0.1)
    wm.add_argument("--seed", type=int, default=0)
    wm.add_argument("--val-fraction", type=float, default=0.05)
    wm.add_argument("--val-windows", type=int, default=128)
    wm.add_argument("--eval-every", type=int, default=250)
    wm.add_argument("--checkpoint-every", type=int, default=250)
    wm.add_argument("--compile", action="store_true", help="torch.compile the training step")
    _common_options(wm)
    wm.set_defaults(func=_main_worldmodel)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", default=None, metavar="FILE",
                        help="JSON Lines log (default: <out stem>.run/log.jsonl)")
    add_resume(parser, what="from the run directory's checkpoint")
    parser.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                        help="stop after this many steps (resumable with --resume auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    add_progress(parser)
    add_report_to(parser)


def _setup_threads(args: argparse.Namespace) -> None:
    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)


def _print_summary(summary: dict, out: str) -> None:
    from rich.console import Console

    final = summary.get("final") or {}
    shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in final.items()}
    state = f"wrote {out}" if summary["finished"] else f"stopped at step {summary['steps_done']} (resume with --resume auto)"
    Console().print(f"{state}; {json.dumps(shown)}", highlight=False)


def _main_tokenizer(args: argparse.Namespace) -> int:
    _setup_threads(args)
    from worldmodels.data.shards import ShardDataset
    from worldmodels.mineworld.vq import load_vq_config
    from worldmodels.training.tokenizer import train_tokenizer

    frame_size = args.frame_size or tuple(ShardDataset(args.data[0]).frame_shape[:2])
    out = resolve_out(args.out, "tokenizer")
    if args.supervision == "patterns":
        from worldmodels.training.tokenizer_patterns import train_pattern_tokenizer

        summary = train_pattern_tokenizer(
            args.data, out, vq_config=None if args.vq_config is None else load_vq_config(args.vq_config),
            frame_size=tuple(frame_size), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
            warmup=args.warmup, seed=args.seed, val_fraction=args.val_fraction, eval_dirs=args.eval_data,
            eval_frames=args.eval_frames, eval_every=args.eval_every, table_codes=args.table_codes,
            merge_levels=args.merge_levels, consistency=args.consistency, checkpoint_every=args.checkpoint_every,
            log_path=args.log, resume=resume_mode(args.resume) == "auto", stop_after=args.stop_after,
            progress=args.progress, report_to=args.report_to,
        )  # fmt: skip
        _print_summary(summary, str(out))
        return 0
    summary = train_tokenizer(
        args.data, out, vq_config=None if args.vq_config is None else load_vq_config(args.vq_config),
        frame_size=tuple(frame_size), steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        seed=args.seed, val_fraction=args.val_fraction, eval_dirs=args.eval_data, eval_frames=args.eval_frames,
        eval_every=args.eval_every, restart_every=args.restart_every, codebook_update=args.codebook_update, checkpoint_every=args.checkpoint_every,
        log_path=args.log, resume=resume_mode(args.resume) == "auto", stop_after=args.stop_after, progress=args.progress,
        report_to=args.report_to,
    )  # fmt: skip
    _print_summary(summary, str(out))
    return 0


def _main_worldmodel(args: argparse.Namespace) -> int:
    _setup_threads(args)
    from worldmodels.errors import ConfigError, MissingFileError
    from worldmodels.mineworld.config import MineWorldConfig
    from worldmodels.training.tokenizer import read_tokenizer_file
    from worldmodels.training.worldmodel import AR_SIZES, crafter_ar_config, train_worldmodel

    if args.config is not None:
        path = Path(args.config)
        if not path.is_file():
            raise MissingFileError(f"config {args.config!r} does not exist; write MineWorldConfig.to_dict() as JSON")
        config = MineWorldConfig.from_dict(json.loads(path.read_text()))
    elif args.size in AR_SIZES:
        _, vq_config, _ = read_tokenizer_file(args.tokenizer)
        config = crafter_ar_config(**AR_SIZES[args.size], codebook=int(vq_config["num_vq_embeddings"]))
    else:
        raise ConfigError(f"unknown --size {args.size!r}; choose one of {sorted(AR_SIZES)} or pass --config")
    out = resolve_out(args.out, "worldmodel")
    summary = train_worldmodel(
        args.data, args.tokenizer, out, config=config, steps=args.steps, batch_size=args.batch_size,
        window_frames=args.window_frames, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
        seed=args.seed, val_fraction=args.val_fraction, val_windows=args.val_windows, eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every, log_path=args.log, resume=resume_mode(args.resume) == "auto",
        stop_after=args.stop_after, compile=args.compile, progress=args.progress, report_to=args.report_to,
    )  # fmt: skip
    _print_summary(summary, str(out))
    return 0
