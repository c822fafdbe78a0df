"""Representation diagnostics for the report: CKA between modalities and how well each
representation's neighbourhoods predict co-consumption."""

from __future__ import annotations

import pandas as pd

from modalrec.data.dataset import Dataset
from modalrec.errors import ModalrecError
from modalrec.features.diagnostics import cka_matrix, mutual_knn_overlap
from modalrec.features.store import FeatureStore


def diagnostics_tables(dataset: Dataset, k: int = 10) -> tuple[pd.DataFrame | None, pd.DataFrame]:
    """(CKA matrix or None when there are no stored features, overlap table per representation)."""
    assert dataset.path is not None
    store = FeatureStore(dataset.path)
    names = store.names()
    if not names:
        return None, pd.DataFrame()
    features = store.load_set(names)
    cka = pd.DataFrame(cka_matrix(features)).loc[names, names]
    train = dataset.require_split().train
    rows = []
    for name, feats in features.items():
        try:
            overlap = mutual_knn_overlap(feats.matrix, train, k=k, mask=feats.mask)
        except ModalrecError:
            continue
        rows.append({"representation": name, "dim": feats.dim, f"overlap@{k}": f"{overlap.overlap:.3f}",
                     "jaccard": f"{overlap.jaccard:.3f}", "chance": f"{overlap.chance:.3f}",
                     "items": overlap.n_items})
    return cka, pd.DataFrame(rows)
