"""rlir, the application: the ``rlir`` command line (``python -m rlir``), the demo, and agent-training recipes.

The library lives in the packages below it, each importing only from the ones under it::

    rlir            the application (this package): CLI, demo, SB3 agent recipes, sim-to-real
    leaderboard     posttrain        the verifying leaderboard | RLIR post-training (GRPO, Flow-GRPO)
    evaluation      IDMs, metrics, scoring, suites, evaluator, result bundles
    rlir_env        Gymnasium envs, vector env, wrappers, SB3 adapter, the real games
    worldmodels     actions, model architectures, samplers, data, training, registry

``docs/contributing.md`` says where each part lives.
"""

from __future__ import annotations

from worldmodels import __version__

__all__ = ["__version__"]
