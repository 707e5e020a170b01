"""Where float64 is at hand. The project keeps sums, log partition functions and logged values in
float64, but Apple's MPS backend has no float64: on an MPS device such work either narrows to
float32 (:func:`wide_dtype`, for values that live on the device, such as a step's statistics) or
moves to the CPU (:func:`float64_device`, for an evaluation's exact sums, which float32 would
spoil). Every such decision goes through these two functions.

>>> import torch
>>> wide_dtype(torch.device("mps")), wide_dtype(torch.device("cpu"))
(torch.float32, torch.float64)
>>> float64_device(torch.device("mps")), float64_device("cuda:1")
(device(type='cpu'), device(type='cuda', index=1))
"""

from __future__ import annotations

import torch

__all__ = ["wide_dtype", "float64_device"]


def _has_float64(device: torch.device) -> bool:
    return device.type != "mps"


def wide_dtype(device: torch.device | str) -> torch.dtype:
    """float64 where ``device`` has it, else float32: the widest float a value may keep there."""
    return torch.float64 if _has_float64(torch.device(device)) else torch.float32


def float64_device(device: torch.device | str) -> torch.device:
    """``device`` itself where it has float64, else the CPU: where float64 work on tensors from
    ``device`` runs."""
    device = torch.device(device)
    return device if _has_float64(device) else torch.device("cpu")
