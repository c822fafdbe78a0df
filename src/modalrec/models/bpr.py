"""BPR-MF: matrix factorisation trained with the Bayesian personalised ranking loss.

Parity (MovieLens-100K reference inputs and protocol, seed 999, ``benchmarks/parity.py``): test
recall@20 0.3369 against MMRec's 0.3396 at reg_weight 1e-3; Baby, mean of three seeds, 0.0533
against 0.0534. Speed finding: an epoch is 40 steps of 2,048 triples whose arithmetic is tiny
(2,048 x 64 products), so through autograd each step's cost was the framework's: three row gathers
and their scatter-adds, a dozen small element-wise kernels and the backward of the unsquared norms
(three passes over each gathered matrix), about 0.1-0.15 s an epoch. ``bpr_objective`` computes the
loss and both tables' gradients in one compiled pass over the batch; what is left is sampling and
the Adam update of both tables: 0.039-0.052 s an epoch on one thread against MMRec's 0.39 s
(7.5-9.9x, the medians of three sets of timing runs, ``benchmarks/parity.py --section timing``;
the fastest fell in a quicker spell of the test machine).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from modalrec.models.bpr_objective import bpr_objective
from modalrec.models.registry import register
from modalrec.training.gradient import GradientRecommender, TrainParams


@dataclasses.dataclass
class BPRParams(TrainParams):
    embedding_size: int = 64
    """64 as in MMRec and the reference runs."""
    reg_weight: float = 1e-3
    """Weight of the L2 penalty on the batch's user, positive and negative embeddings. MMRec's grid
    is 2.0 .. 1e-5; 1e-3 was best on validation in the reference runs on ML-100K (Baby: 0.1)."""
    reg_style: Literal["norm", "squared"] = "norm"
    """'norm': sum of unsquared L2 norms / batch size, as MMRec and RecBole do (the reference
    protocol); 'squared': ``lambda/2 * ||theta||^2`` per sample as in Rendle et al."""


@register("bpr")
class BPR(GradientRecommender):
    """Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009.

    Xavier-normal initialised embeddings (as MMRec), Adam, one uniform negative per positive, no
    biases (as MMRec; Rendle's MF has none either). The penalty defaults to MMRec's form so the
    reference runs' ``reg_weight`` values carry over; ``reg_style=squared`` gives the paper's.
    """

    Params = BPRParams
    reference = "Rendle et al., UAI 2009"

    def build_module(self) -> torch.nn.Module:
        d = self.params.embedding_size
        module = torch.nn.Module()
        module.user = torch.nn.Parameter(torch.nn.init.xavier_normal_(torch.empty(self.n_users, d)))
        module.item = torch.nn.Parameter(torch.nn.init.xavier_normal_(torch.empty(self.n_items, d)))
        return module

    def loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        p = self.params
        return bpr_objective(self.module.user, self.module.item, users, pos, neg, p.reg_weight, p.reg_style)

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.module.user, self.module.item
