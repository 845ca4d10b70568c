"""``rlir agents train`` and ``rlir agents eval``: light argparse registration; torch and
stable-baselines3 are imported when a command runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlir.options import add_progress, add_report_to, resolve_out

DREAM_WORLD = "RLIR-CrafterDream-v0"
REAL_WORLD = "RLIR-CrafterReal-v0"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``agents`` command group (``train``, ``eval``)."""
    agents = subparsers.add_parser("agents", help="train agents in the learned simulator or the real game; score them")
    commands = agents.add_subparsers(dest="agents_command", required=True, metavar="command")
    tr = commands.add_parser("train", help="train an agent (PPO) and evaluate it in the real game")
    tr.add_argument("--world", default=DREAM_WORLD, help=f"{DREAM_WORLD} (default) or {REAL_WORLD}")
    tr.add_argument("--algo", default="ppo", choices=("ppo",))
    tr.add_argument("--steps", type=int, required=True, help="env steps of training")
    tr.add_argument("--num-envs", type=int, default=8)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--eval-every", type=int, default=None, metavar="STEPS",
                    help="evaluate and checkpoint every this many env steps (default: only at the end)")
    tr.add_argument("--eval-episodes", type=int, default=10)
    tr.add_argument("--eval-max-steps", type=int, default=None,
                    help="cut real-game evaluation episodes at this length (default: Crafter's 10000)")
    tr.add_argument("--out", default=None, metavar="DIR", help="output directory (default runs/agents/<world>-s<seed>)")
    tr.add_argument("--frame-stack", type=int, default=1)
    tr.add_argument("--extractor", default="crafter", choices=("crafter", "nature"))
    tr.add_argument("--checkpoint", default=None, help="world model for the dream (default crafter-mineworld)")
    tr.add_argument("--heads", default=None, help="reward/termination heads (default: the bundled heads)")
    tr.add_argument("--scenes", default=None,
                    help="start scenes of the dream: a recording directory (default: the bundled real frames)")
    tr.add_argument("--max-episode-steps", type=int, default=None, help="dream episode truncation (default 1000)")
    tr.add_argument("--n-steps", type=int, default=None, help="PPO rollout length per env (default 256)")
    tr.add_argument("--batch-size", type=int, default=None, help="PPO mini-batch (default 256)")
    tr.add_argument("--n-epochs", type=int, default=None, help="PPO epochs per rollout (default 4)")
    tr.add_argument("--lr", type=float, default=None, help="PPO learning rate (default 3e-4)")
    tr.add_argument("--ent-coef", type=float, default=None, help="PPO entropy bonus (default 0.01)")
    tr.add_argument("--device", default="cpu", help="device of the policy, the world model and the heads")
    tr.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    add_progress(tr, default=False, what="SB3's progress bar")
    add_report_to(tr)
    tr.set_defaults(func=_main_train)

    ev = commands.add_parser("eval", help="score a policy (or 'random') in the real game: Crafter score, return")
    ev.add_argument("policy", help="policy .zip from `rlir agents train`, or 'random'")
    ev.add_argument("--episodes", type=int, default=10)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--max-steps", type=int, default=None, help="episode length (default: Crafter's 10000)")
    ev.add_argument("--deterministic", action="store_true", help="take the most probable action")
    ev.add_argument("--parallel", type=int, default=8, help="episodes played in lockstep")
    ev.add_argument("--size", type=int, default=None, help="frame size (default: the policy's)")
    ev.add_argument("--frame-stack", type=int, default=None, help="stacked frames (default: the policy's)")
    ev.add_argument("--out", default=None, metavar="DIR", help="write the result as DIR/eval.json (or a .json path)")
    ev.add_argument("--threads", type=int, default=1)
    ev.set_defaults(func=_main_eval)


def _rate(steps_per_s: float | None) -> str:
    return "speed not measured" if steps_per_s is None else f"{steps_per_s:.1f} steps/s"


def _threads(n: int | None) -> None:
    import torch

    if n is not None:
        torch.set_num_threads(n)


def _main_train(args: argparse.Namespace) -> int:
    _threads(args.threads)
    from rich.console import Console

    from rlir.agents.ppo import train_agent

    env_kwargs: dict = {}
    if args.world == DREAM_WORLD:
        for key, value in (("checkpoint", args.checkpoint), ("heads", args.heads), ("scenes", args.scenes),
                           ("max_episode_steps", args.max_episode_steps)):  # fmt: skip
            if value is not None:
                env_kwargs[key] = value
        env_kwargs["device"] = args.device
    ppo = {key: value for key, value in (("n_steps", args.n_steps), ("batch_size", args.batch_size),
                                         ("n_epochs", args.n_epochs), ("learning_rate", args.lr),
                                         ("ent_coef", args.ent_coef)) if value is not None}  # fmt: skip
    out = args.out or str(Path("runs") / "agents" / f"{args.world}-s{args.seed}")
    summary = train_agent(
        args.world, steps=args.steps, out=out, num_envs=args.num_envs, seed=args.seed, eval_every=args.eval_every,
        eval_episodes=args.eval_episodes, eval_max_steps=args.eval_max_steps, frame_stack=args.frame_stack,
        extractor=args.extractor, ppo=ppo, env_kwargs=env_kwargs, device=args.device, progress=args.progress,
        report_to=args.report_to,
    )  # fmt: skip
    final = summary["final"]
    Console().print(
        f"{summary['env_steps_done']} env steps in {args.world} ({_rate(summary['train_env_steps_per_s'])}); "
        f"real game over {final['episodes']} episodes: Crafter score {final['crafter_score']:.2f} %, return "
        f"{final['return_mean']:.2f}; wrote {out}/policy.zip and {out}/summary.json",
        highlight=False,
    )
    return 0


def _main_eval(args: argparse.Namespace) -> int:
    _threads(args.threads)
    from rich.console import Console

    from rlir.agents.ppo import evaluate_policy
    from worldmodels.runtime.files import write_json

    result = evaluate_policy(
        args.policy, episodes=args.episodes, seed=args.seed, max_steps=args.max_steps,
        deterministic=args.deterministic, parallel=args.parallel, frame_stack=args.frame_stack,
        env_kwargs=None if args.size is None else {"size": args.size},
    )  # fmt: skip
    if args.out:
        write_json(resolve_out(args.out, "eval", ".json"), result)
    Console().print(
        f"{args.policy}: {result['episodes']} episodes, Crafter score {result['crafter_score']:.2f} %, return "
        f"{result['return_mean']:.2f} +- {result['return_std']:.2f}, length {result['length_mean']:.0f}",
        highlight=False,
    )
    return 0
