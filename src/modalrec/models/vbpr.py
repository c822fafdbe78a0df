"""VBPR: matrix factorisation with a learned projection of item content (He & McAuley, AAAI 2016).

Two variants are registered:

- ``vbpr``: the paper's predictor
  ``x_ui = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i``
  (the global and user biases cancel in BPR's difference and are left out). The paper has one visual
  feature ``f_i``; here ``f_i`` is the concatenation of all given modalities, in feature order.
- ``vbpr-mmrec``: the MMRec toolbox's variant: item = ``[gamma_i ; W f_i + b]``, user embedding of
  twice the size, no bias terms, L2 as MMRec's ``EmbLoss`` on the batch's final embeddings.

Parity (MovieLens-100K reference inputs and protocol, seed 999, ``benchmarks/parity.py``):
``vbpr-mmrec`` test recall@20 0.3354 with both modalities (MMRec 0.3221) and 0.3203 with the image
alone (MMRec 0.3195). Speed finding: an epoch is bound by the projection of the content, not by
bookkeeping. A batch of 2048 pairs touches about 1,440 of the 1,682 items, and each step projects
those rows of the 1,682 x 1,664 content matrix and back-propagates into ``W``: 2 x 153 M
multiply-adds, 40 steps an epoch, about 24.5 GFLOP (MMRec projects every item: 28.6 GFLOP). One
core of the 2-core test machine multiplies these shapes at 61-69 GFLOP/s (92-95 for a 2,048-square
product, its practical peak), so the products alone take 0.36-0.40 s of the epoch, and 0.26 s even
at the peak, against the 0.27 s that a third of MMRec's 0.80 s would allow. One thread cannot be
3x faster without changing the arithmetic (a lower precision or a truncated basis of the content,
which would change the model). With the rest of the step in one compiled pass (``bpr_objective``)
an epoch takes 0.51-0.59 s on one thread (1.4-1.6x; medians of twelve timing runs in two spells
of the test machine, the faster one with every model 20-25% quicker).

The paper's variant takes the same route with the default squared penalty: one ``bpr_objective``
over the batch's distinct rows ``[gamma_u ; theta_u ; 1]`` and ``[gamma_i ; E f_i ; beta_i +
beta' f_i]``, penalising ``[gamma_u ; theta_u]`` and ``[gamma_i ; beta_i]`` (the same sum of
squares as factor by factor). Through autograd's per-factor kernels the same epoch took 0.66 s
against 0.57 s (medians of six alternating epochs in one process; on Baby with random 4,480-d
content, where the products dominate, 4.11 s against 4.03 s), with the same test results. Its
content product has 65 output columns (``E f_i`` and ``beta' . f_i``), about 9% slower than 64
on this machine's BLAS.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from modalrec.features.features import FeatureSet
from modalrec.models.bpr_objective import bpr_loss, bpr_objective, embedding_penalty
from modalrec.models.modality import add_feature_buffers, copy_features, feature_slots, project_rows
from modalrec.models.registry import register
from modalrec.training.gradient import GradientRecommender, TrainParams


@dataclasses.dataclass
class VBPRParams(TrainParams):
    """Defaults: embedding sizes follow the reference study's grid and MMRec (64 each; the paper
    used K = K' = 10 on its data sets). The paper regularises the factors and item biases with
    ``lambda_theta`` and leaves ``E`` and ``beta'`` free (``lambda_e = 0``), tuning lambda_theta on
    validation for SGD on its unnormalised objective; that value does not carry over to Adam on
    batch means, so ``reg_weight`` defaults to BPR-MF's 1e-3 here (tune it like BPR-MF's)."""

    embedding_size: int = 64
    """K: size of the latent factors gamma_u, gamma_i."""
    visual_size: int = 64
    """K': size of theta_u and of the content projection E f_i."""
    reg_weight: float = 1e-3
    """lambda_theta on the batch's gamma_u, gamma_i, gamma_j, theta_u, beta_i, beta_j."""
    reg_e: float = 0.0
    """lambda_E on E and beta' (the paper: 0)."""
    reg_style: Literal["norm", "squared"] = "squared"
    """'squared': ``lambda/2 ||theta||^2`` per triple (the paper's MAP objective, as Rendle et al.);
    'norm': MMRec's unsquared norm / batch size."""


@register("vbpr")
class VBPR(GradientRecommender):
    """He & McAuley, "VBPR: Visual Bayesian Personalized Ranking from Implicit Feedback", AAAI 2016.

    Xavier-normal factors, zero biases, Adam with one uniform negative per positive. Content enters
    only through ``E f_i`` and ``beta' . f_i``, computed for the batch's items alone, so an epoch costs
    O(batch x feature dim) per step whatever the catalog size.
    """

    Params = VBPRParams
    uses_features = True
    reference = "He & McAuley, AAAI 2016"

    def build_module(self) -> torch.nn.Module:
        p = self.params
        dim = sum(self.feature_dims.values())
        m = torch.nn.Module()
        normal = torch.nn.init.xavier_normal_
        m.gamma_user = torch.nn.Parameter(normal(torch.empty(self.n_users, p.embedding_size)))
        m.gamma_item = torch.nn.Parameter(normal(torch.empty(self.n_items, p.embedding_size)))
        m.theta_user = torch.nn.Parameter(normal(torch.empty(self.n_users, p.visual_size)))
        m.beta_item = torch.nn.Parameter(torch.zeros(self.n_items))
        m.E = torch.nn.Parameter(normal(torch.empty(dim, p.visual_size)))
        m.beta_prime = torch.nn.Parameter(torch.zeros(dim))
        add_feature_buffers(m, self.feature_dims, self.n_items)
        return m

    def set_features(self, features: FeatureSet) -> None:
        copy_features(self.module, features)

    def _content_weights(self) -> list[torch.Tensor]:
        """``[E | beta']`` cut into one row block per modality, so ``f_i @ W`` gives both
        ``E f_i`` and ``beta' . f_i`` without concatenating the features."""
        w = torch.cat([self.module.E, self.module.beta_prime.unsqueeze(1)], dim=1)
        return list(w.split(list(self.feature_dims.values()), dim=0))

    def _content(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(E f_i, beta' . f_i)`` for each of ``items``."""
        slots = feature_slots(self.module, len(self.feature_dims))
        rows, inverse, _ = project_rows(slots, self._content_weights(), items)
        rows = rows[inverse]
        return rows[:, :-1], rows[:, -1]

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        m, p = self.module, self.params
        if p.reg_style == "squared":
            loss = self._squared_loss(users, pos, neg)
        else:
            gu, tu = m.gamma_user[users], m.theta_user[users]
            gi, gj = m.gamma_item[pos], m.gamma_item[neg]
            e, b = self._content(torch.cat([pos, neg]))
            ei, ej = e.split(len(pos))
            bi, bj = (m.beta_item[pos] + b[: len(pos)]), (m.beta_item[neg] + b[len(pos):])
            pos_score = bi + (gu * gi).sum(1) + (tu * ei).sum(1)
            neg_score = bj + (gu * gj).sum(1) + (tu * ej).sum(1)
            loss = bpr_loss(pos_score, neg_score) + p.reg_weight * embedding_penalty(
                p.reg_style, gu, gi, gj, tu, m.beta_item[pos].unsqueeze(1), m.beta_item[neg].unsqueeze(1))
        if p.reg_e:
            loss = loss + p.reg_e * (m.E.pow(2).sum() + m.beta_prime.pow(2).sum()) / 2
        return loss

    def _squared_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """BPR plus ``lambda/2`` times the squared norms, as one ``bpr_objective`` over the tables
        ``[gamma_u ; theta_u ; 1]`` and ``[gamma_i ; E f_i ; beta_i + beta' f_i]`` of the batch's
        distinct users and items, penalising ``[gamma_u ; theta_u]`` and ``[gamma_i ; beta_i]``: the same sum
        of squares as penalising each factor, in one compiled pass instead of some forty kernels."""
        m = self.module
        slots = feature_slots(m, len(self.feature_dims))
        content, inverse, row_items = project_rows(slots, self._content_weights(), torch.cat([pos, neg]))
        gamma, beta = m.gamma_item.index_select(0, row_items), m.beta_item.index_select(0, row_items).unsqueeze(1)
        items = torch.cat([gamma, content[:, :-1], beta + content[:, -1:]], dim=1)
        rows, user_index = torch.unique(users, return_inverse=True)  # batch-sized tables, not all users
        factors = torch.cat([m.gamma_user.index_select(0, rows), m.theta_user.index_select(0, rows)], dim=1)
        user = torch.cat([factors, factors.new_ones(len(factors), 1)], dim=1)
        i, j = inverse.split(len(pos))
        return bpr_objective(user, items, user_index, i, j, self.params.reg_weight, "squared",
                             reg_user=factors, reg_item=torch.cat([gamma, beta], dim=1))

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Score = [gamma_u ; theta_u ; 1] . [gamma_i ; E f_i ; beta_i + beta' f_i]
        m = self.module
        e, b = self._content(torch.arange(self.n_items, device=m.E.device))
        ones = torch.ones(self.n_users, 1, device=e.device)
        user = torch.cat([m.gamma_user, m.theta_user, ones], dim=1)
        item = torch.cat([m.gamma_item, e, (m.beta_item + b).unsqueeze(1)], dim=1)
        return user, item


@dataclasses.dataclass
class VBPRMMRecParams(TrainParams):
    """MMRec's VBPR settings (configs/model/VBPR.yaml): embedding 64, reg_weight tuned over
    {2.0, 1.0, 0.1, 1e-2, ..., 1e-5}; the default is the grid's first value, which the reference
    run on MovieLens-100K also selected on validation."""

    embedding_size: int = 64
    """Size of the item id embedding and of the content projection; users get twice this."""
    reg_weight: float = 2.0
    """Weight of ``(||u|| + ||i|| + ||j||) / batch`` on the batch's final embeddings (unsquared)."""


@register("vbpr-mmrec")
class VBPRMMRec(GradientRecommender):
    """The MMRec toolbox's VBPR (src/models/vbpr.py), matched on initialisation and loss:
    users ``(n_users, 2d)`` and item ids ``(n_items, d)`` Xavier-uniform, the content projection
    ``Linear(sum of dims, d)`` Xavier-normal with zero bias, BPR plus ``reg_weight * EmbLoss``.
    The content is the concatenation of all given modalities (MMRec: text then image)."""

    Params = VBPRMMRecParams
    uses_features = True
    reference = "He & McAuley, AAAI 2016; variant of the MMRec toolbox (Zhou et al., 2023)"

    def build_module(self) -> torch.nn.Module:
        d = self.params.embedding_size
        m = torch.nn.Module()
        uniform = torch.nn.init.xavier_uniform_
        m.user = torch.nn.Parameter(uniform(torch.empty(self.n_users, 2 * d)))
        m.item = torch.nn.Parameter(uniform(torch.empty(self.n_items, d)))
        m.linear = torch.nn.Linear(sum(self.feature_dims.values()), d)
        torch.nn.init.xavier_normal_(m.linear.weight)
        torch.nn.init.zeros_(m.linear.bias)
        add_feature_buffers(m, self.feature_dims, self.n_items)
        return m

    def set_features(self, features: FeatureSet) -> None:
        copy_features(self.module, features)

    def _item_rows(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[id embedding ; W f_i + b]`` of the distinct ``items``, and the index of each item's row."""
        m = self.module
        blocks = list(m.linear.weight.T.split(list(self.feature_dims.values()), dim=0))
        rows, inverse, row_items = project_rows(feature_slots(m, len(self.feature_dims)), blocks, items,
                                                m.linear.bias)
        return torch.cat([m.item.index_select(0, row_items), rows], dim=1), inverse

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        rows, inverse = self._item_rows(torch.cat([pos, neg]))
        i, j = inverse.split(len(pos))
        return bpr_objective(self.module.user, rows, users, i, j, self.params.reg_weight)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows, _ = self._item_rows(torch.arange(self.n_items, device=self.module.item.device))
        return self.module.user, rows
