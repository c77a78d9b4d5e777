"""Integrity checks: every flag's trigger and non-trigger, as pure functions and through evaluate()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskdefense.attacks import ATTACKS, BPDA, AttackDef, ParamSpec, bpda, register_attack
from maskdefense.defenses.base import Contract, Defense, NoDefense
from maskdefense.eval import build_defense, evaluate
from conftest import train_digits_linear
from maskdefense.eval.checks import (
    Flag, check_bpda, check_complete, check_eot, check_gradient_free, check_gradients, check_gray_box_only,
    check_large_eps, check_outputs,
    check_randomness, check_transfer_vs_adaptive, check_violations, gradient_stats, is_large_eps,
    looks_like_probabilities, output_stats, run_checks,
)


@pytest.fixture(scope="module")
def trained():
    return train_digits_linear(32)


def _quant(x):
    return torch.round(x * 4) / 4


class Quantized(Defense):
    """Gradient masking: a quantization step with zero gradient, honestly declared or not."""

    def __init__(self, base, non_differentiable=False):
        super().__init__(base)
        self.declared = ("quantize",) if non_differentiable else ()

    def contract(self):
        return Contract(non_differentiable=self.declared)

    def forward(self, x):
        return self.base(_quant(x))

    def config(self):
        return {"defense": "quantized"}


class QuantizedBPDA(Quantized):
    """The same defense, its forward passing the quantizer through BPDA (identity backward), declared."""

    def contract(self):
        return Contract(bpda_steps=("quantize",))

    def forward(self, x):
        return self.base(bpda(_quant, x))


class Noisy(Defense):
    """A randomized defense (Gaussian noise on the input); ``randomized`` may be declared or not."""

    def __init__(self, base, randomized=True):
        super().__init__(base)
        self.randomized = randomized

    def contract(self):
        return Contract(randomized=self.randomized)

    def forward(self, x):
        return self.base((x + 0.02 * torch.randn_like(x)).clamp(0, 1))

    @torch.no_grad()
    def predict(self, x, *, generator=None):
        noise = torch.randn(x.shape, generator=generator)
        return self.base((x + 0.02 * noise).clamp(0, 1)).argmax(1)

    def config(self):
        return {"defense": "noisy"}


def _ev(defense, data, attacks, threat, tmp_path, **kw):
    x, y = data
    kw.setdefault("sanity", None)
    return evaluate(defense, (x, y), attacks, threat, out_dir=tmp_path, batch_size=16, progress=False, **kw)


def _row(threat, attack, robust, **kw):
    return {"threat": threat, "attack": attack, "label": attack, "name": attack.split(":")[0], "robust_acc": robust,
            "n": 100, "norm": "linf", "eps": 0.1, **kw}


# ----------------------------------------------------------------------------------------------
# gradient masking: zero gradients, transfer beats white-box, large eps does not reach 0


def test_gradient_masking_defense_raises_three_flags(trained, tmp_path):
    model, x, y = trained
    rep = _ev(Quantized(model), (x, y), "bim-linf:eps=0.2", "gray-box,adaptive", tmp_path,
              sanity="bim-linf:eps=0.5", repeats=1)
    codes = rep.flag_codes()
    assert "ZERO_OR_NONFINITE_GRADIENTS" in codes
    assert "TRANSFER_STRONGER_THAN_ADAPTIVE" in codes
    assert "LARGE_EPS_NOT_ZERO" in codes
    zero = next(f for f in rep.flags if f.code == "ZERO_OR_NONFINITE_GRADIENTS")
    assert zero.severity == "error" and zero.threat == "adaptive"
    assert rep.errors and rep.flags[0].severity == "error"
    md = (tmp_path / "summary.md").read_text()
    assert "TRANSFER_STRONGER_THAN_ADAPTIVE" in md and "LARGE_EPS_NOT_ZERO" in md


def test_honest_undefended_evaluation_raises_no_flags(trained, tmp_path):
    model, x, y = trained
    rep = _ev(model, (x, y), "bim-linf:eps=0.2", "gray-box,adaptive", tmp_path, sanity="pgd-linf:eps=0.5")
    assert rep.flags == [], [f.message for f in rep.flags]
    assert rep.row("pgd-linf:eps=0.5", "adaptive")["robust_acc"] < 0.1
    assert "No integrity flags raised." in (tmp_path / "summary.md").read_text()


def test_gradient_stats_and_thresholds(trained):
    model, x, y = trained
    s = gradient_stats(model, x, y)
    assert s["n"] == 32 and s["zero"] == 0 and s["nonfinite"] == 0
    s = gradient_stats(nn.Sequential(BPDA(_quant, approx=lambda z: z * 0), model), x, y)
    assert s["frac_zero"] == 1.0
    s = gradient_stats(nn.Sequential(_Mul(float("nan")), model), x, y)
    assert s["nonfinite"] == 32
    mk = lambda z, nf=0: {"n": 100, "zero": z, "nonfinite": nf, "frac_zero": z / 100}  # noqa: E731
    assert check_gradients({"adaptive": mk(5)}) == []
    assert [f.severity for f in check_gradients({"adaptive": mk(20)})] == ["warning"]
    assert [f.severity for f in check_gradients({"adaptive": mk(60)})] == ["error"]
    assert [f.severity for f in check_gradients({"gray-box": mk(0, 1)})] == ["error"]


class _Mul(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.v = v

    def forward(self, x):
        return x * self.v


def test_transfer_vs_adaptive_rule():
    rows = [_row("gray-box", "a", 0.30), _row("adaptive", "a", 0.50), _row("black-box", "a", 0.49)]
    flags = check_transfer_vs_adaptive(rows, tol=0.02)
    assert [(f.code, f.threat) for f in flags] == [("TRANSFER_STRONGER_THAN_ADAPTIVE", "gray-box")]
    assert check_transfer_vs_adaptive([_row("gray-box", "a", 0.49), _row("adaptive", "a", 0.50)], tol=0.02) == []
    # default tolerance grows with sampling noise (n = 100)
    assert check_transfer_vs_adaptive([_row("black-box", "a", 0.42), _row("adaptive", "a", 0.50)]) == []
    assert check_transfer_vs_adaptive([_row("black-box", "a", 0.35), _row("adaptive", "a", 0.50)])
    # the strongest transfer attack against the strongest adaptive one, different attacks
    rows = [_row("black-box", "b", 0.10), _row("adaptive", "a", 0.50)]
    assert [f.attack for f in check_transfer_vs_adaptive(rows, tol=0.02)] == ["b"]


if "test-gradient-free" not in ATTACKS:
    register_attack(AttackDef(
        name="test-gradient-free", family="Fake", norm="linf", backend="test", implementation="tests",
        kind="fixed-epsilon", params=(ParamSpec("eps", "float", required=True, minimum=0.0),),
        runner=lambda d, p, model, x, y, g: x, gradient_free=True))


def test_gradient_free_beating_every_gradient_attack_is_flagged():
    free = "test-gradient-free:eps=0.1"
    rows = [_row("adaptive", free, 0.20), _row("adaptive", "pgd-linf:eps=0.1", 0.50),
            _row("adaptive", "fgsm-linf:eps=0.1", 0.60)]
    flags = check_gradient_free(rows, tol=0.02)
    assert [(f.code, f.severity, f.threat, f.attack) for f in flags] == [
        ("GRADIENT_FREE_BEATS_GRADIENT", "error", "adaptive", free)]
    assert "gradient masking likely" in flags[0].message and "pgd-linf:eps=0.1" in flags[0].message
    # one gradient attack as strong as the gradient-free one (within the tolerance): no flag
    assert check_gradient_free(rows + [_row("adaptive", "bim-linf:eps=0.1", 0.21)], tol=0.02) == []
    # compared only within the same threat model, norm and epsilon
    assert check_gradient_free([_row("gray-box", free, 0.2), _row("adaptive", "pgd-linf:eps=0.1", 0.5)]) == []
    assert check_gradient_free([_row("adaptive", free, 0.2), _row("adaptive", "pgd-linf:eps=0.2", 0.5, eps=0.2)]) == []
    assert check_gradient_free([_row("adaptive", free, 0.2), _row("adaptive", "pgd-l2:eps=0.1", 0.5, norm="l2")]) == []
    # the default tolerance follows the sampling noise (n = 100): a 5-point lead is noise
    assert check_gradient_free([_row("adaptive", free, 0.45), _row("adaptive", "pgd-linf:eps=0.1", 0.50)]) == []
    assert check_gradient_free([_row("adaptive", free, 0.30), _row("adaptive", "pgd-linf:eps=0.1", 0.50)])
    # unregistered attacks are left out; and run_checks raises it
    assert check_gradient_free([_row("adaptive", free, 0.2), _row("adaptive", "unknown:eps=0.1", 0.9)]) == []
    codes = {f.code for f in run_checks(rows, {}, threats=["adaptive"], defense_name="x", contract=Contract(), dim=64,
                                        n=100)}
    assert "GRADIENT_FREE_BEATS_GRADIENT" in codes


def test_square_catches_gradient_masking_through_evaluate(trained, tmp_path):
    model, x, y = trained
    attacks = "bim-linf:eps=0.2;square:eps=0.2,n_queries=200"
    rep = _ev(Quantized(model), (x, y), attacks, "adaptive", tmp_path / "masked", repeats=1)
    flag = next(f for f in rep.flags if f.code == "GRADIENT_FREE_BEATS_GRADIENT")
    assert flag.attack.startswith("square:") and flag.threat == "adaptive"
    assert rep.row("square:eps=0.2,n_queries=200", "adaptive")["robust_acc"] < rep.row("bim-linf:eps=0.2",
                                                                                       "adaptive")["robust_acc"]
    honest = _ev(model, (x, y), attacks, "adaptive", tmp_path / "honest", repeats=1)
    assert "GRADIENT_FREE_BEATS_GRADIENT" not in honest.flag_codes()


def test_bpda_rule_reads_the_contract():
    assert check_bpda(["adaptive"], Contract()) == []
    assert check_bpda(["adaptive"], Contract(bpda_steps=("quantize",))) == []
    flag, = check_bpda(["adaptive"], Contract(non_differentiable=("median", "quantize"), bpda_steps=("quantize",)))
    assert flag.code == "NON_DIFFERENTIABLE_WITHOUT_BPDA" and "median" in flag.message and "quantize" not in flag.message
    assert check_bpda(["gray-box"], Contract(non_differentiable=("median",))) == []


def test_large_eps_rule():
    assert is_large_eps("linf", 0.5, 64) and not is_large_eps("linf", 0.3, 64)
    assert is_large_eps("l2", 4.0, 64) and not is_large_eps("l2", 3.9, 64)
    assert is_large_eps("l1", 32, 64) and not is_large_eps("l1", 31, 64)
    rows = [_row("adaptive", "p", 0.3, eps=0.5), _row("adaptive", "q", 0.05, eps=0.5),
            _row("gray-box", "r", 0.9, eps=0.5), _row("adaptive", "s", 0.9, eps=0.1)]
    assert [f.attack for f in check_large_eps(rows, 64, "mad")] == ["p"]
    assert [f.attack for f in check_large_eps(rows, 64, "none")] == ["p", "r"]  # undefended: gray-box is white-box


# ----------------------------------------------------------------------------------------------
# randomness and EOT


def test_randomized_defense_without_eot_is_flagged(trained, tmp_path):
    model, x, y = trained
    rep = _ev(Noisy(model), (x, y), "fgsm-linf:eps=0.05", "adaptive", tmp_path / "a", repeats=2)
    assert "RANDOMIZED_WITHOUT_EOT" in rep.flag_codes()
    rep = _ev(Noisy(model), (x, y), "fgsm-linf:eps=0.05", "adaptive", tmp_path / "b", repeats=2, eot_samples=3)
    assert "RANDOMIZED_WITHOUT_EOT" not in rep.flag_codes()
    assert rep.row("fgsm-linf:eps=0.05", "adaptive")["samples_per_gradient"] == 3


def test_eot_rule_and_autoattack_advice():
    rows = [_row("adaptive", "autoattack-rand:eps=0.1", 0.5, name="autoattack-rand", samples_per_gradient=20),
            _row("adaptive", "autoattack-standard:eps=0.1", 0.5, name="autoattack-standard", samples_per_gradient=1),
            _row("gray-box", "fgsm-linf:eps=0.1", 0.5, samples_per_gradient=1)]
    codes = [(f.code, f.attack) for f in check_eot(rows, randomized=True)]
    assert codes == [("RANDOMIZED_WITHOUT_EOT", "autoattack-standard:eps=0.1"),
                     ("AUTOATTACK_STANDARD_ON_RANDOMIZED", "autoattack-standard:eps=0.1")]
    assert check_eot(rows, randomized=False) == []


def test_mad_forward_counts_as_eot(trained, tmp_path):
    model, x, y = trained
    rep = _ev(build_defense("mad:cell=2,rate=0.25,n_grad=1", model), (x[:16], y[:16]), "fgsm-linf:eps=0.05",
              "adaptive", tmp_path / "one", repeats=2)
    assert "RANDOMIZED_WITHOUT_EOT" in rep.flag_codes()  # one mask per gradient is no expectation
    rep = _ev(build_defense("mad:cell=2,rate=0.25,n_grad=4", model), (x[:16], y[:16]), "fgsm-linf:eps=0.05",
              "adaptive", tmp_path / "four", repeats=2)
    assert "RANDOMIZED_WITHOUT_EOT" not in rep.flag_codes()


def test_undeclared_randomness(trained, tmp_path):
    model, x, y = trained
    rep = _ev(Noisy(model, randomized=False), (x[:16], y[:16]), "fgsm-linf:eps=0.05", "adaptive", tmp_path / "u")
    assert "UNDECLARED_RANDOMNESS" in rep.flag_codes()
    assert check_randomness(declared=True, observed=True) == []
    assert check_randomness(declared=False, observed=False) == []


def test_gray_box_only_evaluation_of_a_defense(trained, tmp_path):
    model, x, y = trained
    rep = _ev(build_defense("mad:cell=2,rate=0.25,n_grad=2", model), (x[:16], y[:16]), "fgsm-linf:eps=0.05",
              "gray-box", tmp_path, repeats=1)
    assert "GRAY_BOX_ONLY" in rep.flag_codes()
    assert check_gray_box_only(["gray-box"], "none") == []
    assert check_gray_box_only(["gray-box", "adaptive"], "mad") == []


def test_non_differentiable_defense_needs_bpda(trained, tmp_path):
    model, x, y = trained
    rep = _ev(Quantized(model, non_differentiable=True), (x[:16], y[:16]), "fgsm-linf:eps=0.05",
              "adaptive", tmp_path / "no")
    assert "NON_DIFFERENTIABLE_WITHOUT_BPDA" in rep.flag_codes()
    rep = _ev(QuantizedBPDA(model, non_differentiable=True), (x[:16], y[:16]),
              "bim-linf:eps=0.2;bim-linf:eps=0.5", "adaptive", tmp_path / "yes")
    codes = rep.flag_codes()
    assert "NON_DIFFERENTIABLE_WITHOUT_BPDA" not in codes and "ZERO_OR_NONFINITE_GRADIENTS" not in codes
    assert rep.summary["targets"]["adaptive"]["bpda"] == "quantize"
    assert rep.summary["targets"]["adaptive"]["non_differentiable"] == ["quantize"]
    assert rep.row("bim-linf:eps=0.5", "adaptive")["robust_acc"] < 0.1  # BPDA gets through the quantizer


# ----------------------------------------------------------------------------------------------
# probabilities passed as logits


def test_probabilities_as_logits(trained, tmp_path):
    model, x, y = trained
    assert looks_like_probabilities(torch.softmax(torch.randn(4, 10), 1))
    assert not looks_like_probabilities(torch.randn(4, 10))
    assert not looks_like_probabilities(torch.log_softmax(torch.randn(4, 10), 1))
    assert output_stats(torch.softmax(torch.randn(4, 10), 1))["probabilities"]
    probs = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    rep = _ev(probs, (x[:16], y[:16]), "fgsm-linf:eps=0.05", "gray-box", tmp_path / "p")
    flag = next(f for f in rep.flags if f.code == "PROBABILITIES_AS_LOGITS")
    assert flag.severity == "error" and "base" in flag.message
    rep = _ev(NoDefense(model), (x[:16], y[:16]), "fgsm-linf:eps=0.05", "gray-box", tmp_path / "l")
    assert "PROBABILITIES_AS_LOGITS" not in rep.flag_codes()
    assert check_outputs({"target:adaptive": {"probabilities": True}})[0].threat == "adaptive"


# ----------------------------------------------------------------------------------------------
# violations, completeness, ordering


def test_violation_and_completeness_rules():
    rows = [_row("gray-box", "a", 0.5, n_eps_violations=3, n_range_violations=0, max_norm=0.2),
            _row("gray-box", "b", 0.5, n_eps_violations=0, n_range_violations=2, max_norm=None),
            _row("gray-box", "c", 0.5, n_eps_violations=0, n_range_violations=0)]
    assert [(f.code, f.attack) for f in check_violations(rows)] == [
        ("PERTURBATION_EXCEEDS_EPS", "a"), ("PIXEL_OUT_OF_RANGE", "b")]
    assert [f.attack for f in check_complete(rows + [{**rows[2], "attack": "d", "n": 99}], 100)] == ["d"]


def test_run_checks_orders_by_severity():
    rows = [_row("gray-box", "a", 0.5, n_eps_violations=1, samples_per_gradient=1)]
    diags = {"gradients:gray-box": {"n": 10, "zero": 2, "nonfinite": 0, "frac_zero": 0.2},
             "randomness": {"observed": True}}
    flags = run_checks(rows, diags, threats=["gray-box"], defense_name="mad", contract=Contract(), dim=64, n=100)
    sev = [f.severity for f in flags]
    assert sev == sorted(sev, key=["error", "warning", "info"].index)
    assert {f.code for f in flags} == {"PERTURBATION_EXCEEDS_EPS", "GRAY_BOX_ONLY", "UNDECLARED_RANDOMNESS",
                                       "ZERO_OR_NONFINITE_GRADIENTS"}
    assert isinstance(flags[0], Flag) and flags[0].to_dict()["code"] == "PERTURBATION_EXCEEDS_EPS"
