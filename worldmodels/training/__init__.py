"""Training scripts for the world models rlir ships (CleanRL-style: each reads top to bottom).

* :mod:`worldmodels.training.tokenizer`: the VQ image tokenizer (``rlir train tokenizer``).
* :mod:`worldmodels.training.worldmodel`: the MineWorld-architecture transformer (``rlir train worldmodel``).
* :mod:`worldmodels.training.common`: seeding, optimiser and schedule, logs, resumable checkpoints, progress.
* :mod:`worldmodels.training.nfd`: the NFD world model (``rlir train nfd``).

Modules are imported on use (``from worldmodels.training.tokenizer import train_tokenizer``): they pull in torch
and diffusers.
"""

from __future__ import annotations
