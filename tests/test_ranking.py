"""topk_deterministic against a stable full sort: ties rank the lower item index first."""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modalrec.evaluation import ranking
from modalrec.evaluation.chunked_topk import CHUNK, chunked_topk
from modalrec.evaluation.ranking import topk_deterministic

# "cpu-torch": the torch path that other devices take (and CPU rows the chunked scan leaves).
DEVICES = ["cpu", "cpu-torch"] + (["cuda"] if torch.cuda.is_available() else [])


def on(device: str):
    """(torch device, context that routes CPU rows away from the chunked scan for cpu-torch)."""
    if device == "cpu-torch":
        return "cpu", mock.patch.object(ranking, "MIN_ITEMS", 10**9)
    return device, contextlib.nullcontext()


def reference_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Python sort with key (-score, item), row by row."""
    values, indices = [], []
    for row in scores.cpu().tolist():
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        values.append([row[i] for i in order])
        indices.append(order)
    return torch.tensor(values, dtype=scores.dtype).view(len(values), -1), torch.tensor(indices).view(len(values), -1)


def stable_sort_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    values, indices = torch.sort(scores, dim=1, descending=True, stable=True)
    return values[:, :k], indices[:, :k]


@st.composite
def score_matrices(draw):
    n_rows = draw(st.integers(1, 6))
    n_items = draw(st.sampled_from([1, 2, 5, 17, 64, 250, 700, 1500]))
    levels = draw(st.sampled_from([1, 2, 3, 10, 1000, 10**6]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(n_rows, n_items)).astype(np.float32)
    if draw(st.booleans()):  # masked items, as the evaluator writes them
        scores[rng.random(scores.shape) < draw(st.sampled_from([0.1, 0.5, 0.95]))] = -np.inf
    if draw(st.booleans()):  # a few infinite scores (a scorer's overflow): the bound must stay valid
        scores[rng.random(scores.shape) < draw(st.sampled_from([0.01, 0.3]))] = np.inf
    k = draw(st.integers(1, n_items + 5))
    return torch.from_numpy(scores), k


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=150, deadline=None)
@given(data=score_matrices())
def test_matches_stable_full_sort_on_ties(device, data):
    scores, k = data
    device, route = on(device)
    scores = scores.to(device)
    before = scores.clone()
    with route:
        values, indices = topk_deterministic(scores, k)
    expected_values, expected_indices = stable_sort_topk(scores, k)
    assert torch.equal(indices, expected_indices)
    assert torch.equal(values, expected_values)
    assert torch.equal(scores, before), "the input must not be modified"


def test_matches_python_sort_reference():
    rng = np.random.default_rng(7)
    scores = torch.from_numpy(rng.integers(0, 4, size=(5, 300)).astype(np.float32))
    for k in (1, 3, 20, 299, 300, 400):
        values, indices = topk_deterministic(scores, k)
        ref_values, ref_indices = reference_topk(scores, k)
        assert torch.equal(indices, ref_indices)
        assert torch.equal(values, ref_values)


def test_chunked_scan_float_scores_and_boundary_ties():
    """Long rows take the chunked scan; ties planted at the k-th value must still follow the
    index rule, including ties spread over several chunks and the items after the last chunk."""
    rng = np.random.default_rng(0)
    n_items, k = 5003, 20
    scores = torch.from_numpy(rng.standard_normal((8, n_items)).astype(np.float32))
    kth = torch.sort(scores, dim=1, descending=True).values[:, k - 1]
    for row, where in enumerate([[3, 5002], [4000, 17, 2500], [1, 2, 3, 4, 5], list(range(0, 5000, 97))]):
        scores[row, where] = kth[row]  # several items now share the k-th value
    fast = chunked_topk(scores, k)
    assert fast is not None, "this test must exercise the chunked scan"
    expected_values, expected_indices = stable_sort_topk(scores, k)
    for values, indices in (fast, topk_deterministic(scores, k)):
        assert torch.equal(indices, expected_indices)
        assert torch.equal(values, expected_values)


@pytest.mark.parametrize("threads", [1, 3])
def test_chunked_scan_any_layout_and_thread_count(threads):
    """Item-major (transposed) scores, as the evaluator computes them, and rows split over
    threads give the same answer as one thread on row-major scores."""
    rng = np.random.default_rng(1)
    item_major = torch.from_numpy(rng.integers(0, 30, size=(1000, 37)).astype(np.float32))
    scores = item_major.T  # (37 users, 1000 items), column-major
    assert not scores.is_contiguous()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast = chunked_topk(scores, 25)
    finally:
        torch.set_num_threads(before)
    assert fast is not None
    expected_values, expected_indices = stable_sort_topk(scores.contiguous(), 25)
    assert torch.equal(fast[1], expected_indices)
    assert torch.equal(fast[0], expected_values)


def test_chunked_scan_leaves_nan_and_short_rows_to_the_caller():
    scores = torch.zeros(3, 10 * CHUNK)
    scores[1, 7] = float("nan")
    assert chunked_topk(scores, 5) is None
    scores = torch.full((2, 10 * CHUNK), -torch.inf)
    scores[0, :3] = 1.0  # three finite items, five wanted
    assert chunked_topk(scores, 5) is None
    values, indices = topk_deterministic(scores, 5)  # the general path answers
    assert indices[0, :3].tolist() == [0, 1, 2] and values[0, 3] == -torch.inf


def test_edge_shapes_and_non_contiguous_input():
    expanded = torch.tensor([3.0, 1.0, 3.0, 2.0] * 300).unsqueeze(0).expand(3, -1)  # stride 0, like MostPop
    values, indices = topk_deterministic(expanded, 5)
    assert indices.tolist() == [[0, 2, 4, 6, 8]] * 3
    assert values.tolist() == [[3.0] * 5] * 3
    values, indices = topk_deterministic(torch.zeros(0, 10), 3)
    assert values.shape == (0, 3) and indices.dtype == torch.long
    values, indices = topk_deterministic(torch.ones(2, 4), 0)
    assert values.shape == (2, 0) and indices.shape == (2, 0)
    values, indices = topk_deterministic(torch.tensor([[1.0, 5.0, 5.0]]), 10)  # k > n_items
    assert indices.tolist() == [[1, 2, 0]]


def test_nan_ranks_first_like_torch():
    scores = torch.tensor([[0.5, float("nan"), 0.9, 0.1] * 100])
    values, indices = topk_deterministic(scores, 3)
    assert torch.isnan(values).all()  # which NaN comes first is unspecified
    assert all(i % 4 == 1 for i in indices[0].tolist())
    values, indices = topk_deterministic(torch.tensor([[0.5, float("nan"), 0.9]]), 2)
    assert torch.isnan(values[0, 0]) and indices.tolist() == [[1, 2]]
