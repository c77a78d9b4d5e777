"""Semantics of the MAD vote classifier (maskdefense.defenses.mad)."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from maskdefense.defenses.base import ABSTAIN, Contract, contract_of
from maskdefense.defenses.mad import (
    STOP_BUDGET, STOP_EXACT, STOP_PREDICTIVE, STOP_TEST, AdaptiveVote, MADClassifier, flip_probability, top_class,
)
from maskdefense.ops.masking import apply_mask, enumerate_masks, grid_mask, upsample_mask
from maskdefense.models import create_model
from maskdefense.validation import InputError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def linear_model(seed: int = 0, k: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, k)).eval()


class Constant(nn.Module):
    """Always predicts class ``cls`` (an 'easy' model for early stopping)."""

    def __init__(self, cls: int = 3, k: int = 10) -> None:
        super().__init__()
        self.k, self.cls = k, cls

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], self.k)
        out[:, self.cls] = 1.0
        return out + 0 * x.flatten(1).sum(1, keepdim=True)


class TopLeftPixel(nn.Module):
    """Class 1 if the top-left pixel is kept (non-zero), class 0 if it was blacked out."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = (x[:, 0, 0, 0] > 0).float()
        return torch.stack([1 - kept, kept, torch.full_like(kept, -1.0)], dim=1)


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=gen(seed)) * 0.9 + 0.05


def test_predict_equals_hand_majority_with_same_masks() -> None:
    base = linear_model()
    d = MADClassifier(base, cell=2, rate=0.5, n=9)
    x = images(6)
    pred, counts = d.predict(x, generator=gen(5), return_counts=True)
    # documented layout: copy j of image i uses row i * n + j of grid_mask(N * n, ...)
    cm = grid_mask(6 * 9, 8, 2, 0.5, generator=gen(5)).view(6, 9, 4, 4)
    for i in range(6):
        votes = [int(base(apply_mask(x[i:i + 1], upsample_mask(cm[i, j:j + 1], 2))).argmax()) for j in range(9)]
        c = Counter(votes)
        top = max(c.values())
        assert pred[i].item() == min(k for k, v in c.items() if v == top)
        assert counts[i].tolist() == [c.get(k, 0) for k in range(10)]
    assert (counts.sum(1) == 9).all()
    # the same votes through fixed masks (N, M, gh, gw)
    assert torch.equal(d.predict(x, masks=cm), pred)


def test_predict_is_reproducible_and_random() -> None:
    d = MADClassifier(linear_model(), cell=2, rate=0.75, n=15)
    x = images(20)
    a = d.vote_counts(x, generator=gen(1))
    assert torch.equal(a, d.vote_counts(x, generator=gen(1)))
    assert not torch.equal(a, d.vote_counts(x, generator=gen(2)))
    assert d.vote_counts(x, 7, generator=gen(1)).sum(1).eq(7).all()


@pytest.mark.parametrize("surrogate", ["softmax", "logits"])
def test_forward_is_differentiable_log_probs(surrogate) -> None:
    d = MADClassifier(create_model("digits_cnn").eval(), cell=2, rate=0.5, n_grad=6, surrogate=surrogate)
    x = images(3).requires_grad_(True)
    out = d(x, generator=gen(0))
    assert out.shape == (3, 10)
    assert torch.allclose(out.logsumexp(1), torch.zeros(3), atol=1e-5)
    assert (out <= 0).all()
    out[:, 0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_forward_softmax_surrogate_is_log_mean_softmax() -> None:
    base = linear_model()
    d = MADClassifier(base, cell=2, rate=0.5, n_grad=4)
    x = images(3)
    out = d(x, generator=gen(3))
    cm = grid_mask(3 * 4, 8, 2, 0.5, generator=gen(3)).view(3, 4, 4, 4)
    probs = torch.stack([base(apply_mask(x, upsample_mask(cm[:, j], 2))).softmax(1) for j in range(4)]).mean(0)
    assert torch.allclose(out, probs.log(), atol=1e-5)


@pytest.mark.parametrize("fill", ["black", "mean", "noise", 0.5])
def test_chunk_size_does_not_change_results(fill) -> None:
    base = create_model("digits_cnn").eval()
    x = images(5)
    big = MADClassifier(base, cell=2, rate=0.75, n=7, n_grad=3, fill=fill, chunk_size=4096)
    small = MADClassifier(base, cell=2, rate=0.75, n=7, n_grad=3, fill=fill, chunk_size=1)
    assert torch.equal(big.vote_counts(x, generator=gen(4)), small.vote_counts(x, generator=gen(4)))
    assert torch.allclose(big(x, generator=gen(4)), small(x, generator=gen(4)), atol=1e-5)
    a = big.predict_adaptive(x, 20, generator=gen(4), batch=3)
    b = small.predict_adaptive(x, 20, generator=gen(4), batch=3)
    assert torch.equal(a.counts, b.counts) and torch.equal(a.passes, b.passes)


@pytest.mark.parametrize("counts,expected", [
    ([[2, 2, 1]], 0), ([[0, 3, 3]], 1), ([[1, 0, 1]], 0), ([[0, 0, 5]], 2), ([[4, 5, 5, 0]], 1),
])
def test_top_class_tie_breaks_to_smallest_index(counts, expected) -> None:
    assert top_class(torch.tensor(counts)).item() == expected


def test_deterministic_tie_break_and_abstain() -> None:
    d = MADClassifier(TopLeftPixel(), cell=2, rate=0.5)
    x = torch.ones(2, 1, 8, 8)
    drop0, drop1 = enumerate_masks(8, 2, 1)[:2].unbind(0)  # lexicographic: removes cell 0 / cell 1
    # first vote: cell 0 kept -> class 1; second vote: cell 0 removed -> class 0; a 1-1 tie
    masks = torch.stack([drop1, drop0])
    assert masks[0, 0, 0] and not masks[1, 0, 0]
    pred, counts = d.predict(x, masks=masks, return_counts=True)
    assert counts.tolist() == [[1, 1, 0]] * 2
    assert pred.tolist() == [0, 0]  # smallest index among tied maxima, not the first vote
    assert d.predict(x, masks=masks, abstain_threshold=0.6).tolist() == [ABSTAIN] * 2
    assert d.predict(x, masks=masks, abstain_threshold=0.5).tolist() == [0, 0]
    # default threshold from the constructor
    d2 = MADClassifier(TopLeftPixel(), cell=2, rate=0.5, abstain_threshold=0.75)
    assert d2.predict(x, masks=masks).tolist() == [ABSTAIN] * 2
    assert d2.predict(x, masks=masks[:1]).tolist() == [1, 1]  # 1/1 votes: confident


@pytest.mark.parametrize("seed,batch,n_max", [(0, 1, 15), (1, 4, 21), (2, 7, 30), (3, 10, 10)])
def test_adaptive_exact_stop_equals_full_vote(seed, batch, n_max) -> None:
    d = MADClassifier(linear_model(seed, k=4), cell=2, rate=0.5)
    x = images(40, seed)
    full_pred, full_counts = d.predict(x, n_max, generator=gen(seed), return_counts=True)
    r = d.predict_adaptive(x, n_max, generator=gen(seed), batch=batch, stop="exact")
    assert isinstance(r, AdaptiveVote)
    assert torch.equal(r.predictions, full_pred)
    assert (r.counts <= full_counts).all() and torch.equal(r.counts.sum(1), r.passes)
    assert ((r.passes == n_max) == (r.stopped == STOP_BUDGET)).all()
    full = r.passes == n_max
    assert torch.equal(r.counts[full], full_counts[full])
    assert set(r.stopped.tolist()) <= {STOP_BUDGET, STOP_EXACT}


def test_adaptive_uses_fewer_passes_on_easy_model() -> None:
    d = MADClassifier(Constant(3), cell=2, rate=0.75)
    x = images(4)
    r = d.predict_adaptive(x, 20, generator=gen(0), batch=4, stop="exact")
    # 12 votes for class 3 with 8 left cannot be overtaken; after 8 votes (12 left) it still could
    assert r.passes.tolist() == [12] * 4 and (r.stopped == STOP_EXACT).all()
    assert r.predictions.tolist() == [3] * 4
    t = d.predict_adaptive(x, 100, generator=gen(0), batch=4, stop="test", alpha=0.001)
    # 25 rounds -> level 4e-5; p-value of k-0 votes is 2 * 2**-k < 4e-5 first at k = 16
    assert t.passes.tolist() == [16] * 4 and (t.stopped == STOP_TEST).all()
    assert t.predictions.tolist() == [3] * 4


def test_flip_probability_matches_closed_forms() -> None:
    # no votes yet, 10 to come: under a uniform prior the challenger's count is uniform on 0..10,
    # and it overturns (or ties) the leader with >= 5 of them: 6/11
    assert flip_probability(np.array([0]), np.array([0]), 10)[0] == pytest.approx(6 / 11)
    assert flip_probability(np.array([5]), np.array([0]), 0)[0] == 0.0  # nothing left to come
    assert flip_probability(np.array([12]), np.array([0]), 8)[0] == 0.0  # cannot be overtaken
    p = flip_probability(np.array([4, 8, 6]), np.array([0, 0, 2]), 12)
    assert 0 < p[1] < p[0] and p[1] < p[2]  # more agreement, smaller risk


def test_adaptive_predictive_stop_saves_more_than_exact() -> None:
    d = MADClassifier(Constant(3), cell=2, rate=0.75)
    x = images(4)
    r = d.predict_adaptive(x, 20, generator=gen(0), batch=4, stop="predictive", delta=1e-3)
    # after 4 unanimous votes the flip risk is 2.3e-2, after 8 it is 1.9e-4 < 1e-3 (exact needs 12)
    assert r.passes.tolist() == [8] * 4 and (r.stopped == STOP_PREDICTIVE).all()
    assert r.predictions.tolist() == [3] * 4
    with pytest.raises(ValueError, match="delta"):
        d.predict_adaptive(x, 20, delta=0.0)


def test_adaptive_predictive_mode_agrees_with_full_vote_mostly() -> None:
    d = MADClassifier(linear_model(4, k=3), cell=2, rate=0.5)
    x = images(30, 4)
    full = d.predict(x, 60, generator=gen(9))
    r = d.predict_adaptive(x, 60, generator=gen(9), batch=5, stop="predictive", delta=1e-3)
    undecided = r.stopped != STOP_PREDICTIVE
    assert torch.equal(r.predictions[undecided], full[undecided])
    assert (r.predictions != full).float().mean().item() <= 0.1
    assert r.passes.float().mean() < 60


def test_adaptive_test_mode_reports_disagreement_measurably() -> None:
    d = MADClassifier(linear_model(4, k=3), cell=2, rate=0.5)
    x = images(30, 4)
    n_max = 60
    full = d.predict(x, n_max, generator=gen(9))
    r = d.predict_adaptive(x, n_max, generator=gen(9), batch=5, stop="test", alpha=0.01)
    assert (r.passes <= n_max).all() and torch.equal(r.counts.sum(1), r.passes)
    undecided = r.stopped != STOP_TEST
    assert torch.equal(r.predictions[undecided], full[undecided])  # exact or budget stops agree exactly
    disagree = (r.predictions != full).float().mean().item()
    assert disagree <= 0.2  # rare; the exact rate is what callers measure this way


@pytest.mark.parametrize("method", ["forward", "predict", "vote_counts", "predict_adaptive"])
@pytest.mark.parametrize("bad,match", [
    (torch.rand(1, 8, 8), "shape"),
    (torch.randint(0, 255, (2, 1, 8, 8), dtype=torch.uint8), "float32.*uint8.*255"),
    (torch.rand(2, 1, 8, 8).half(), "float32.*float16"),
    (torch.rand(2, 1, 8, 8).double(), "float32.*float64"),
    (torch.rand(2, 1, 8, 8) * 2, r"\[0, 1\]"),
    (torch.full((2, 1, 8, 8), float("nan")), "NaN"),
    (torch.rand(2, 1, 9, 9), "does not divide"),
    ([[0.5]], "torch.Tensor"),
])
def test_bad_input_raises_input_error(method, bad, match) -> None:
    d = MADClassifier(linear_model(), cell=2, rate=0.5)
    call = {"forward": lambda v: d(v), "predict": d.predict, "vote_counts": d.vote_counts,
            "predict_adaptive": lambda v: d.predict_adaptive(v, 5)}[method]
    with pytest.raises(InputError, match=match):
        call(bad)


@pytest.mark.parametrize("kw", [dict(n=0), dict(n_grad=0), dict(chunk_size=0), dict(rate=1.5), dict(cell=0),
                                dict(surrogate="probs"), dict(abstain_threshold=2.0), dict(fill="gray")])
def test_bad_constructor_arguments(kw) -> None:
    args = dict(cell=2, rate=0.5) | kw
    with pytest.raises(ValueError):
        MADClassifier(linear_model(), **args)


def test_bad_fixed_masks() -> None:
    d = MADClassifier(linear_model(), cell=2, rate=0.5)
    x = images(2)
    with pytest.raises(InputError, match="masks"):
        d.predict(x, masks=torch.ones(3, 2, 2, dtype=torch.bool))
    with pytest.raises(InputError, match="only 0"):
        d.predict(x, masks=torch.full((3, 4, 4), 0.5))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_base_mode_is_left_alone(mode) -> None:
    base = create_model("digits_cnn")
    getattr(base, mode)()
    d = MADClassifier(base, cell=2, rate=0.5, n=3, n_grad=2)
    x = images(2)
    d.predict(x, generator=gen(0))
    d(x, generator=gen(0))
    d.predict_adaptive(x, 4, generator=gen(0), batch=2)
    assert base.training == (mode == "train")


def test_config_and_flags() -> None:
    d = MADClassifier(linear_model(), cell=7, rate=0.75, n=5, fill="mean", surrogate="logits")
    cfg = d.config()
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg == {"defense": "mad", "cell": 7, "rate": 0.75, "n": 5, "n_grad": 8, "fill": "mean",
                   "exact": False, "surrogate": "logits", "abstain_threshold": None}
    c = d.contract()
    assert c == Contract(randomized=True, samples_per_forward=8, components=("base",))
    assert not c.rejects and c.non_differentiable == () and contract_of(d) == c
    assert MADClassifier(linear_model(), cell=7, rate=0.75, n_grad=3).contract().samples_per_forward == 3
    assert d.base is not None


def test_exhaustive_masks_with_lenet_shape() -> None:
    # fixed enumerated masks on a 28x28 model: every 1-removed mask of the 4x4 grid of 7x7 cells
    base = create_model("lenet5").eval()
    d = MADClassifier(base, cell=7, rate=0.75)
    x = torch.rand(2, 1, 28, 28, generator=gen(0))
    masks = enumerate_masks(28, 7, 1)
    counts = d.vote_counts(x, masks=masks)
    assert counts.sum(1).tolist() == [math.comb(16, 1)] * 2
