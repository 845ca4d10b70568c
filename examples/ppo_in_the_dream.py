"""Train a PPO agent with stable-baselines3 inside the learned simulator (RLIR-CrafterDream-v0), then score it in
the real game.

    python examples/ppo_in_the_dream.py                 # 50k env steps (about an hour on a laptop CPU)
    python examples/ppo_in_the_dream.py --short         # a smoke run of a few steps (what the tests run)

The dream env is the bundled Crafter world model with learned reward and termination heads; ``make_sb3_env`` gives
SB3 one batched env (one model for all slots) wrapped in ``VecMonitor``, so SB3 logs ep_rew_mean / ep_len_mean.
Needs the ``agents`` extra (stable-baselines3).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stable_baselines3 import PPO

import rlir_env  # noqa: F401  (registers the RLIR-* ids)
from rlir.agents.ppo import evaluate_policy
from rlir_env.sb3 import make_sb3_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="a few steps only (smoke test)")
    parser.add_argument("--steps", type=int, default=50_000, help="env steps of training")
    parser.add_argument("--out", default="runs/examples/ppo-dream", help="output directory")
    args = parser.parse_args()
    steps, n_envs, n_steps = (16, 2, 8) if args.short else (args.steps, 8, 256)

    env = make_sb3_env("RLIR-CrafterDream-v0", n_envs=n_envs, seed=0, max_episode_steps=8 if args.short else 1000)
    agent = PPO("CnnPolicy", env, n_steps=n_steps, batch_size=n_steps, n_epochs=1 if args.short else 4, seed=0,
                device="cpu", verbose=0 if args.short else 1)  # fmt: skip
    agent.learn(total_timesteps=steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    agent.save(out / "policy")
    env.close()

    result = evaluate_policy(out / "policy.zip", episodes=2 if args.short else 10, seed=0,
                             max_steps=10 if args.short else None)  # fmt: skip
    print(f"trained {agent.num_timesteps} env steps in the dream; real game: Crafter score "
          f"{result['crafter_score']:.2f} %, return {result['return_mean']:.2f} ({result['episodes']} episodes); "
          f"policy in {out}/policy.zip")


if __name__ == "__main__":
    main()
