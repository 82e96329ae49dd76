"""Where and how the model runs, decided in one place for embedding and training alike: the device,
the precision and its autocast context, the pixel normalisation on that device, the batch size and
the number of decode workers when none is given.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch
from torch import nn

from .errors import UsageError
from .settings import DEVICES, PRECISIONS, resolve_choice

# precision name -> autocast dtype; the other precisions (fp32) run without autocast
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_supports_bf16() -> bool:
    """True where the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def choose_device(device: str | None = None) -> str:
    device = resolve_choice(device, "VITSEARCH_DEVICE", DEVICES)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' asked for, but torch sees no CUDA GPU (valid: auto, cpu, cuda)")
    return device


def choose_precision(device: str, precision: str | None = None) -> str:
    precision = resolve_choice(precision, "VITSEARCH_PRECISION", PRECISIONS)
    if precision != "auto":
        return precision
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast(device: str, precision: str):
    """The context a forward pass runs in at ``precision`` (a name chosen by :func:`choose_precision`):
    ``torch.autocast`` to bf16 or fp16, or nothing for fp32."""
    if precision in AUTOCAST_DTYPES:
        return torch.autocast(device, dtype=AUTOCAST_DTYPES[precision])
    return contextlib.nullcontext()


class Normalise(nn.Module):
    """``(x * scale - mean) / std`` per channel, batched on the model's device (it moves with ``.to``).

    ``scale`` is the image processor's rescale factor for 0-255 pixels (:meth:`of`); without it the
    input is taken as already rescaled (training's [0, 1] views).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], scale: float | None = None):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        scale_tensor = torch.as_tensor(scale, dtype=torch.float32) if scale is not None else None
        self.register_buffer("scale", scale_tensor, persistent=False)

    @classmethod
    def of(cls, preprocessing) -> Normalise:
        """What a checkpoint's :class:`~vitsearch.preprocess.Preprocessing` does to its 0-255 pixels."""
        return cls(preprocessing.mean, preprocessing.std, preprocessing.rescale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            x = x * self.scale
        return (x - self.mean) / self.std


def default_batch_size(device: str) -> int:
    """Images per model call when none is given: 32 on a CPU, where larger batches are no faster;
    256 on a GPU, which smaller batches leave idle (benchmarks/bench_gpu.py; docs/performance.md)."""
    return 256 if device == "cuda" else 32


def default_workers(device: str) -> int:
    """Decode worker processes when none are asked for (embedding and training alike).

    On a CPU one core stays with the model, and at most 4: workers compete with the model for the
    cores, and beyond one per spare core they only slow it. On a GPU the model needs little CPU and
    decoding is the bottleneck, which more workers widen, so every core but one, up to 16
    (benchmarks/bench_index.py and bench_gpu.py; docs/performance.md). torchrun's ranks on one
    machine (``LOCAL_WORLD_SIZE``) share its cores.
    """
    try:
        processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes = 1
    cpus = (os.cpu_count() or 1) // processes
    return max(0, min(16 if device == "cuda" else 4, cpus - 1))
