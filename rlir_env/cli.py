"""The ``rlir`` command line: ``rlir <command> ...``; ``rlir <command> --help`` for details."""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from worldmodels.errors import RlirError

# Each module registers its subcommand; modules stay light and import heavy parts inside their handlers.
COMMAND_MODULES = (
    "rlir_env.commands.demo",
    "rlir_env.commands.doctor",
    "rlir_env.commands.actions",
    "rlir_env.commands.record",
    "rlir_env.commands.rollout",
    "evaluation.cli",
    "worldmodels.training.cli",
    "worldmodels.training.nfd_cli",
    "evaluation.idm.cli",
    "rlir_env.dream.cli",
    "leaderboard.cli",
    "posttrain.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlir",
        description="Video world models as Gymnasium environments, ranked by action-following and improved with RLIR.",
    )
    from rlir_env.commands.doctor import rlir_version

    parser.add_argument("--version", action="version", version=f"rlir {rlir_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    _show_defaults(parser)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every (sub)command's ``--help`` shows the defaults (set here once instead of in each module)."""
    from worldmodels.cli_options import DefaultsHelpFormatter

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
