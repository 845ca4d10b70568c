"""Sim-to-real report for Crafter: does an agent trained only inside the learned simulator play the real game?

For every seed, in one process on one machine:

* **(a) random**: a uniform random policy in the real game ``RLIR-CrafterReal-v0``;
* **(b) dream**: PPO trained for ``--steps`` env steps only in ``RLIR-CrafterDream-v0`` (world model + learned reward
  and death), then scored in the real game;
* **(c) real**: the same PPO recipe (:func:`rlir.agents.ppo.train_agent`) trained for the same env steps in
  the real game, scored the same way.

Each is scored on ``--eval-episodes`` real-game episodes (Crafter score = official geometric mean of achievement
success rates, return); the table gives the mean over seeds with a 95 % confidence interval (Student t over the
per-seed values). A speed section steps the world-model env and the real game with random actions at the same batch
(``--num-envs``) and reports env steps per second and their ratio.

Full size (what the issue asks for; hours of CPU, schedule it)::

    .venv/bin/python -m bench.sim_to_real --steps 1000000 --seeds 0 1 2 --eval-episodes 20 --num-envs 16 \\
        --out runs/sim_to_real

Plumbing check at a tiny size (an untrained model of the bundled architecture, short real-game episodes)::

    .venv/bin/python -m bench.sim_to_real --steps 64 --seeds 0 1 2 --eval-episodes 2 --eval-max-steps 40 \\
        --num-envs 2 --untrained-model --speed-steps 8 --out /tmp/sim_to_real

Writes ``sim_to_real.json`` (everything, per seed) and ``sim_to_real.md`` (the tables, for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlir.agents.ppo import DREAM_WORLD, REAL_WORLD, evaluate_policy, train_agent

_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def mean_ci95(values: list[float]) -> dict[str, Any]:
    """Mean and half-width of the 95 % Student-t confidence interval (None for fewer than 2 values)."""
    array = np.asarray(values, dtype=np.float64)
    n = len(array)
    if n < 2:
        return {"mean": float(array.mean()) if n else None, "ci95": None, "n": n}
    try:
        from scipy.stats import t as student_t

        critical = float(student_t.ppf(0.975, n - 1))
    except ImportError:
        critical = _T975.get(n - 1, 1.96)
    return {"mean": float(array.mean()), "ci95": critical * float(array.std(ddof=1)) / math.sqrt(n), "n": n}


def untrained_model_file(path: Path, seed: int = 0) -> Path:
    """A randomly initialised world model of the bundled architecture (72 x 72, Crafter actions): plumbing only."""
    from worldmodels.mineworld import MineWorld
    from worldmodels.mineworld.checkpoint import save_safetensors
    from worldmodels.training.tokenizer import CRAFTER_VQ_CONFIG
    from worldmodels.training.worldmodel import CRAFTER_AR_CONFIG

    torch.manual_seed(seed)
    save_safetensors(MineWorld.from_config(CRAFTER_AR_CONFIG, CRAFTER_VQ_CONFIG).eval(), path)
    return path


def env_speed(world: str, num_envs: int, steps: int, env_kwargs: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Env steps per second of ``world`` under uniform random actions (SB3 adapter, ``num_envs`` at once)."""
    from rlir.agents.ppo import make_training_env

    env = make_training_env(world, num_envs, seed=seed, env_kwargs=env_kwargs)
    env.reset()
    rng = np.random.default_rng(seed)
    began = time.perf_counter()
    for _ in range(steps):
        env.step(rng.integers(0, 17, num_envs))
    seconds = time.perf_counter() - began
    env.close()
    return {"world": world, "num_envs": num_envs, "vector_steps": steps, "env_steps": steps * num_envs,
            "seconds": seconds, "env_steps_per_s": steps * num_envs / seconds}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, required=True, help="training env steps of (b) and (c)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-episodes", type=int, default=20)
    parser.add_argument("--eval-max-steps", type=int, default=None, help="cut evaluation episodes (default 10000)")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--checkpoint", default=None, help="world model (default: the bundled crafter-mineworld)")
    parser.add_argument("--untrained-model", action="store_true",
                        help="use a randomly initialised model of the bundled architecture (plumbing check)")
    parser.add_argument("--heads", default=None, help="reward/termination heads (default: the bundled heads)")
    parser.add_argument("--scenes", default=None, help="dream start scenes: a recording directory")
    parser.add_argument("--speed-steps", type=int, default=50, help="vector steps of the speed measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/sim_to_real")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = args.checkpoint
    if args.untrained_model:
        checkpoint = str(untrained_model_file(out / "untrained-crafter-mineworld.safetensors"))
    dream_kwargs: dict[str, Any] = {"device": args.device}
    for key, value in (("checkpoint", checkpoint), ("heads", args.heads), ("scenes", args.scenes)):
        if value is not None:
            dream_kwargs[key] = value
    evaluation = dict(episodes=args.eval_episodes, max_steps=args.eval_max_steps)
    common = dict(steps=args.steps, num_envs=args.num_envs, eval_episodes=args.eval_episodes,
                  eval_max_steps=args.eval_max_steps, device=args.device)  # fmt: skip

    runs: dict[str, list[dict[str, Any]]] = {"random": [], "dream": [], "real": []}
    for seed in args.seeds:
        result = evaluate_policy("random", seed=seed, **evaluation)
        runs["random"].append({"seed": seed, **_scores(result)})
        dream = train_agent(DREAM_WORLD, seed=seed, out=out / f"dream-s{seed}", env_kwargs=dream_kwargs, **common)
        runs["dream"].append({"seed": seed, **_scores(dream["final"]), "train_env_steps_per_s":
                              dream["train_env_steps_per_s"], "wall_time_s": dream["wall_time_s"]})  # fmt: skip
        real = train_agent(REAL_WORLD, seed=seed, out=out / f"real-s{seed}", **common)
        runs["real"].append({"seed": seed, **_scores(real["final"]), "train_env_steps_per_s":
                             real["train_env_steps_per_s"], "wall_time_s": real["wall_time_s"]})  # fmt: skip

    speed = {
        "world_model": env_speed(DREAM_WORLD, args.num_envs, args.speed_steps, dream_kwargs),
        "real_game": env_speed(REAL_WORLD, args.num_envs, args.speed_steps, {}),
    }
    speed["ratio_world_model_to_real"] = (speed["world_model"]["env_steps_per_s"]
                                          / speed["real_game"]["env_steps_per_s"])  # fmt: skip
    table = {name: {"crafter_score": mean_ci95([r["crafter_score"] for r in rows]),
                    "return": mean_ci95([r["return_mean"] for r in rows])} for name, rows in runs.items()}  # fmt: skip
    from worldmodels.training.common import machine_info

    report = {"kind": "rlir.sim-to-real", "settings": vars(args), "checkpoint": checkpoint, "runs": runs,
              "table": table, "speed": speed, "machine": machine_info()}  # fmt: skip
    (out / "sim_to_real.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "sim_to_real.md").write_text(_markdown(report), encoding="utf-8")
    print(_markdown(report))
    return report


def _scores(result: dict[str, Any]) -> dict[str, Any]:
    return {"crafter_score": result["crafter_score"], "return_mean": result["return_mean"],
            "length_mean": result["length_mean"], "episodes": result["episodes"],
            "success_rates": result["success_rates"]}  # fmt: skip


def _fmt(stat: dict[str, Any], digits: int = 2) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.{digits}f}" + ("" if stat["ci95"] is None else f" ± {stat['ci95']:.{digits}f}")


def _markdown(report: dict[str, Any]) -> str:
    s, m = report["settings"], report["machine"]
    cut = "" if s["eval_max_steps"] is None else f" of at most {s['eval_max_steps']} steps"
    lines = [
        f"### Sim-to-real, Crafter ({s['steps']} training env steps, seeds {s['seeds']}, {s['eval_episodes']} "
        f"real-game episodes each{cut})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), fp32, "
        f"{s['num_envs']} envs. World model: {report['checkpoint'] or 'crafter-mineworld'}. Mean over seeds ± 95 % "
        "CI.",
        "",
        "| agent | Crafter score (%) | return |",
        "|---|---|---|",
    ]
    names = {"random": "(a) random policy", "dream": "(b) PPO trained in RLIR-CrafterDream-v0",
             "real": "(c) PPO trained in RLIR-CrafterReal-v0"}  # fmt: skip
    for key, label in names.items():
        row = report["table"][key]
        lines.append(f"| {label} | {_fmt(row['crafter_score'])} | {_fmt(row['return'])} |")
    sp = report["speed"]
    lines += [
        "",
        "| env (random actions) | batch | env steps/s | ratio to real |",
        "|---|---|---|---|",
        f"| world model ({DREAM_WORLD}) | {sp['world_model']['num_envs']} | "
        f"{sp['world_model']['env_steps_per_s']:.1f} | {sp['ratio_world_model_to_real']:.3f} |",
        f"| real game ({REAL_WORLD}) | {sp['real_game']['num_envs']} | {sp['real_game']['env_steps_per_s']:.1f} | 1 |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
