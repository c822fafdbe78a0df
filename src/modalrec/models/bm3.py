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

Speed finding (one thread, MovieLens-100K, ``benchmarks/parity.py --section timing``, median of
twelve runs): 0.79 s an epoch against MMRec's 2.13 s (2.7x; 1.05 s in an earlier, slower spell of
the test machine, when unchanged models also ran 20-25% slower). With the features tuned, every
step multiplies the batch's distinct positive items' feature rows (about 780 x 1,664) three times
(the projection, its gradient into the weights and into the features), propagates the graph
forward and backward, and runs Adam over all 2.8 M feature values: about 0.5 s of the epoch by a
profile, the products alone 0.28 s at about 72 GFLOP/s, near this core's rate for these shapes.
The feature rows' gradient goes to a buffer kept across steps (``gather_rows``), the target masks
come from ``hashed_dropout``, and the four cosine terms are one ``predicted_agreement`` over the
stacked rows (each row meets the sum of its targets): with autograd's chain per term the same
epoch took 0.84 s against 0.77 s (medians of six alternating epochs in one process), with the same
test results (recall@20 0.2426 to the last digit).
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


UNIT_EPS = 1e-8  # F.cosine_similarity's eps


def unit_rows(x: torch.Tensor, eps: float = UNIT_EPS) -> torch.Tensor:
    """Rows divided by their norm clamped at ``eps``: the factors of ``F.cosine_similarity``."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


class _PredictedAgreement(torch.autograd.Function):
    """``sum_r unit_rows(x W^T + b)_r . t_r`` with its gradient in closed form: three products and
    a few row operations instead of autograd's chain of a dozen small operations per term."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,  # type: ignore[override]
                targets: torch.Tensor) -> torch.Tensor:
        y = torch.addmm(bias, x, weight.T)
        norm = torch.linalg.vector_norm(y, dim=1, keepdim=True)
        unclamped = norm >= UNIT_EPS
        norm.clamp_(min=UNIT_EPS)
        unit = y.div_(norm)
        dots = (unit * targets).sum(1, keepdim=True)
        ctx.save_for_backward(x, weight, unit, norm, unclamped, targets, dots)
        return dots.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, weight, unit, norm, unclamped, targets, dots = ctx.saved_tensors
        # d(unit . t)/dy = (t - (unit . t) unit) / |y|; below eps the norm is a constant.
        grad_y = (targets - (dots * unclamped) * unit).div_(norm).mul_(grad)
        return grad_y @ weight, grad_y.T @ x, grad_y.sum(0), None


def predicted_agreement(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over rows of the cosine between ``x W^T + b`` and the matching row of ``targets`` (unit
    rows, or sums of them): BM3's every loss term. ``targets`` carry no gradient."""
    return _PredictedAgreement.apply(x, weight, bias, targets.detach())


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
        # dropout mask per row, as when dropping out the whole matrices). Every term is a sum of
        # cosines between predictor(online row) and a target row, so each online row meets the sum
        # of its targets (its pairs' targets, or its count times its own), and all four terms are
        # one ``predicted_agreement`` over the stacked rows.
        users_u, user_inv = torch.unique(users, return_inverse=True)
        items, inverse = torch.unique(pos, return_inverse=True)
        u_rows, i_rows = user_emb.index_select(0, users_u), item_emb.index_select(0, items)
        projected = [proj(gather_rows(feat, items))
                     for proj, (feat, _) in zip(m.projections, feature_slots(m, len(self.feature_dims)))]
        with torch.no_grad():
            u_target = unit_rows(hashed_dropout(u_rows, p.dropout))
            i_target = unit_rows(hashed_dropout(i_rows, p.dropout))
            counts = torch.bincount(inverse, minlength=len(items)).to(item_emb.dtype)[:, None]
            targets = [torch.zeros_like(u_target).index_add_(0, user_inv, i_target.index_select(0, inverse)),
                       torch.zeros_like(i_target).index_add_(0, inverse, u_target.index_select(0, user_inv))]
            targets += [(p.cl_weight * counts) * (i_target + unit_rows(hashed_dropout(z, p.dropout)))
                        for z in projected]
        agreement = predicted_agreement(torch.cat([u_rows, i_rows, *projected]), m.predictor.weight,
                                        m.predictor.bias, torch.cat(targets))
        constant = 2.0 + 2.0 * p.cl_weight * len(projected)  # each cosine term is 1 - mean cosine
        reg = (torch.linalg.vector_norm(user_emb) + torch.linalg.vector_norm(item_emb)) / self.n_items
        return constant - agreement / len(pos) + p.reg_weight * reg

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        user_emb, item_emb = self.forward()
        return self.module.predictor(user_emb), self.module.predictor(item_emb)
