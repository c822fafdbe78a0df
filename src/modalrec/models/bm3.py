"""BM3: bootstrapped multimodal latent representations, trained without negative sampling.

Zhou et al., "Bootstrap Latent Representations for Multi-modal Recommendation", WWW 2023. Matched
against the authors' code (MMRec ``src/models/bm3.py``):

- Online embeddings: LightGCN over ``D^-1/2 A D^-1/2`` (``n_layers``, mean of layers), items plus
  their id embedding again; per modality, ``Linear(dim, d)`` of the raw features.
- Target views: the online embeddings detached, with dropout (``dropout``) — no momentum encoder.
  The masks come from ``hashed_dropout``: Bernoulli masks as ``F.dropout``'s, from a counter hash
  seeded by torch's generator, eight times faster on CPU.
- A shared predictor ``Linear(d, d)`` maps online views; losses are ``1 - cosine`` between
  predictor(online) and target: user -> item target and item -> user target on the batch's positive
  pairs, and per modality the projected feature against the item's target (inter-modality alignment)
  and against its own dropped-out target (intra-modality reconstruction).
- Total: ``(L_ui + L_iu) + reg_weight * (||U|| + ||I||) / n_items + cl_weight * sum of modality terms``,
  with MMRec's ``EmbLoss`` (unsquared Frobenius norms of all final user and item embeddings, divided
  by the number of items). The sampler's negatives are ignored.
- Scores: predictor(user) . predictor(item).

Finding: every target is detached, so the modality terms move only the projections and the shared
predictor, never the user or item embeddings; content reaches the scores only through that shared
linear map. On a synthetic world where content drives preference, BM3 with the true attributes as
features does no better than with the rows permuted, and stays below LightGCN
(tests/test_content_audit.py pins the mechanism down).

Parity (MovieLens-100K reference inputs and protocol, image + text, seed 999): test recall@20
0.2091 with fixed features against MMRec's 0.2196 (0.95); with ``tune_features=True``, which
reproduces MMRec's fine-tuning of the raw feature matrices (``from_pretrained(freeze=False)``),
0.2426 (1.10). The tuned matrices act as extra free item parameters behind the shared predictor,
which is the gap. Both runs stop early on a noisy validation curve (best epochs 36 and 33;
MMRec's 20).

Speed finding (one thread, MovieLens-100K, ``benchmarks/parity.py --section timing``): 1.05 s an
epoch against MMRec's 2.13 s (2.0x). With the features tuned, every step multiplies the batch's
distinct positive items' feature rows (about 780 x 1,664) three times (the projection, its
gradient into the weights and into the features), propagates the graph forward and backward, and
runs Adam over all 2.8 M feature values: about 0.6 s of the epoch by a profile. The feature rows'
gradient goes to a buffer kept across steps (``gather_rows``) and the target masks come from
``hashed_dropout``; with ``index_select`` and ``F.dropout`` the same epoch took 1.16-1.18 s against
1.08-1.10 s (medians of five alternating runs in one process). The loss has no gathered BPR term
to fuse.
"""

from __future__ import annotations

import dataclasses

import torch

from modalrec.data.interactions import Interactions
from modalrec.features.features import FeatureSet
from modalrec.models.graph import normalized_adjacency
from modalrec.models.hashed_dropout import hashed_dropout
from modalrec.models.modality import (
    SparseOperator,
    add_feature_buffers,
    copy_features,
    feature_slots,
    light_propagate,
)
from modalrec.models.registry import register
from modalrec.models.row_gather import gather_rows
from modalrec.training.gradient import GradientRecommender, TrainParams


@dataclasses.dataclass
class BM3Params(TrainParams):
    """Defaults: the first point of the authors' grid (MMRec BM3.yaml: n_layers {1, 2}, dropout
    {0.3, 0.5}, reg_weight {0.1, 0.01}, cl_weight 2.0), embedding 64, as in the reference run, and
    the raw features fine-tuned as in the authors' code."""

    embedding_size: int = 64
    n_layers: int = 1
    dropout: float = 0.3
    """Dropout that makes the target views (``hashed_dropout``)."""
    reg_weight: float = 0.1
    cl_weight: float = 2.0
    """Weight of the multimodal alignment and reconstruction terms."""
    tune_features: bool = True
    """Fine-tune the raw feature matrices as the authors' code does (``nn.Embedding.from_pretrained(
    feat, freeze=False)``): they become free item parameters behind the projections. False keeps
    them fixed (the paper's description; below MMRec on the MovieLens-100K parity run)."""


def unit_rows(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Rows divided by their norm clamped at ``eps``: the factors of ``F.cosine_similarity``."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


@register("bm3")
class BM3(GradientRecommender):
    """Zhou et al., WWW 2023 (see the module docstring for what is matched to the authors' code).

    Xavier-uniform embeddings, Xavier-normal predictor and projection weights (biases as
    ``torch.nn.Linear``), as in the authors' code.
    """

    Params = BM3Params
    uses_features = True
    reference = "Zhou et al., WWW 2023"

    def build_module(self) -> torch.nn.Module:
        p = self.params
        d = p.embedding_size
        m = torch.nn.Module()
        m.user = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        m.item = torch.nn.Parameter(torch.nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        m.predictor = torch.nn.Linear(d, d)
        torch.nn.init.xavier_normal_(m.predictor.weight)
        m.projections = torch.nn.ModuleList(torch.nn.Linear(dim, d) for dim in self.feature_dims.values())
        for proj in m.projections:
            torch.nn.init.xavier_normal_(proj.weight)
        add_feature_buffers(m, self.feature_dims, self.n_items, trainable=p.tune_features)
        return m

    def set_features(self, features: FeatureSet) -> None:
        copy_features(self.module, features)

    def prepare(self, train: Interactions) -> None:
        self.norm_adj = SparseOperator(normalized_adjacency(train), self.device, symmetric=True)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.module
        out = light_propagate(self.norm_adj, torch.cat([m.user, m.item], dim=0), self.params.n_layers)
        users, items = out.split([self.n_users, self.n_items])
        return users, items + m.item

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        p, m = self.params, self.module
        user_emb, item_emb = self.forward()
        # Targets, predictions and projections on the batch's distinct users and items only (one
        # dropout mask per row, as when dropping out the whole matrices), then gathered per pair.
        # Each cosine is the dot product of unit rows; the modality terms compare rows of the
        # same distinct item, so they are sums over distinct items weighted by their counts.
        users_u, user_inv = torch.unique(users, return_inverse=True)
        items, inverse = torch.unique(pos, return_inverse=True)
        counts = torch.bincount(inverse, minlength=len(items)).to(item_emb.dtype)
        u_rows, i_rows = user_emb.index_select(0, users_u), item_emb.index_select(0, items)
        with torch.no_grad():
            u_target = unit_rows(hashed_dropout(u_rows, p.dropout))
            i_target = unit_rows(hashed_dropout(i_rows, p.dropout))
        u_online = unit_rows(m.predictor(u_rows)).index_select(0, user_inv)
        i_online = unit_rows(m.predictor(i_rows)).index_select(0, inverse)
        agreement = (u_online * i_target.index_select(0, inverse)).sum() \
            + (i_online * u_target.index_select(0, user_inv)).sum()
        loss = 2 - agreement / len(pos)
        reg = (torch.linalg.vector_norm(user_emb) + torch.linalg.vector_norm(item_emb)) / self.n_items
        loss = loss + p.reg_weight * reg
        modal = torch.zeros((), device=loss.device)
        for proj, (feat, _) in zip(m.projections, feature_slots(m, len(self.feature_dims))):
            z = proj(gather_rows(feat, items))
            with torch.no_grad():
                targets = i_target + unit_rows(hashed_dropout(z, p.dropout))
            z_online = unit_rows(m.predictor(z))
            modal = modal + 2 - (counts @ (z_online * targets).sum(1)) / len(pos)
        return loss + p.cl_weight * modal

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        user_emb, item_emb = self.forward()
        return self.module.predictor(user_emb), self.module.predictor(item_emb)
