"""The plain numpy lower bound for one placement, with the scheduler's semantics for a
workload that requests only CPU and memory and has no rules:

* fit: ``used + request <= allocatable`` for both resources;
* least allocated: ``1 - mean(share)`` and balanced allocation: ``-|cpu share - memory
  share|`` (the same order as ``-std`` for two resources), each min-max normalised over
  the hosts that fit, summed;
* the first best host (argmax);
* copy-on-write reservation: the used columns are copied, never changed in place, so an
  earlier state stays valid (what a snapshot guarantees).

No Python beyond what one decision needs; nothing any real scheduler could skip.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]


def _normalised(raw: Floats) -> Floats:
    low, high = raw.min(), raw.max()
    return (raw - low) / (high - low) if high > low else np.zeros_like(raw)


class NumpyBound:
    """``place(cpu, memory)``: the index of the chosen host (reserved), or -1."""

    def __init__(self, allocatable: Floats, used: Floats) -> None:
        self.alloc_cpu = np.ascontiguousarray(allocatable[:, 0])
        self.alloc_mem = np.ascontiguousarray(allocatable[:, 1])
        self.cpu = np.ascontiguousarray(used[:, 0])
        self.mem = np.ascontiguousarray(used[:, 1])

    def place(self, cpu: float, memory: float) -> int:
        after_cpu = self.cpu + cpu
        after_mem = self.mem + memory
        fits = np.flatnonzero((after_cpu <= self.alloc_cpu) & (after_mem <= self.alloc_mem))
        if not len(fits):
            return -1
        share_cpu = after_cpu[fits] / self.alloc_cpu[fits]
        share_mem = after_mem[fits] / self.alloc_mem[fits]
        score = _normalised(1.0 - (share_cpu + share_mem) / 2) + _normalised(-np.abs(share_cpu - share_mem))
        best = int(fits[int(np.argmax(score))])
        self.cpu = self.cpu.copy()
        self.cpu[best] += cpu
        self.mem = self.mem.copy()
        self.mem[best] += memory
        return best
