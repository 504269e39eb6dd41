"""One optimisation step, shared by the trainer and the benchmarks, and its mixed precision.

A step is: forward under autocast, ``zero_grad``, backward, optimiser step (through the fp16
``GradScaler`` when one is given), then the EMA update of a BYOL target. Keeping it in one place means
the benchmarks time exactly the operations that ``gsg pretrain`` runs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..method.learner import SelfSupervisedLearner

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype of ``train.precision`` (``auto``/fp32/bf16/fp16), None for fp32.

    ``auto``: bf16 on CUDA devices with native bf16 (compute capability 8.0+: A100, H100, ...), else fp16
    with a grad scaler on CUDA (V100, T4: ``is_bf16_supported()``'s default counts their *emulated* bf16,
    which is slow), fp32 elsewhere.
    """
    if precision == "auto":
        if device.type != "cuda":
            return None
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float16
    return PRECISIONS[precision]


def configure_backends(cudnn_benchmark: bool, tf32: bool | None, deterministic: bool) -> None:
    """The process-wide CUDA switches of ``train.cudnn_benchmark`` / ``tf32`` / ``deterministic``.

    Deterministic mode sets ``CUBLAS_WORKSPACE_CONFIG`` (needed by cuBLAS before its first use),
    ``torch.use_deterministic_algorithms(True)`` and ``cudnn.deterministic``, and turns the cuDNN
    autotuner off: what bit-exact resume on a GPU needs, at some speed.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = cudnn_benchmark and not deterministic
    if tf32 is not None:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device_type``, or a no-op context for fp32 (None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def train_step(
    model: Callable[[Sequence[Tensor]], Any],
    views: Sequence[Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    ema: SelfSupervisedLearner | None = None,
    step: int = 0,
    total_steps: int = 1,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> Any:
    """Forward, backward, optimiser step and EMA update; returns what ``model(views)`` returned.

    ``model(views)``: a :class:`~gsg_zoo.method.learner.LearnerOutput` (anything with ``.loss``) or a scalar
    loss tensor; ``views``: tensors ``(N, C, H, W)`` on the model's device (autocast runs on
    ``views[0]``'s device type). ``ema``: the learner whose target network then takes its EMA step,
    ``ema.update_target(step, total_steps)`` (a no-op without an EMA target); None: no EMA.
    ``scaler``: the fp16 gradient scaler (a disabled one does what no scaler does). ``generator``: passed
    on as ``model(views, generator=generator)`` (the learner's pairing RNG) when given.
    """
    with autocast(views[0].device.type, amp_dtype):
        out = model(views) if generator is None else model(views, generator=generator)
    loss = out if isinstance(out, Tensor) else out.loss
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    if ema is not None:
        ema.update_target(step, total_steps)
    return out


def to_device(x: Tensor, device: torch.device, channels_last: bool = False) -> Tensor:
    """``x`` on ``device`` (non-blocking), in channels_last memory format when asked."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
