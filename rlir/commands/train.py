"""``rlir train tokenizer|worldmodel|nfd|idm|reward-head``: train every model rlir ships.

Light argparse registration; the training code (torch, diffusers) is imported when a command runs. Data-parallel
NFD training: ``torchrun --nproc_per_node N -m rlir train nfd --data ... --out ...`` (gloo on CPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlir.options import add_progress, add_report_to, add_resume, resolve_out, resume_mode

__all__ = ["TRAIN_HELP", "register"]

TRAIN_HELP = "train models (tokenizer, world model, NFD, inverse dynamics model, reward heads)"

# the choices of `rlir train idm` are the training code's (evaluation.idm.train checks them too)
IDM_SPLITS = ("all", "train", "heldout")
IDM_CLASS_WEIGHTINGS = ("none", "inverse_sqrt")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` command group."""
    train = subparsers.add_parser("train", help=TRAIN_HELP)
    commands = train.add_subparsers(dest="train_command", required=True, metavar="command")
    _add_tokenizer_and_worldmodel(commands)
    _add_nfd(commands)
    _add_idm(commands)
    _add_reward_head(commands)


def _add_tokenizer_and_worldmodel(train: argparse._SubParsersAction) -> None:
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
    tok.add_argument("--supervision", choices=("reconstruction", "patterns", "decoder"), default="reconstruction",
                     help="plain VQ-VAE training, codes fixed by the training frames' exact cell patterns "
                          "(worldmodels/training/tokenizer_patterns.py), or the decoder of --init fine-tuned with "
                          "its tokens frozen (worldmodels/training/tokenizer_decoder.py)")
    tok.add_argument("--init", default=None, metavar="FILE",
                     help="decoder: the tokenizer whose decoder is fine-tuned (its encoder and codebook are kept)")
    tok.add_argument("--table-codes", type=int, default=None,
                     help="patterns: at most this many codes for exact patterns (default 3/4 of the codebook)")
    tok.add_argument("--merge-levels", type=float, default=1.0,
                     help="patterns: exact patterns within this RMS distance (0..255 levels) share a code")
    tok.add_argument("--consistency", type=float, default=0.3,
                     help="patterns, decoder: weight of the decode -> encode classification loss (0: off)")
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
    wm.add_argument("--size", default=None,
                    help="architecture: one of AR_SIZES (small, medium, wide), for the tokenizer's codebook "
                         "(default: small, or the --init model's)")
    wm.add_argument("--config", metavar="JSON", default=None,
                    help="a MineWorldConfig as JSON (MineWorldConfig.to_dict()); overrides --size")
    wm.add_argument("--steps", type=int, default=2000,
                    help="optimiser steps; with --resume auto, more than the checkpoint's extend that run (its later "
                         "steps follow the longer cosine schedule)")
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
    wm.add_argument("--init", default=None, metavar="FILE",
                    help="warm start from this MineWorld .safetensors (trained on --tokenizer's tokens): its "
                         "transformer, a fresh optimiser and schedule, batches it was not trained on")
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
    from worldmodels.errors import ConfigError
    from worldmodels.mineworld.vq import load_vq_config
    from worldmodels.training.tokenizer import train_tokenizer

    out = resolve_out(args.out, "tokenizer")
    if (args.init is None) != (args.supervision != "decoder"):
        raise ConfigError(
            f"--init {args.init!r} with --supervision {args.supervision}: --init names the tokenizer whose decoder "
            "--supervision decoder fine-tunes, and goes with it only"
        )
    # the options every tokenizer trainer takes alike
    shared = dict(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, seed=args.seed,
        val_fraction=args.val_fraction, eval_dirs=args.eval_data, eval_frames=args.eval_frames,
        eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, log_path=args.log,
        resume=resume_mode(args.resume) == "auto", stop_after=args.stop_after, progress=args.progress,
        report_to=args.report_to,
    )  # fmt: skip
    if args.supervision == "decoder":
        from worldmodels.training.tokenizer_decoder import train_tokenizer_decoder

        if args.vq_config is not None or args.frame_size is not None:
            raise ConfigError("--supervision decoder keeps the --init tokenizer's architecture and frame size; "
                              "drop --vq-config/--frame-size")
        summary = train_tokenizer_decoder(args.init, args.data, out, consistency=args.consistency, **shared)
        _print_summary(summary, str(out))
        return 0
    frame_size = tuple(args.frame_size or ShardDataset(args.data[0]).frame_shape[:2])
    vq_config = None if args.vq_config is None else load_vq_config(args.vq_config)
    if args.supervision == "patterns":
        from worldmodels.training.tokenizer_patterns import train_pattern_tokenizer

        summary = train_pattern_tokenizer(
            args.data, out, vq_config=vq_config, frame_size=frame_size, table_codes=args.table_codes,
            merge_levels=args.merge_levels, consistency=args.consistency, **shared,
        )  # fmt: skip
        _print_summary(summary, str(out))
        return 0
    summary = train_tokenizer(
        args.data, out, vq_config=vq_config, frame_size=frame_size, restart_every=args.restart_every,
        codebook_update=args.codebook_update, **shared,
    )  # fmt: skip
    _print_summary(summary, str(out))
    return 0


def _main_worldmodel(args: argparse.Namespace) -> int:
    _setup_threads(args)
    from worldmodels.errors import ConfigError, MissingFileError
    from worldmodels.mineworld.checkpoint import load_checkpoint
    from worldmodels.mineworld.config import MineWorldConfig
    from worldmodels.training.tokenizer import read_tokenizer_file
    from worldmodels.training.worldmodel import AR_SIZES, crafter_ar_config, train_worldmodel

    if args.config is not None:
        path = Path(args.config)
        if not path.is_file():
            raise MissingFileError(f"config {args.config!r} does not exist; write MineWorldConfig.to_dict() as JSON")
        config = MineWorldConfig.from_dict(json.loads(path.read_text()))
    elif args.size is None and args.init is not None:
        config = load_checkpoint(args.init)[0]
    elif (args.size or "small") in AR_SIZES:
        _, vq_config, _ = read_tokenizer_file(args.tokenizer)
        config = crafter_ar_config(**AR_SIZES[args.size or "small"], codebook=int(vq_config["num_vq_embeddings"]))
    else:
        raise ConfigError(f"unknown --size {args.size!r}; choose one of {sorted(AR_SIZES)} or pass --config")
    out = resolve_out(args.out, "worldmodel")
    summary = train_worldmodel(
        args.data, args.tokenizer, out, config=config, steps=args.steps, batch_size=args.batch_size,
        window_frames=args.window_frames, lr=args.lr, warmup=args.warmup, weight_decay=args.weight_decay,
        seed=args.seed, val_fraction=args.val_fraction, val_windows=args.val_windows, eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every, log_path=args.log, resume=resume_mode(args.resume) == "auto",
        stop_after=args.stop_after, compile=args.compile, progress=args.progress, report_to=args.report_to,
        init_path=args.init,
    )  # fmt: skip
    _print_summary(summary, str(out))
    return 0


def _add_nfd(train: argparse._SubParsersAction) -> None:
    parser = train.add_parser("nfd", help="train an NFD (next-frame diffusion) world model: autoencoder + transformer")
    _nfd_arguments(parser)
    parser.set_defaults(func=_main_nfd)


def _nfd_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", action="append", required=True, metavar="DIR",
                   help="trajectory-shard directory (repeatable), a MineWorld clip folder or VPT recordings")
    p.add_argument("--layout", choices=("auto", "shards", "mineworld", "vpt"), default="auto",
                   help="data layout (auto: shards if manifest.json exists, else MineWorld clips)")
    p.add_argument("--clip-frames", type=int, default=16, help="frames per VPT episode chunk")
    p.add_argument("--clip-limit", type=int, default=None, help="read at most this many clips")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="writes DIR/nfd.safetensors, its autoencoder, summary .json and run directories (or a "
                        ".safetensors path)")
    p.add_argument("--size", default=None,
                   help="preset (nfd-crafter-small, nfd-tiny, nfd-310m, nfd-774m; default: nfd-crafter-small, or the "
                        "--init model's)")
    p.add_argument("--config", metavar="JSON", default=None, help="an NFDConfig as JSON (overrides --size)")
    p.add_argument("--ae-config", metavar="JSON", default=None,
                   help="diffusers AutoencoderKL config.json (default: the Crafter config, 72x72 -> 9x9x8)")
    p.add_argument("--autoencoder", metavar="FILE", default=None, help="use this trained autoencoder (skip stage 1)")
    p.add_argument("--init", default=None, metavar="FILE",
                   help="warm start: continue a trained NFD model (its transformer and autoencoder; fresh optimiser "
                        "and --steps schedule); pass the data and --seed it was trained with")
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


def _main_nfd(args: argparse.Namespace) -> int:
    from worldmodels.errors import MissingFileError
    from worldmodels.nfd import NFDConfig, get_preset
    from worldmodels.training.nfd import train_nfd

    _setup_threads(args)

    def read_json(path: str, what: str) -> dict:
        if not Path(path).is_file():
            raise MissingFileError(f"{what} {path!r} does not exist")
        return json.loads(Path(path).read_text())

    if args.config:
        config = NFDConfig.from_dict(read_json(args.config, "config"))
    else:
        config = get_preset(args.size) if args.size is not None else None  # None: nfd-crafter-small or the init's
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
        init_path=args.init,
    )  # fmt: skip
    summary = result["transformer"]
    final = summary.get("final") or {}
    from rich.console import Console

    state = f"wrote {out}" if summary["finished"] else f"stopped at step {summary['steps_done']} (--resume auto)"
    Console().print(f"{state}; validation {json.dumps({k: round(v, 4) for k, v in final.items()})}", highlight=False)
    return 0


def _add_idm(train: argparse._SubParsersAction) -> None:
    # unset architecture options take CrafterIDMConfig's defaults
    idm = train.add_parser("idm", help="train a Crafter inverse dynamics model on recorded shards")
    idm.add_argument("--data", action="append", required=True, metavar="DIR",
                     help="trajectory-shard directory to train on (repeat for several)")
    idm.add_argument("--out", required=True, metavar="DIR",
                     help="writes DIR/idm.safetensors and its summary .json (or a .safetensors path)")
    idm.add_argument("--width", type=int, default=None, help="channels of the frame-comparison convs (default 48)")
    idm.add_argument("--depth", type=int, default=None, help="temporal residual blocks (default 2)")
    idm.add_argument("--window", type=int, default=None, help="transitions per training window (default 16)")
    idm.add_argument("--cell", type=int, default=None, help="patch side in pixels (default 8 = one cell at 72 px)")
    idm.add_argument("--seed", type=int, default=0)
    idm.add_argument("--steps", type=int, default=1500)
    idm.add_argument("--batch-size", type=int, default=32)
    idm.add_argument("--lr", type=float, default=2e-3)
    idm.add_argument("--weight-decay", type=float, default=0.05)
    idm.add_argument("--warmup-steps", type=int, default=100)
    idm.add_argument("--split", choices=IDM_SPLITS, default="all", help="all episodes or one fixed half of each dataset")
    idm.add_argument("--split-fraction", type=float, default=0.5, help="share of episodes in the 'train' half")
    idm.add_argument("--eval-fraction", type=float, default=0.1, help="share of episodes held out for validation")
    idm.add_argument("--eval-data", action="append", default=[], metavar="DIR", help="extra dataset to score")
    idm.add_argument("--eval-max-windows", type=int, default=2048)
    idm.add_argument("--class-weighting", choices=IDM_CLASS_WEIGHTINGS, default="none")
    idm.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    idm.add_argument("--log-every", type=int, default=100)
    idm.add_argument("--name", default=None, help="model name stored in the file (default: file stem)")
    add_progress(idm)
    add_report_to(idm)
    idm.set_defaults(func=_main_idm)


def _main_idm(args: argparse.Namespace) -> int:
    from evaluation.idm.crafter import CrafterIDMConfig
    from evaluation.idm.train import train_crafter_idm
    from worldmodels.data.shards import ShardDataset

    height, width = ShardDataset(args.data[0]).frame_shape[:2]  # the IDM takes the recording's frame size
    given = {k: getattr(args, k) for k in ("width", "depth", "window", "cell") if getattr(args, k) is not None}
    config = CrafterIDMConfig(frame_size=(int(height), int(width)), **given)
    train_crafter_idm(
        args.data, resolve_out(args.out, "idm"), config=config, seed=args.seed, split=args.split,
        split_fraction=args.split_fraction, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, eval_fraction=args.eval_fraction,
        eval_dirs=args.eval_data, eval_max_windows=args.eval_max_windows, class_weighting=args.class_weighting,
        threads=args.threads, log_every=args.log_every, name=args.name, progress=args.progress,
        report_to=args.report_to,
    )  # fmt: skip
    return 0


def _add_reward_head(train: argparse._SubParsersAction) -> None:
    heads = train.add_parser("reward-head", help="train Crafter reward and termination heads on recorded shards")
    heads.add_argument("--data", action="append", required=True, metavar="DIR",
                       help="trajectory-shard directory to train on (repeat for several)")
    heads.add_argument("--heldout", action="append", default=None, metavar="DIR",
                       help="recording scored at the end (default: the validation episodes)")
    heads.add_argument("--out", required=True, metavar="DIR",
                       help="writes DIR/heads.safetensors and its summary .json (or a .safetensors path)")
    heads.add_argument("--tokenizer", default=None, metavar="FILE",
                       help="the world model's VQ tokenizer (tokenizer file or world model): also train on frames it "
                            "reconstructs, as the world model draws them")
    heads.add_argument("--reconstruct-transitions", type=int, default=6000,
                       help="training transitions passed through the tokenizer (half of them rare)")
    heads.add_argument("--reconstruct-fraction", type=float, default=0.5,
                       help="share of each batch taken from reconstructed transitions")
    heads.add_argument("--steps", type=int, default=3000)
    heads.add_argument("--batch-size", type=int, default=128)
    heads.add_argument("--lr", type=float, default=2e-3)
    heads.add_argument("--warmup", type=int, default=100)
    heads.add_argument("--weight-decay", type=float, default=0.01)
    heads.add_argument("--seed", type=int, default=0)
    heads.add_argument("--val-fraction", type=float, default=0.1, help="share of episodes held out for thresholds")
    heads.add_argument("--rare-fraction", type=float, default=0.25,
                       help="share of each batch drawn from unlock / health-change / death transitions")
    heads.add_argument("--eval-every", type=int, default=500)
    heads.add_argument("--log", default=None, metavar="FILE", help="JSON Lines training log")
    heads.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_progress(heads)
    add_report_to(heads)
    heads.set_defaults(func=_main_heads)


def _main_heads(args: argparse.Namespace) -> int:
    _setup_threads(args)
    from rich.console import Console

    from rlir.agents.reward_heads import train_heads

    out = resolve_out(args.out, "heads")
    summary = train_heads(
        args.data, out, heldout_dirs=args.heldout, tokenizer=args.tokenizer,
        reconstruct_transitions=args.reconstruct_transitions, reconstruct_fraction=args.reconstruct_fraction,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        warmup=args.warmup, weight_decay=args.weight_decay, seed=args.seed, val_fraction=args.val_fraction,
        rare_fraction=args.rare_fraction, eval_every=args.eval_every, log_path=args.log,
        progress=args.progress, report_to=args.report_to,
    )  # fmt: skip
    m = summary["metrics"] or {}
    shown = {"reward_mae": m.get("reward_mae"), "unlock_f1": (m.get("unlock") or {}).get("f1"),
             "termination_auc": (m.get("termination") or {}).get("auc")}  # fmt: skip
    recon = summary.get("metrics_reconstructed") or {}
    if recon:
        shown["reconstructed_reward_mae"] = recon.get("reward_mae")
    Console().print(f"wrote {out}; {summary['metrics_on']}: {json.dumps(shown)}", highlight=False)
    return 0
