"""``rlir record crafter``: record real Crafter trajectories into training shards."""

from __future__ import annotations

import argparse

from rlir.options import add_progress, add_resume, resume_mode


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("record", help="record ground-truth trajectories for training")
    sub = parser.add_subparsers(dest="record_command", required=True)
    crafter = sub.add_parser("crafter", help="record real Crafter with a behaviour policy into .npz shards")
    crafter.add_argument("out", help="output directory (shards + manifest.json)")
    crafter.add_argument("--frames", type=int, required=True, help="total frames to record")
    crafter.add_argument("--seed", type=int, default=0)
    crafter.add_argument("--workers", type=int, default=1, help="parallel processes (the result does not depend on it)")
    crafter.add_argument("--policy", default="mixture",
                         choices=("mixture", "explorer", "random", "uniform", "decorrelated"),
                         help="behaviour policy (mixture: the v1 recordings; decorrelated: the v2 ones)")
    crafter.add_argument("--policy-kwargs", default=None, metavar="JSON",
                         help='keyword arguments of the policy as a JSON object, e.g. \'{"p_random": 0.5}\'')
    crafter.add_argument("--size", type=int, default=72, help="frame side; 72 makes every Crafter tile 8x8 pixels")
    crafter.add_argument("--shard-frames", type=int, default=5000)
    crafter.add_argument("--overwrite", action="store_true", help="replace a recording already in OUT")
    add_resume(crafter, default="never", what="a recording in OUT: keep its shards (same settings; --frames may grow)")
    add_progress(crafter)
    crafter.set_defaults(func=_crafter)
    scenes = sub.add_parser("scenes", help="cut a start-scene pool for Crafter world-model envs from a recording")
    scenes.add_argument("data", help="recording directory (from `rlir record crafter`)")
    scenes.add_argument("out", help="pool file to write (.npz)")
    scenes.add_argument("--scenes", type=int, default=256, help="number of scenes")
    scenes.add_argument("--scene-frames", type=int, default=4, help="consecutive real frames per scene (>= 2)")
    scenes.add_argument("--seed", type=int, default=0)
    scenes.set_defaults(func=_scenes)


def _crafter(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from rlir_env.crafter.record import record
    from worldmodels.errors import ConfigError

    kwargs = None
    if args.policy_kwargs is not None:
        try:
            kwargs = json.loads(args.policy_kwargs)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--policy-kwargs {args.policy_kwargs!r} is not JSON ({e}); pass a JSON object") from None
        if not isinstance(kwargs, dict):
            raise ConfigError(f"--policy-kwargs must be a JSON object like '{{\"p_random\": 0.5}}', got {kwargs!r}")
    manifest = record(
        args.out, n_frames=args.frames, shard_frames=args.shard_frames, workers=args.workers, seed=args.seed,
        policy=args.policy, policy_kwargs=kwargs, size=args.size, progress=args.progress,
        overwrite=args.overwrite, resume=resume_mode(args.resume) == "auto",
    )  # fmt: skip
    Console().print(f"recorded {sum(s['frames'] for s in manifest['shards'])} frames into {args.out}")
    return 0


def _scenes(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rlir_env.crafter.scenes import build_scene_pool

    path = build_scene_pool(args.data, args.out, n_scenes=args.scenes, scene_frames=args.scene_frames, seed=args.seed)
    Console().print(f"wrote {args.scenes} scenes of {args.scene_frames} frames to {path}")
    return 0
