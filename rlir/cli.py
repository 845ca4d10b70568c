"""The ``rlir`` command line: ``rlir <command> ...``; ``rlir <command> --help`` for details."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

from rlir.commands import actions, agents, demo, doctor, evaluate, leaderboard, posttrain, record, rollout, suite, train
from rlir.options import DefaultsHelpFormatter
from worldmodels.errors import RlirError

# One module per command group, in the order `rlir --help` lists them. The modules only build argparse parsers:
# each handler imports the library it runs, so `rlir --help` starts without loading torch.
COMMAND_GROUPS = (demo, doctor, evaluate, suite, posttrain, leaderboard, train, record, rollout, actions, agents)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlir",
        description="Video world models as Gymnasium environments, ranked by action-following and improved with RLIR.",
    )
    parser.add_argument("--version", action="version", version=f"rlir {doctor.rlir_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for group in COMMAND_GROUPS:
        group.register(subparsers)
    _show_defaults(parser)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's ``--help`` shows the defaults (set here once instead of in each module)."""
    parser.formatter_class = DefaultsHelpFormatter
    for action in parser._actions:
        unset = any(action.default is value for value in (None, False, argparse.SUPPRESS))
        if action.help is None and action.option_strings and not unset:
            action.help = "default: %(default)s"  # without a help text argparse prints no line, hence no default
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                _show_defaults(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "device", None) is not None:
            # before anything is loaded: a device torch cannot use fails here in one line, not in a traceback later
            from worldmodels.device import check_device

            check_device(args.device)
        if getattr(args, "report_to", None) is not None:
            from worldmodels.training.report import check_report_to

            check_report_to(args.report_to)  # a missing TensorBoard / W&B stops a trainer before it reads any data
        return int(args.func(args) or 0)
    except RlirError as error:
        Console(stderr=True).print(f"[bold red]error:[/] {error}", highlight=False, markup=True)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
