"""Floating-point precision: run JAX in float64 where the caller asks for it."""

from __future__ import annotations

import contextlib

import jax
import numpy as np

__all__ = ["x64_context"]


def x64_context(dtype):
    """A context in which JAX computes in `dtype` (enables x64 for float64 only)."""
    if np.dtype(dtype) == np.float64:
        return jax.enable_x64(True)
    return contextlib.nullcontext()
