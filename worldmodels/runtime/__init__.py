"""Runtime helpers every layer shares, written once: data-parallel layout, atomic file writes, progress bars.

* :class:`Distributed` (:mod:`worldmodels.runtime.distributed`): the ``torchrun`` layout (gloo on CPU, nccl on GPU)
  used by the evaluator, the trainers and the post-trainer; every method is a no-op for one process.
* :func:`atomic_output`, :func:`write_json` (:mod:`worldmodels.runtime.files`): a file is either its old or its new
  content, never half written (a killed run leaves nothing to mistake for a result).
* :class:`Progress` (:mod:`worldmodels.runtime.progress`): the one rich progress bar of every long command.
"""

from __future__ import annotations

from worldmodels.runtime.distributed import Distributed
from worldmodels.runtime.files import atomic_output, to_plain, write_json
from worldmodels.runtime.progress import Progress

__all__ = ["Distributed", "Progress", "atomic_output", "to_plain", "write_json"]
