"""Runtime helpers every layer shares, written once: data-parallel layout, atomic file writes, progress bars.

* :class:`Distributed` (:mod:`worldmodels.runtime.distributed`): the ``torchrun`` layout (gloo on CPU, nccl on GPU)
  used by the evaluator, the trainers and the post-trainer; every method is a no-op for one process.
* :func:`atomic_output`, :func:`write_json` (:mod:`worldmodels.runtime.files`): a file is either its old or its new
  content, never half written (a killed run leaves nothing to mistake for a result).
* :class:`Progress` (:mod:`worldmodels.runtime.progress`): the one rich progress bar of every long command.
* :func:`~worldmodels.runtime.charts.line_chart` (:mod:`worldmodels.runtime.charts`): the learning curves every
  trainer draws from its JSON Lines log (Pillow only).

Names load on first use (PEP 562), so that light modules (JSON Lines IO, the leaderboard store) can write files
atomically without importing torch.
"""

from __future__ import annotations

from worldmodels.runtime.exports import lazy_exports

_EXPORTS = {
    "Distributed": "worldmodels.runtime.distributed",
    "Progress": "worldmodels.runtime.progress",
    "atomic_output": "worldmodels.runtime.files",
    "to_plain": "worldmodels.runtime.files",
    "write_json": "worldmodels.runtime.files",
    "lazy_exports": "worldmodels.runtime.exports",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
