"""What this machine's CPU is and which number formats it computes natively, and the one rule
for the precision the network trains and predicts in.

bf16 (bfloat16) autocast runs convolutions and matrix products in 16-bit brain floating point
and keeps the weights, the optimiser and the loss in float32 (PyTorch's automatic mixed precision,
``torch.autocast``). On a CUDA GPU it is always used. On a CPU it is fast only where the CPU has
bf16 instructions that oneDNN uses: Intel AMX (``amx_bf16``, Sapphire Rapids and later) or
AVX512-BF16 (``avx512_bf16``, Cooper Lake, AMD Zen 4 and later), or the Arm BF16 extension
(``bf16``). Elsewhere oneDNN emulates bf16 and it is slower than float32, so the CPU trains in
float32. The flag names are the Linux kernel's (``/proc/cpuinfo``, ``arch/x86/include/asm/cpufeatures.h``);
where that file cannot be read (macOS, Windows), no bf16 is assumed.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

Precision = Literal["auto", "fp32", "bf16"]
#: Accepted values of ``--precision``.
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: /proc/cpuinfo flags of native bf16 arithmetic, strongest first.
BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")

_CPUINFO = Path("/proc/cpuinfo")


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = _CPUINFO.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Platinum 8480+"), or the machine type."""
    info = _cpuinfo()
    return info.get("model name") or info.get("Model") or platform.processor() or platform.machine()


def cpu_bf16() -> str | None:
    """The strongest native bf16 instruction set of this CPU (one of :data:`BF16_FLAGS`), or None."""
    flags = set((_cpuinfo().get("flags") or _cpuinfo().get("Features") or "").split())
    return next((f for f in BF16_FLAGS if f in flags), None)


def autocast_dtype(precision: Precision, device_type: str) -> "torch.dtype | None":  # noqa: F821
    """The autocast dtype for ``precision`` on ``device_type`` ("cpu" or "cuda"), in training and
    at inference: None (float32) or ``torch.bfloat16``. "auto" is bf16 on CUDA and on CPUs with
    native bf16 (:func:`cpu_bf16`), float32 elsewhere; "fp32" and "bf16" force the choice.

    At inference the diameter estimate runs in float32 whatever this says
    (:class:`~nucleiseg.inference.predictor.Predictor`): so placed, bf16 labels agreed with float32
    labels to DSB 0.998 on the 108 validation images (0.980 with the estimate in bf16 too, below
    issue 24's 0.99 for a default), with the same accuracy (``python
    benchmarks/bench_precision.py``; benchmarks/README.md, "bf16 inference on the CPU").

    Raises
    ------
    ValueError
        for a precision not in :data:`PRECISIONS`.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16" or device_type == "cuda" or (device_type == "cpu" and cpu_bf16() is not None):
        return torch.bfloat16
    return None


def describe(device: "torch.device", dtype: "torch.dtype | None") -> str:  # noqa: F821
    """One line for logs: the device, the CPU's name, its threads and the precision, e.g.
    "cpu (AMD EPYC, 2 threads, bf16 autocast: avx512_bf16)"."""
    import torch

    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)}; CPU {cpu_name()})"
    else:
        where = f"cpu ({cpu_name()}, {torch.get_num_threads()} threads)"
    native = cpu_bf16()
    if dtype is None:
        precision = "float32" + ("" if device.type == "cuda" or native else "; no native bf16 on this CPU")
    else:
        precision = "bf16 autocast" + (f": {native}" if device.type == "cpu" and native else "")
    return f"{where}, {precision}"
