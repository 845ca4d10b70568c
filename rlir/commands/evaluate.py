"""``rlir eval`` (generate and score a suite) and ``rlir eval score-videos DIR`` (score existing videos)."""

from __future__ import annotations

import argparse
from pathlib import Path

from worldmodels.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    from rlir.options import add_progress, add_resume

    parser = subparsers.add_parser(
        "eval",
        help="evaluate a world model's action-following on a suite (or score existing videos)",
        description="rlir eval --model NAME --suite SUITE --idm IDM --out DIR  |  "
        "rlir eval score-videos DIR --suite SUITE --idm IDM --out DIR",
    )
    parser.add_argument("--model", help="registered model name or checkpoint path")
    parser.add_argument("--checkpoint", help="checkpoint path (same as --model PATH)")
    parser.add_argument("--config", help="official MineWorld yaml (for official .ckpt files)")
    parser.add_argument("--vae-config", help="official VQ config.json")
    parser.add_argument("--model-name", help="name recorded in the bundle (default: the model argument)")
    _common(parser)
    parser.add_argument("--items", type=int, default=None, metavar="N",
                        help="only the first N suite items, for a quick look (a separate suite: not comparable with "
                             "the full one; default: all)")  # fmt: skip
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    mineworld = parser.add_argument_group(
        "autoregressive (MineWorld) models; refused for NFD models",
        "Sampling flags left out keep the model's default: the one its file stores (e.g. crafter-mineworld's top-p "
        "0.9), else the value shown. --top-p or --top-k replaces the default's truncation; --top-p 1 samples from the "
        "whole distribution. The bundle records what ran.")  # fmt: skip
    mineworld.add_argument("--compile", action="store_true",
                           help="decode with the compiled static step: the same tokens, faster once compiled "
                                "(docs/benchmarks.md)")  # fmt: skip
    for flag, default, kind, extra in _AUTOREGRESSIVE:
        mineworld.add_argument(flag, type=kind, default=None,
                               help=f"(default: the model's, else {'off' if default is None else default})",
                               **extra)  # fmt: skip
    nfd = parser.add_argument_group("NFD (diffusion) models; refused for autoregressive models")
    nfd.add_argument("--sampler", choices=("euler", "dpm-solver++"), default=None,
                     help=f"denoising sampler (default {NFD_DEFAULT[0]}, RLIR's protocol)")
    nfd.add_argument("--sampling-steps", type=int, default=None, metavar="N",
                     help=f"denoising steps per frame (default {NFD_DEFAULT[1]}, RLIR's protocol)")
    parser.add_argument("--no-videos", action="store_true", help="do not store the generated frames")
    parser.add_argument("--previews", type=int, default=DEFAULT_PREVIEWS, metavar="N",
                        help="write previews/<item>.mp4 (generated | ground truth, commanded and IDM-read action on "
                             "every frame) for the first N items; 0: none")  # fmt: skip
    quality = parser.add_argument_group("video quality against ground truth (needs the files; nothing downloads)")
    quality.add_argument("--lpips-weights", metavar="PATH",
                         help="LPIPS: a directory holding alexnet-owt-7be5be79.pth and alex.pth (or alex.pth with the "
                              "other next to it)")  # fmt: skip
    quality.add_argument("--i3d-weights", metavar="FILE", help="FVD: StyleGAN-V's i3d_torchscript.pt (needs scipy)")
    add_resume(parser, default="auto", what="the items already done in --out")
    add_progress(parser)
    parser.set_defaults(func=run, eval_command=None)

    modes = parser.add_subparsers(dest="eval_command", metavar="[score-videos | compare]")
    videos = modes.add_parser("score-videos", help="score videos generated elsewhere (no model needed)",
                              description="rlir eval score-videos DIR --suite SUITE --idm IDM --out DIR: reads "
                                          "DIR/<item id>.mp4 for every suite item (MineWorld's layout)")  # fmt: skip
    videos.add_argument("videos", help="directory of <item id>.mp4 (the official layout)")
    videos.add_argument("--model-name", help="name recorded in the bundle (default: the directory name)")
    _common(videos)
    videos.set_defaults(func=run)
    compare = modes.add_parser("compare", help="paired comparison of two bundles of the same suite and IDM",
                               description="rlir eval compare A B: B - A for mean macro-F1, each task, PSNR and SSIM, "
                                           "with 95% intervals from a paired bootstrap over the suite's items "
                                           "(the same items resampled for both)")  # fmt: skip
    compare.add_argument("bundles", nargs=2, metavar="BUNDLE", help="bundle directories (or bundle.json files): A B")
    compare.add_argument("--resamples", type=int, default=1000)
    compare.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    compare.set_defaults(func=_compare)


DEFAULT_PREVIEWS = 8
NFD_DEFAULT = ("dpm-solver++", 18)  # evaluation.evaluator.NFD_PROTOCOL, repeated so that --help imports no torch
_AUTOREGRESSIVE = (
    ("--decoding", "naive", str, {"choices": ("naive", "diagonal", "speculative")}),
    ("--window", 2, int, {}),
    ("--temperature", 1.0, float, {}),
    ("--top-p", None, float, {}),
    ("--top-k", None, int, {}),
)


def _sampling_settings(args: argparse.Namespace, model) -> dict:
    """The EvalSettings sampling fields from the flags, after refusing flags of the other model family."""
    from worldmodels.nfd import NFD

    given = {flag: getattr(args, flag[2:].replace("-", "_")) for flag, *_ in _AUTOREGRESSIVE}
    given = {flag: value for flag, value in given.items() if value is not None}
    if isinstance(model, NFD):
        if given:
            raise ConfigError(f"{', '.join(given)}: options of autoregressive (MineWorld) models, but "
                              f"{model.spec.name!r} is an NFD model: use --sampler euler|dpm-solver++ and "
                              "--sampling-steps N")  # fmt: skip
        return {"sampler": args.sampler, "sampling_steps": args.sampling_steps}
    nfd_flags = [flag for flag, value in (("--sampler", args.sampler), ("--sampling-steps", args.sampling_steps))
                 if value is not None]  # fmt: skip
    if nfd_flags:
        raise ConfigError(f"{', '.join(nfd_flags)}: options of NFD (diffusion) models, but {model.spec.name!r} is "
                          "autoregressive: use --decoding, --window, --temperature, --top-p, --top-k")  # fmt: skip
    return {flag[2:].replace("-", "_"): given.get(flag) for flag, *_ in _AUTOREGRESSIVE}  # None: the model's


def _common(parser: argparse.ArgumentParser) -> None:
    """Options of both ``rlir eval`` and ``rlir eval score-videos`` (given after the command they belong to)."""
    parser.add_argument("--suite", help="registered suite name or suite directory (required)")
    parser.add_argument("--idm", help="IDM name (vpt-4x-idm, crafter-idm-heldout) or file (required)")
    parser.add_argument("--out", metavar="DIR", help="bundle directory (required)")
    parser.add_argument("--device", default="cpu")


def _require(args: argparse.Namespace, command: str) -> None:
    # not argparse-required: `rlir eval score-videos DIR --suite ...` gives them to the subcommand, not to `eval`
    missing = [f"--{name}" for name in ("suite", "idm", "out") if getattr(args, name) is None]
    if missing:
        raise ConfigError(f"{command} needs {', '.join(missing)} (see `{command} --help`)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from evaluation.views import print_bundle_summary

    console = Console()
    if args.eval_command == "score-videos":
        _require(args, "rlir eval score-videos")
        bundle = _score_videos(args)
    else:
        _require(args, "rlir eval")
        bundle = _generate(args)
    if bundle is not None:
        print_bundle_summary(bundle, console)
        console.print(f"bundle written to {Path(args.out) / 'bundle.json'}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from evaluation.bundle import load_bundle
    from evaluation.compare import compare_bundles
    from evaluation.views import print_comparison

    if args.resamples < 100:
        raise ConfigError(f"--resamples {args.resamples} is too few for a 95% interval; use at least 100 (default 1000)")
    a, b = (load_bundle(path) for path in args.bundles)
    rows = compare_bundles(a, b, n_resamples=args.resamples, seed=args.seed)
    print_comparison(rows, (a.model.name, b.model.name))
    return 0


def _generate(args: argparse.Namespace):
    from evaluation.evaluator import EvalSettings, evaluate, model_info_for
    from evaluation.idm.registry import load_idm
    from evaluation.suites import first_items, load_suite
    from evaluation.video_quality import add_video_quality, check_video_quality_inputs
    from rlir.options import resume_mode
    from worldmodels.registry import load_world_model, resolve_checkpoint_path

    target = args.checkpoint or args.model
    if target is None:
        raise ConfigError("pass --model NAME or --checkpoint PATH (or use `rlir eval score-videos DIR ...`)")
    resume = resume_mode(args.resume) == "auto"
    suite = load_suite(args.suite)
    if args.items is not None:
        suite = first_items(suite, args.items)
    check_video_quality_inputs(suite, lpips=args.lpips_weights, i3d=args.i3d_weights, save_videos=not args.no_videos)
    options = {"compile": True} if args.compile else {}
    model = load_world_model(target, config=args.config, vae_config=args.vae_config, device=args.device, **options)
    idm = load_idm(args.idm, device=args.device)
    settings = EvalSettings(num_envs=args.num_envs, seed=args.seed, save_videos=not args.no_videos,
                            **_sampling_settings(args, model))  # fmt: skip
    info = model_info_for(model, args.model_name or str(target), resolve_checkpoint_path(target))
    if args.previews < 0:
        raise ConfigError(f"--previews must be >= 0, got {args.previews}")
    bundle = evaluate(model, suite, idm, args.out, model_info=info, settings=settings, resume=resume,
                      progress=args.progress, previews=args.previews)  # fmt: skip
    if bundle is not None:
        bundle = add_video_quality(bundle, args.out, suite, lpips=args.lpips_weights, i3d=args.i3d_weights,
                                   device=args.device)  # fmt: skip
    return bundle


def _score_videos(args: argparse.Namespace):
    import numpy as np

    from evaluation.bundle import ModelInfo
    from evaluation.evaluator import bundle_from_videos
    from evaluation.idm.registry import load_idm
    from evaluation.suites import load_suite
    from worldmodels.data.video import read_video

    suite = load_suite(args.suite)
    idm = load_idm(args.idm, device=args.device)
    directory = Path(args.videos)
    h, w = suite.frame_size
    videos = []
    for item_id in suite.item_ids:
        path = directory / f"{item_id}.mp4"
        if not path.is_file():
            raise ConfigError(f"video {path} for suite item {item_id!r} is missing; every suite item needs one")
        frames = read_video(path, expected_size=(h, w))
        # MineWorld's protocol: the first n_frames frames are the generated ones
        videos.append((item_id, np.ascontiguousarray(frames[: suite.n_frames])))
    info = ModelInfo(name=args.model_name or directory.name, description=f"scored from videos in {directory}")
    return bundle_from_videos(videos, suite, idm, args.out, model_info=info)
