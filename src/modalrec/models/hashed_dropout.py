"""Dropout whose mask comes from a counter-based hash instead of torch's CPU generator.

``F.dropout`` on CPU draws each element from torch's Mersenne Twister, about 13 ns an element on
one thread: BM3 drops out four (rows x 64) target views a step, 83 ms of a MovieLens-100K epoch
by a profile (783 x 64: 0.82 ms a call, here 0.10 ms).

Here one 63-bit seed is drawn from torch's generator per call (so ``torch.manual_seed`` still fixes
the masks), and element ``i`` is kept when the top 24 bits of output ``i`` of a splitmix64 stream
started at that seed are at least ``round(p * 2^24)``: the same Bernoulli(1 - p) mask in
distribution (``p`` resolved to 2^-24), written with the scaling in one compiled pass. Kept values
are ``x / (1 - p)`` exactly as ``F.dropout`` scales them. Other devices and dtypes use
``F.dropout``.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_BITS = 24


@numba.njit(cache=True, nogil=True)
def _drop(x: np.ndarray, out: np.ndarray, seed: np.uint64, threshold: np.uint64, scale: np.float32) -> None:
    """``out = x * scale`` where the element's hash reaches ``threshold``, else 0 (flat arrays)."""
    for i in range(x.size):
        z = seed + np.uint64(i + 1) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
        out[i] = x[i] * scale if (z >> np.uint64(64 - _BITS)) >= threshold else np.float32(0.0)


def hashed_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with a hashed mask for CPU float32 tensors outside autograd
    (the target views it is used for carry no gradient)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if (not training or p == 0.0 or p == 1.0 or x.device.type != "cpu" or x.dtype != torch.float32
            or (x.requires_grad and torch.is_grad_enabled())):
        return F.dropout(x, p, training)
    seed = np.uint64(int(torch.randint(0, 2**63 - 1, (1,)).item()))
    threshold = np.uint64(round(p * (1 << _BITS)))
    scale = np.float32(1.0) / np.float32(1.0 - p)
    source = x.detach().contiguous()
    out = torch.empty_like(source)
    _drop(source.numpy().reshape(-1), out.numpy().reshape(-1), seed, threshold, scale)
    return out
