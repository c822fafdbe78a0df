"""FREEDOM: a frozen item-item content graph and a degree-pruned user-item graph.

Zhou & Shen, "A Tale of Two Graphs: Freezing and Denoising Graph Structures for Multimodal
Recommendation", ACM MM 2023. Matched against the authors' code (MMRec ``src/models/freedom.py``):

- Item graph, built once and frozen: per modality, the top-``knn_k`` cosine neighbours of each item
  from the raw features (the item itself included), 0/1 entries normalised as
  ``D^-1/2 A D^-1/2`` (row degrees, i.e. 1/k per entry); the graphs are mixed with weights that sum
  to 1 (paper: visual 0.1, text 0.9). Items without content get no edges (MMRec mean-fills them).
- Degree-sensitive edge pruning: at each epoch, ``(1 - dropout)`` of the training edges are kept,
  drawn without replacement with probability proportional to ``1 / sqrt(deg_u deg_i)`` (so edges of
  high-degree nodes are pruned first), and the kept graph is renormalised. Scoring uses the full graph.
- Embeddings: LightGCN over the (pruned) user-item graph, ``n_ui_layers`` layers, mean of layers;
  items add ``h = A_item^n_mm_layers e_item`` from the frozen item graph.
- Loss: BPR on the final embeddings, plus ``reg_weight`` times, per modality, BPR between the user
  embedding and the linearly projected raw features of the positive and negative items. MMRec has no
  L2 term for FREEDOM, and its ``lambda_coeff`` is read but unused.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.data.interactions import Interactions
from modalrec.errors import ConfigError
from modalrec.features.features import FeatureSet
from modalrec.models.bpr_objective import bpr_loss
from modalrec.models.graph import knn_graph, normalized_adjacency, symmetric_normalize
from modalrec.models.modality import (
    SparseOperator,
    add_feature_buffers,
    copy_features,
    feature_slots,
    light_propagate,
    modality_weights,
    project_rows,
)
from modalrec.models.registry import register
from modalrec.training.gradient import GradientRecommender, TrainParams


@dataclasses.dataclass
class FREEDOMParams(TrainParams):
    """Paper / MMRec defaults (configs/model/FREEDOM.yaml): embedding 64, knn_k 10, n_mm_layers 1,
    n_ui_layers 2, image weight 0.1, dropout tuned over {0.8, 0.9}, reg_weight over
    {0, 1e-5, 1e-4, 1e-3}. The MovieLens-100K reference run: dropout 0.8, reg_weight 0."""

    embedding_size: int = 64
    feat_embed_dim: int = 64
    """Output size of each modality's projection (used only by the alignment loss)."""
    knn_k: int = 10
    n_mm_layers: int = 1
    """Propagation steps over the frozen item-item graph."""
    n_ui_layers: int = 2
    """LightGCN layers over the user-item graph."""
    dropout: float = 0.8
    """Share of user-item edges pruned at each epoch (degree-sensitive)."""
    reg_weight: float = 0.0
    """Weight of the modality alignment BPR terms."""
    modality_weights: tuple[float, ...] = ()
    """Item-graph mixing weights in feature order (normalised to sum 1). Empty: image-like names
    share 0.1 and text-like 0.9 when the names are image/text-like, else uniform."""
    tune_features: bool = False
    """Fine-tune the raw feature matrices as MMRec does (``from_pretrained(freeze=False)``). They
    only receive gradient through the alignment loss, so with the default reg_weight 0 (the
    reference run's) both settings train identically. Off by default: on the synthetic world
    (content_weight 0.8, 2,000 users x 1,000 items) with reg_weight 1e-4 and 1e-3 it moved
    validation recall@20 by 0.0001 and 0.001 at 1.4x the CPU, and a trainable copy doubles the
    features the model holds and saves."""


def prune_edges(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, keep: int,
                rng: np.random.Generator) -> np.ndarray:
    """Indices of ``keep`` edges drawn without replacement with probability proportional to
    ``1 / sqrt(deg_u deg_i)``, as successive multinomial draws (exponential-race form: the ``keep``
    largest ``log(U) / w``), sorted."""
    deg_u = np.bincount(users, minlength=n_users).astype(np.float64)
    deg_i = np.bincount(items, minlength=n_items).astype(np.float64)
    weight = 1.0 / np.sqrt(deg_u[users] * deg_i[items])
    if keep >= len(users):
        return np.arange(len(users))
    key = np.log(rng.random(len(users))) / weight
    return np.sort(np.argpartition(-key, keep - 1)[:keep])


def bipartite_normalized(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """``D^-1/2 A D^-1/2`` of the user-item graph given by an edge list."""
    r = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    return symmetric_normalize(sp.bmat([[None, r], [r.T, None]], format="csr"))


@register("freedom")
class FREEDOM(GradientRecommender):
    """Zhou & Shen, ACM MM 2023 (see the module docstring for what is matched to the authors' code).

    Xavier-uniform user and item embeddings (as MMRec), projections as ``torch.nn.Linear`` defaults.
    """

    Params = FREEDOMParams
    uses_features = True
    reference = "Zhou & Shen, ACM MM 2023"

    def build_module(self) -> torch.nn.Module:
        p = self.params
        if p.reg_weight and p.feat_embed_dim != p.embedding_size:
            raise ConfigError("freedom: the alignment loss (reg_weight > 0) needs feat_embed_dim == embedding_size",
                              where="feat_embed_dim", hint=f"set feat_embed_dim={p.embedding_size}")
        m = torch.nn.Module()
        m.user = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(self.n_users, p.embedding_size)))
        m.item = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(self.n_items, p.embedding_size)))
        m.projections = torch.nn.ModuleList(
            torch.nn.Linear(dim, p.feat_embed_dim) for dim in self.feature_dims.values())
        add_feature_buffers(m, self.feature_dims, self.n_items, trainable=p.tune_features)
        return m

    def set_features(self, features: FeatureSet) -> None:
        copy_features(self.module, features)

    def item_graph(self) -> sp.csr_matrix:
        """The frozen mixed item-item graph, from the stored raw features."""
        p = self.params
        weights = modality_weights(list(self.feature_dims), p.modality_weights)
        total = sp.csr_matrix((self.n_items, self.n_items), dtype=np.float32)
        for w, (feat, mask) in zip(weights, feature_slots(self.module, len(self.feature_dims), raw=True)):
            graph = knn_graph(feat.detach().cpu().numpy(), p.knn_k, mask.cpu().numpy())
            total = total + w * symmetric_normalize(graph)
        return total.tocsr()

    def prepare(self, train: Interactions) -> None:
        if not 0.0 <= self.params.dropout < 1.0:
            raise ConfigError(f"freedom.dropout must be in [0, 1), got {self.params.dropout}", where="dropout")
        self.mm_adj = SparseOperator(self.item_graph(), self.device)
        self.norm_adj = SparseOperator(normalized_adjacency(train), self.device, symmetric=True)
        self.edge_users, self.edge_items = train.users.astype(np.int64), train.items.astype(np.int64)
        self.train_adj = self.norm_adj

    def on_epoch_start(self, epoch: int) -> None:
        p = self.params
        if p.dropout <= 0:
            self.train_adj = self.norm_adj
            return
        keep = int(len(self.edge_users) * (1.0 - p.dropout))
        rng = np.random.default_rng([self.seed, epoch])
        kept = prune_edges(self.edge_users, self.edge_items, self.n_users, self.n_items, keep, rng)
        adj = bipartite_normalized(self.edge_users[kept], self.edge_items[kept], self.n_users, self.n_items)
        self.train_adj = SparseOperator(adj, self.device, symmetric=True)

    def forward(self, adjacency: SparseOperator) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.module
        h = m.item
        for _ in range(self.params.n_mm_layers):
            h = self.mm_adj @ h
        ego = torch.cat([m.user, m.item], dim=0)
        out = light_propagate(adjacency, ego, self.params.n_ui_layers)
        users, items = out.split([self.n_users, self.n_items])
        return users, items + h

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        user_emb, item_emb = self.forward(self.train_adj)
        u = user_emb[users]
        loss = bpr_loss((u * item_emb[pos]).sum(1), (u * item_emb[neg]).sum(1))
        if self.params.reg_weight:
            # each distinct item projected once (a batch's 2 x 2048 rows hold at most n_items)
            align = torch.zeros((), device=u.device)
            items = torch.cat([pos, neg])
            for proj, slot in zip(self.module.projections, feature_slots(self.module, len(self.feature_dims))):
                rows, inverse, _ = project_rows([slot], [proj.weight.T], items, proj.bias)
                fp, fn = rows.index_select(0, inverse).split(len(pos))
                align = align + bpr_loss((u * fp).sum(1), (u * fn).sum(1))
            loss = loss + self.params.reg_weight * align
        return loss

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(self.norm_adj)
