"""What the hardware can do, and the small thread-safe caches the inference fast path keeps.

* :func:`cpu_supports_bf16`: whether the CPU computes bf16 natively. CPUs without it (no
  ``avx512_bf16`` / AMX, e.g. AMD Zen 3 or any AVX2-only CPU) run bf16 matrix products through
  slow emulation (measured here: 0.17 GFLOP/s for a 2048x2048 bf16 matmul against 70 GFLOP/s in
  fp32). It is reported, never used to pick a precision silently (see :mod:`sbanet.inference.precision`).
* :func:`expression_chunk`: how many expressions of one image run in one forward pass.
* :func:`weights_signature`: detects in-place weight updates (an optimizer step, a
  ``load_state_dict``) so caches derived from weights are rebuilt instead of going stale.
* :class:`TextFeatureCache`: a bounded LRU of text-encoder outputs per expression string.
"""

from __future__ import annotations

import functools
import os
import platform
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Generic, TypeVar

import torch
from torch import nn

# /proc/cpuinfo flags that mean the CPU computes bf16 dot products natively.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where that file does not exist)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return frozenset()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 arithmetic (AVX512-BF16 or AMX), so bf16 autocast pays.

    Linux reads ``/proc/cpuinfo``; elsewhere only PyTorch's AMX capability counts.
    """
    if cpu_flags() & BF16_CPU_FLAGS:
        return True
    return "AMX" in torch.backends.cpu.get_cpu_capability().upper()


# Presets whose expressions run one at a time on CPUs (the rest run as one batch there).
SEQUENTIAL_ON_CPU = frozenset({"sbanet_swin_b"})


def expression_chunk(device: str | torch.device, preset: str, expressions: int) -> int:
    """How many of ``expressions`` (K) expressions on one image run in one forward pass on
    ``device`` after the shared text-independent prefix, so that K cost at most K single runs.

    Measured (``python -m benchmarks.bench --parts multi``, docs/benchmarks.md): on a CPU,
    ``sbanet_swin_b`` is compute-bound and its cost grows faster than the batch (batch 8 took
    11.4x batch 1), so its expressions run one at a time; the small presets are bound by
    per-operator overhead and batch well (the shipped ``sbanet_lite``: 8 expressions in one
    batch 1.2x one expression, one at a time 3.8x), so they run as one batch. GPUs run one batch.
    """
    if expressions < 1:
        raise ValueError(f"need at least one expression, got {expressions}")
    if torch.device(device).type == "cpu" and preset in SEQUENTIAL_ON_CPU:
        return 1
    return expressions


def machine_description() -> dict[str, str | int]:
    """CPU model, core count, SIMD capability and library versions, for benchmark reports."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": str(cpu_supports_bf16()),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def weights_signature(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """Identity and in-place version of every parameter and buffer of ``module``.

    Optimizer steps, ``load_state_dict`` and ``.to()`` all change it, so a cache keyed on it
    never serves results computed from old weights.
    """
    tensors = [*module.parameters(), *module.buffers()]
    return tuple((id(t), t._version) for t in tensors)


T = TypeVar("T")


class DerivedCache(Generic[T]):
    """A value derived from a module's weights (folded convolutions, an int8 copy), computed on
    first use and again whenever :func:`weights_signature` says the weights changed. Thread-safe."""

    def __init__(self, source: nn.Module, derive: Callable[[nn.Module], T]) -> None:
        self.source = source
        self.derive = derive
        self._signature: tuple | None = None
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        signature = weights_signature(self.source)
        with self._lock:
            if self._value is None or self._signature != signature:
                self._value = self.derive(self.source)
                self._signature = signature
            return self._value


class TextFeatureCache:
    """A thread-safe, bounded LRU of text features ``[L_i, D]`` keyed by expression string.

    Entries are keyed together with a signature of the text encoder's weights: once the weights
    change, every old entry is dropped. ``capacity = 0`` disables caching.
    """

    def __init__(self, capacity: int = 256) -> None:
        if capacity < 0:
            raise ValueError(f"cache capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._signature: Hashable | None = None
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, signature: Hashable) -> torch.Tensor | None:
        """The cached features of ``key`` computed under ``signature``, or None."""
        with self._lock:
            if signature != self._signature:
                self._entries.clear()
                self._signature = signature
            value = self._entries.get(key)
            if value is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, signature: Hashable, value: torch.Tensor) -> None:
        """Store ``value`` (evicting the least recently used entry when full)."""
        if self.capacity == 0:
            return
        with self._lock:
            if signature != self._signature:
                self._entries.clear()
                self._signature = signature
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0
