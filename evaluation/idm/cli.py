"""``rlir train idm``: light argparse registration; training code is imported when the command runs."""

from __future__ import annotations

import argparse

from worldmodels.cli_options import add_progress, add_report_to
from worldmodels.training.cli import TRAIN_HELP, get_or_add_subparsers

SPLITS = ("all", "train", "heldout")
CLASS_WEIGHTINGS = ("none", "inverse_sqrt")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``idm`` to ``rlir train`` (creating ``train`` unless another module already did)."""
    register_idm(get_or_add_subparsers(subparsers, "train", help=TRAIN_HELP))


def register_idm(train_subparsers: argparse._SubParsersAction) -> None:
    """Add ``idm`` to the subcommands of ``rlir train``; unset architecture options take CrafterIDMConfig's defaults."""
    idm = train_subparsers.add_parser("idm", help="train a Crafter inverse dynamics model on recorded shards")
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
    idm.add_argument("--split", choices=SPLITS, default="all", help="all episodes or one fixed half of each dataset")
    idm.add_argument("--split-fraction", type=float, default=0.5, help="share of episodes in the 'train' half")
    idm.add_argument("--eval-fraction", type=float, default=0.1, help="share of episodes held out for validation")
    idm.add_argument("--eval-data", action="append", default=[], metavar="DIR", help="extra dataset to score")
    idm.add_argument("--eval-max-windows", type=int, default=2048)
    idm.add_argument("--class-weighting", choices=CLASS_WEIGHTINGS, default="none")
    idm.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    idm.add_argument("--log-every", type=int, default=100)
    idm.add_argument("--name", default=None, help="model name stored in the file (default: file stem)")
    add_progress(idm)
    add_report_to(idm)
    idm.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from evaluation.idm.train import main_train_idm

    return main_train_idm(args)
