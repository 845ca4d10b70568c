"""Shared test set-up: one torch thread per worker (the suite runs as `pytest -n 2` on a 2-core machine, and tiny
per-token decode steps are 10x slower when two workers each spawn two threads)."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
