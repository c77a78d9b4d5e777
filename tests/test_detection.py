"""The defense contract and defenses that reject inputs, scored as detectors: metrics by hand, the
detector-aware adaptive target, and a max-softmax detector evaluated end to end on digits."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from maskdefense.attacks.run import run_attack
from maskdefense.defenses.base import REJECT, Contract, Defense, NoDefense, contract_of
from maskdefense.eval import RecordStore, attack_and_verify, evaluate, make_target
from maskdefense.eval.metrics.detection import detection_metrics, roc
from maskdefense.eval.reuse import reevaluate
from maskdefense.eval.threat import DetectorAware, bound_labels
from maskdefense.spec import SpecError

from conftest import train_digits_linear  # noqa: E402

ATTACK = "pgd-linf:eps=0.2,steps=20"


class MaxSoftmax(Defense):
    """A detector: rejects an input whose top softmax probability is below ``1 - threshold`` (score =
    1 - max softmax); classifies with the base model."""

    def __init__(self, base: nn.Module, threshold: float = 0.3) -> None:
        super().__init__(base)
        self.threshold = threshold

    def contract(self) -> Contract:
        return Contract(rejects=True, reject_threshold=self.threshold)

    def forward(self, x):
        return self.base(x)

    def detect(self, x, *, generator=None):
        return 1 - torch.softmax(self.base(x), 1).max(1).values

    def config(self):
        return {"defense": "max-softmax", "threshold": self.threshold}


def _score(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return 1 - torch.softmax(model(x), 1).max(1).values


@pytest.fixture(scope="module")
def trained():
    return train_digits_linear(200)


@pytest.fixture(scope="module")
def run(trained, tmp_path_factory):
    model, x, y = trained
    out = tmp_path_factory.mktemp("det")
    rep = evaluate(MaxSoftmax(model), (x, y), ATTACK, "gray-box,adaptive", out_dir=out, sanity=None, batch_size=100,
                   progress=False, save_adversarial=True)
    return rep, out


# ----------------------------------------------------------------------------------------------
# the contract


def test_contract_declarations_are_checked():
    assert Contract() == Contract(False, 1, (), (), False, None, ("base",))
    c = Contract(non_differentiable=("median",), bpda_steps=("quantize",))
    assert c.non_differentiable == ("median", "quantize") and c.missing_bpda == ("median",)
    assert Contract(bpda_steps="quantize").missing_bpda == ()
    assert Contract(randomized=True, samples_per_forward=4).to_dict()["samples_per_forward"] == 4
    for bad in (dict(samples_per_forward=0), dict(samples_per_forward=2), dict(rejects=True),
                dict(reject_threshold=0.5), dict(rejects=True, reject_threshold=math.inf),
                dict(components=("base", "base")), dict(bpda_steps=("",))):
        with pytest.raises(ValueError):
            Contract(**bad)
    model = nn.Linear(64, 10)
    assert contract_of(NoDefense(model)) == Contract() and contract_of(model) == Contract(components=())

    class Missing(NoDefense):
        def contract(self):
            return Contract(components=("base", "detector"))

    class NoDetect(NoDefense):
        def contract(self):
            return Contract(rejects=True, reject_threshold=0.0)

    with pytest.raises(ValueError, match="detector"):
        contract_of(Missing(model))
    with pytest.raises(ValueError, match="detect"):
        contract_of(NoDetect(model))
    with pytest.raises(NotImplementedError):
        NoDefense(model).detect(torch.zeros(1, 1, 8, 8))


def test_detector_predict_rejects_above_its_threshold(trained):
    model, x, y = trained
    d = MaxSoftmax(model, 0.3)
    pred = d.predict(x)
    rejected = _score(model, x) > 0.3
    assert rejected.any() and not rejected.all()
    assert torch.equal(pred == REJECT, rejected)
    assert torch.equal(pred[~rejected], model(x[~rejected]).argmax(1))


# ----------------------------------------------------------------------------------------------
# metrics, by hand


def test_roc_by_hand():
    r = roc(np.array([0.1, 0.4]), np.array([0.35, 0.8]))
    # pairs (adversarial above clean): 0.35 > 0.1, 0.8 > 0.1, 0.8 > 0.4 -> 3 of 4
    assert r["auc"] == 0.75
    assert r["fpr"] == [0.0, 0.0, 0.5, 0.5, 1.0] and r["tpr"] == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert r["thresholds"] == [None, 0.8, 0.4, 0.35, 0.1]
    assert roc(np.array([]), np.array([0.3])) is None and roc(np.array([0.1]), np.array([np.nan])) is None


def test_detection_metrics_by_hand():
    labels = np.array([0, 1, 2, 3])
    clean_ok = np.array([[True], [True], [True], [False]])
    adv_pred = np.array([[0], [REJECT], [5], [REJECT]])  # right, rejected, fooled, rejected (clean was wrong)
    attacked = np.array([True, True, True, False])
    m = detection_metrics(labels, clean_ok, adv_pred, attacked, np.array([0.1, 0.2]), np.array([0.3, 0.9, 0.05, 0.9]))
    # (the rejected-counts-as-defended convention is the row's own defense_acc / robust_acc: checked end to end)
    assert m["defense_acc_rejected_failed"] == pytest.approx(1 / 3, abs=1e-6)
    assert m["robust_acc_rejected_failed"] == 0.25
    assert m["detection_rate"] == pytest.approx(1 / 3, abs=1e-6)
    # attacked scores 0.3, 0.9, 0.05 against clean 0.1, 0.2: pairs above = 2 + 2 + 0 of 6
    assert m["detection_auc"] == pytest.approx(4 / 6, abs=1e-6)


# ----------------------------------------------------------------------------------------------
# the detector-aware target


def test_detector_aware_target(trained):
    model, x, y = trained
    d = MaxSoftmax(model, 0.3)
    target, info = make_target(d, "adaptive", detector_weight=2.0)
    assert isinstance(target, DetectorAware) and info["detector"] == {"threshold": 0.3, "weight": 2.0}
    with pytest.raises(RuntimeError, match="labels"):
        target(x)
    xs, ys = x[:64], y[:64]
    with torch.no_grad(), bound_labels(target, ys):
        h = target(xs)
        with pytest.raises(RuntimeError, match="AutoAttack"):
            target(xs[:10])
    assert target.labels is None
    with torch.no_grad():
        z = model(xs)
        s = _score(model, xs)
    wrong = z.argmax(1) != ys
    assert wrong.any() and (~wrong).any()
    assert torch.equal(h[~wrong], z[~wrong])  # the label is still right: the classifier alone
    i = int(wrong.nonzero()[0])
    g = z[i].max() + 2.0 * (s[i] - 0.3)
    expected = z[i].clone()
    expected[ys[i]] = torch.logsumexp(torch.stack([z[i, ys[i]], g]), 0)
    assert torch.allclose(h[i], expected, atol=1e-5)
    assert make_target(d, "gray-box")[0] is model


def test_apgd_attacks_a_detector_aware_target_on_whole_batches(trained):
    """pyautoattack attacks only the examples not yet fooled (parts of the batch); on a detector-aware
    target APGD runs restart by restart on the whole batch, and its best iterate (what it returns) is fooled
    and not rejected wherever it succeeds; AutoAttack and Square, which attack parts of a batch, fail loudly."""
    model, x, y = trained
    T = 0.01  # rejects an input classified with less than 99% confidence
    d = MaxSoftmax(model, T)
    xs, ys = x[:60], y[:60]
    target, _ = make_target(d, "adaptive")
    with bound_labels(target, ys):
        adv = run_attack("apgd-ce:eps=0.3,norm=Linf,n_iter=20,n_restarts=2", target, xs, ys, torch.Generator().manual_seed(0))
        for spec in ("square:eps=0.3,norm=Linf,n_queries=5", "autoattack-standard:eps=0.3,norm=Linf"):
            with pytest.raises(RuntimeError, match="parts of a batch"):
                run_attack(spec, target, xs, ys, torch.Generator().manual_seed(0))
    assert (adv - xs).abs().max() <= 0.3 + 1e-6
    with torch.no_grad():
        ok = (model(xs).argmax(1) == ys) | (_score(model, xs) > T)  # right or rejected: not yet fooled
        changed = (adv != xs).flatten(1).any(1)
        fooled = d.predict(adv) != ys
        caught = _score(model, adv) > T
    assert changed.any() and ok[changed].all()  # only the images not yet fooled are attacked
    assert torch.equal(fooled & ~caught, changed)  # changed exactly where it evades classifier and detector
    assert changed.sum() > 30  # a confident detector (rejects below 99% confidence): most evade it at eps 0.3


def test_a_detector_gets_apgd_as_its_default_sanity_attack(trained, tmp_path):
    from maskdefense.eval import DEFAULT_SANITY, DETECTOR_SANITY, default_sanity

    model, x, y = trained
    d = MaxSoftmax(model, 0.01)
    assert default_sanity(d) == DETECTOR_SANITY and default_sanity(NoDefense(model)) == DEFAULT_SANITY
    rep = evaluate(d, (x[:60], y[:60]), "pgd-linf:eps=0.1,steps=5", "adaptive", out_dir=tmp_path, batch_size=60,
                   progress=False)
    (sanity,) = [r for r in rep.rows if r["sanity"]]
    assert sanity["label"] == DETECTOR_SANITY and sanity["defense_acc"] == 0.0  # Linf 0.5 breaks classifier + detector
    assert not [f for f in rep.flags if f.code == "LARGE_EPS_NOT_ZERO"]


def test_detector_weights_restart_the_adaptive_attack_where_it_failed(trained, tmp_path):
    model, x, y = trained
    d = MaxSoftmax(model, 0.002)  # rejects unless 99.8% confident: the attack must trade label against detector
    data, attack = (x[:60], y[:60]), "pgd-cw-linf:eps=0.15,steps=10"
    one = evaluate(d, data, attack, "adaptive", out_dir=tmp_path / "one", batch_size=60, progress=False, sanity=None)
    two = evaluate(d, data, attack, "adaptive", out_dir=tmp_path / "two", batch_size=60, progress=False, sanity=None,
                   detector_weight=(1.0, 30.0))
    assert json.loads((tmp_path / "two" / "run.json").read_text())["config"]["detector_weight"] == [1.0, 30.0]
    r1, r2 = one.row(attack, "adaptive"), two.row(attack, "adaptive")
    # the first weight's run is the single-weight run (same seed); the second only adds fooled examples
    assert r2["defense_acc"] < r1["defense_acc"]  # (94.9% -> 93.2% when written)
    with pytest.raises(ValueError, match="detector_weight"):
        evaluate(d, data, attack, "adaptive", out_dir=tmp_path / "bad", progress=False, detector_weight=(1.0, 0.0))


class _MeanDetector(Defense):
    """Class 1 when the image's mean exceeds 0.25 (logits ``[0.5, 2 mean]``), score = the mean, rejected above 0.8."""

    def __init__(self) -> None:
        super().__init__(nn.Identity())

    def contract(self) -> Contract:
        return Contract(rejects=True, reject_threshold=0.8)

    def forward(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([torch.full_like(m, 0.5), 2 * m], 1)

    def detect(self, x, *, generator=None):
        return x.mean((1, 2, 3))


def test_detector_weight_restarts_keep_an_example_that_fools_the_defense(monkeypatch):
    """At weight 1 the attack returns an example of mean 0.7: class 1 (label 0) and score 0.7 < 0.8, so it fools the
    defense; the detector-aware target still ranks the label first (logsumexp(0.5, 1.4 - 0.1) > 1.4). The restart
    at weight 2 (an example of mean 0.1, not fooling) must not replace it: what fooled is the defense's decision."""
    from maskdefense.eval import harness

    d = _MeanDetector()
    x, y = torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long)
    target, _ = make_target(d, "adaptive")

    def fake_attack(spec, tgt, xb, yb, seed):
        v = 0.7 if target.weight == 1.0 else 0.1
        return torch.full_like(xb, v), harness.verify_perturbation(xb, torch.full_like(xb, v), "linf", 1.0), 0.0

    monkeypatch.setattr(harness, "_attack_batch", fake_attack)
    spec = harness.parse_attack_spec("pgd-linf:eps=1.0")
    with torch.no_grad(), bound_labels(target, y):
        assert target(torch.full_like(x, 0.7)).argmax(1).item() == 0  # the target's arg-max: not fooled
    assert d.predict(torch.full_like(x, 0.7)).item() == 1  # the defense: fooled, not rejected

    def fools(xe, ye, k):
        p = d.predict(xe)
        return (p != ye) & (p != REJECT)

    x_adv, _, _ = harness._over_detector_weights(spec, target, x, y, (1.0, 2.0), lambda k: k, fools)
    assert torch.allclose(x_adv, torch.full_like(x, 0.7)) and target.weight == 1.0
    def target_argmax(xe, ye, k):  # what the restarts decided by before (called with the labels bound)
        return target(xe).argmax(1) != ye

    x_old, _, _ = harness._over_detector_weights(spec, target, x, y, (1.0, 2.0), lambda k: k, target_argmax)
    assert torch.allclose(x_old, torch.full_like(x, 0.1))  # (the fooling example lost)


def test_apgd_whole_batch_equals_the_library_on_one_restart(trained):
    from maskdefense.attacks.backends.autoattack import _apgd, _apgd_whole_batch

    model, x, y = trained
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    xs, ys = x[ok][:40], y[ok][:40]
    params = {"n_iter": 10, "norm": "Linf", "n_restarts": 1, "eps": 0.1, "eot_iter": 1, "rho": 0.75,
              "use_largereps": False}
    a = _apgd_whole_batch(_apgd(model, params, "ce", seed=3), xs, ys)
    b = _apgd(model, params, "ce", seed=3).perturb(xs, ys)
    assert (a != xs).any() and torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# a detector through evaluate()


def test_detector_numbers_match_a_direct_computation(trained, run):
    model, x, y = trained
    rep, out = run
    clean_scores = _score(model, x)
    assert rep.clean["false_positive_rate"] == pytest.approx(float((clean_scores > 0.3).float().mean()), abs=1e-6)
    g = rep.row(ATTACK, "gray-box")
    # the gray-box examples, remade through the harness's attack path with the same seeds
    adv = attack_and_verify(ATTACK, model, x, y, seed=0, batch_size=100).x_adv
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    adv_scores = _score(model, adv)
    caught = adv_scores > 0.3
    assert g["detection_rate"] == pytest.approx(float(caught[correct].float().mean()), abs=1e-6)
    assert 0 < g["detection_rate"]  # the detector catches some gray-box adversarial examples
    truth = np.r_[np.zeros(len(x)), np.ones(int(correct.sum()))]
    auc = roc_auc_score(truth, np.r_[clean_scores.numpy(), adv_scores[correct].numpy()])
    assert g["detection_auc"] == pytest.approx(auc, abs=1e-6)
    # both conventions: a rejected adversarial example defended / failed
    with torch.no_grad():
        adv_pred = torch.where(caught, torch.full_like(y, REJECT), model(adv).argmax(1))
        clean_pred = torch.where(clean_scores > 0.3, torch.full_like(y, REJECT), model(x).argmax(1))
    clean_ok = clean_pred == y
    assert g["robust_acc"] == pytest.approx(float((clean_ok & ((adv_pred == y) | caught)).float().mean()), abs=1e-6)
    assert g["robust_acc_rejected_failed"] == pytest.approx(float((clean_ok & (adv_pred == y)).float().mean()),
                                                            abs=1e-6)
    assert g["robust_acc"] > g["robust_acc_rejected_failed"]
    assert g["defense_acc_rejected_failed"] == pytest.approx(float((adv_pred == y)[correct].float().mean()), abs=1e-6)


def test_detector_aware_attack_evades_the_detector(run):
    rep, _ = run
    g, a = rep.row(ATTACK, "gray-box"), rep.row(ATTACK, "adaptive")
    # attacking classifier and detector together: fewer detections, and a stronger attack by the harness's
    # rule (success = misclassified and not rejected)
    assert a["detection_rate"] < g["detection_rate"]
    assert a["robust_acc"] < g["robust_acc"]
    assert "TRANSFER_STRONGER_THAN_ADAPTIVE" not in rep.flag_codes()


def test_detector_records_and_reports(run):
    rep, out = run
    recs = list(RecordStore(out / "records.jsonl"))
    assert all("score" in r for r in recs if r["kind"] == "clean")
    assert all("score_adv" in r for r in recs if r["kind"] == "attack")
    # success counted only when misclassified and not rejected, recomputed from the records
    clean = {r["idx"]: r for r in recs if r["kind"] == "clean"}
    adv = [r for r in recs if r["kind"] == "attack" and r["threat"] == "adaptive"]
    robust = sum(clean[r["idx"]]["pred_defense"][0] == r["label"] and r["pred_defense_adv"][0] in (r["label"], REJECT)
                 for r in adv) / len(adv)
    assert rep.row(ATTACK, "adaptive")["robust_acc"] == pytest.approx(robust, abs=1e-6)
    s = json.loads((out / "summary.json").read_text())
    curve = s["rows"][0]["roc"]
    assert curve["fpr"][0] == 0.0 and curve["tpr"][-1] == 1.0 and len(curve["fpr"]) == len(curve["tpr"]) > 2
    assert s["config"]["contract"]["rejects"] and s["targets"]["adaptive"]["detector"]["threshold"] == 0.3
    md = (out / "summary.md").read_text()
    assert "## Detection" in md and "rejected = failed" in md and "False-positive rate" in md
    header = next(csv.reader(io.StringIO((out / "summary.csv").read_text())))
    assert {"detection_rate", "detection_auc", "robust_acc_rejected_failed", "false_positive_rate"} <= set(header)


def test_reevaluating_a_stricter_detector(trained, run, tmp_path):
    model, x, y = trained
    rep, out = run
    strict = reevaluate(MaxSoftmax(model, 0.1), (x, y), out, out_dir=tmp_path, progress=False)
    g, g_strict = rep.row(ATTACK, "gray-box"), strict.row(ATTACK, "gray-box")
    assert strict.clean["false_positive_rate"] > rep.clean["false_positive_rate"]
    assert g_strict["detection_rate"] > g["detection_rate"]
    assert g_strict["detection_auc"] == g["detection_auc"]  # same scores, same examples: same curve


def test_attacks_that_use_parts_of_a_batch_are_refused_before_anything_is_written(trained, tmp_path):
    model, x, y = trained
    with pytest.raises(SpecError, match="evaluates parts of a batch"):
        evaluate(MaxSoftmax(model), (x, y), "autoattack-standard:eps=0.1", "adaptive", out_dir=tmp_path / "o",
                 sanity=None, progress=False)
    assert not (tmp_path / "o").exists()
