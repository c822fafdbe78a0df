"""Feature variants for the content-leverage audit.

If a model really uses content, its accuracy must fall when the content no longer belongs to the
item (``shuffled``: rows permuted across items) and when it carries no information at all
(``random``: Gaussian noise with each column's mean and spread). ``drop:<modality>`` removes one
modality to measure what it adds.
"""

from __future__ import annotations

import numpy as np

from modalrec.errors import ConfigError
from modalrec.features.features import Features, FeatureSet

VARIANTS = ("real", "shuffled", "random")


def apply_variant(features: FeatureSet, variant: str, seed: int) -> FeatureSet:
    """The feature set as the audit variant ``variant`` sees it (deterministic by seed)."""
    if variant == "real":
        return dict(features)
    if variant.startswith("drop:"):
        dropped = variant.removeprefix("drop:")
        if dropped not in features:
            raise ConfigError(f"cannot drop modality {dropped!r}: not in {', '.join(features)}")
        return {name: f for name, f in features.items() if name != dropped}
    if variant not in VARIANTS:
        raise ConfigError(f"unknown audit variant {variant!r}", hint="real, shuffled, random or drop:<modality>")
    rng = np.random.default_rng(seed + 7919)
    out: FeatureSet = {}
    for name, feats in features.items():
        if variant == "shuffled":
            order = rng.permutation(feats.n_items)
            out[name] = Features(feats.matrix[order], feats.mask[order], {**feats.manifest, "variant": "shuffled"})
        else:
            mean = feats.matrix.mean(axis=0)
            std = feats.matrix.std(axis=0)
            noise = rng.standard_normal(feats.matrix.shape).astype(np.float32) * std + mean
            out[name] = Features(noise, feats.mask.copy(), {**feats.manifest, "variant": "random"})
    return out
