"""Attack registry, spec syntax, suites, every attack on a tiny model, MI-FGSM/DI against Foolbox,
EOT and BPDA wrappers."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import nn

from maskdefense.attacks import (
    ATTACKS, BPDA, EOT, SUITES, DiverseInputModel, SpecError, attack_def, bpda, diverse_input,
    get_suite, list_attacks, mi_fgsm, parse_attack_spec, parse_attacks, parse_value, run_attack,
)
from maskdefense.eval import verify_perturbation
from maskdefense.registry import UnknownNameError

import foolbox as fb  # noqa: E402  (after maskdefense.attacks, which silences Foolbox's import warning)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.rand(12, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


# ----------------------------------------------------------------------------------------------
# spec syntax


def test_parse_value_types():
    assert parse_value("true") is True and parse_value("False") is False and parse_value("none") is None
    assert parse_value("40") == 40 and isinstance(parse_value("40"), int)
    assert parse_value("1e-3") == 0.001 and parse_value(".5") == 0.5
    assert parse_value("8/255") == pytest.approx(8 / 255)
    assert parse_value("inf") == math.inf
    assert parse_value("EN") == "EN"
    with pytest.raises(SpecError):
        parse_value("1/0")


def test_parse_spec_fills_library_defaults():
    s = parse_attack_spec("pgd-linf:eps=0.01,steps=40")
    assert s.name == "pgd-linf" and s.eps == 0.01 and s.norm == "linf" and s.family == "PGD"
    assert s.params["steps"] == 40
    sig = inspect.signature(fb.attacks.LinfProjectedGradientDescentAttack.__init__).parameters
    for k in ("rel_stepsize", "abs_stepsize", "random_start"):
        assert s.params[k] == sig[k].default  # Foolbox's own default, recorded
    assert s.given == ("eps", "steps")
    assert s.text == "pgd-linf:eps=0.01,steps=40"
    assert s.key == ("pgd-linf:abs_stepsize=none,eps=0.01,random_start=true,"
                     "rel_stepsize=0.03333333333333333,steps=40")
    assert s.settings["library"].startswith("foolbox")
    d = s.to_dict()
    assert d["implementation"] == "foolbox.attacks.LinfProjectedGradientDescentAttack"
    assert d["params"]["steps"] == 40 and d["kind"] == "fixed-epsilon"


def test_cw_and_ead_defaults_and_aliases():
    cw = parse_attack_spec("cw-l2:eps=1.5,kappa=10")
    assert cw.params == {"eps": 1.5, "binary_search_steps": 9, "steps": 10000, "stepsize": 0.01,
                         "confidence": 10.0, "initial_const": 0.001, "abort_early": True}
    ead = parse_attack_spec("ead:eps=20,beta=0.1,decision_rule=l1")
    assert ead.params["regularization"] == 0.1 and ead.params["decision_rule"] == "L1" and ead.norm == "l1"
    assert parse_attack_spec("cw-l2:eps=inf").eps == math.inf  # unbounded minimum-norm attack


def test_mi_fgsm_and_autoattack_resolution():
    s = parse_attack_spec("mi-fgsm:eps=8/255")
    assert s.params["mu"] == 1.0 and s.params["steps"] == 10
    assert s.params["stepsize"] == pytest.approx(8 / 255 / 10)  # Dong et al.: alpha = eps / T
    assert parse_attack_spec("mi-fgsm:eps=0.1,momentum=0.5").params["mu"] == 0.5
    di = parse_attack_spec("di-mi-fgsm:eps=0.1")
    assert di.params["diversity_prob"] == 0.5 and di.params["mu"] == 1.0
    aa = parse_attack_spec("autoattack-rand:eps=0.3")
    assert aa.params["eot_iter"] == 20 and aa.params["n_iter"] == 100 and aa.norm == "linf"
    assert aa.settings["attacks_to_run"] == ["apgd-ce", "apgd-dlr"]
    st = parse_attack_spec("autoattack-standard:eps=0.5,norm=l2")
    assert st.norm == "l2" and st.params["norm"] == "L2" and st.params["n_queries"] == 5000
    assert st.settings["attacks_to_run"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    # a changed eps recomputes derived defaults
    assert s.with_params(eps=0.1).params["stepsize"] == pytest.approx(0.01)


@pytest.mark.parametrize("text, match", [
    ("pgd-linf:steps=40", "missing required parameter 'eps'"),
    ("pgd-linf:eps=0.1,stepz=3", "unknown parameter 'stepz'.*Did you mean steps"),
    ("pgd-linf:eps=0.1,steps=1.5", "must be an integer"),
    ("pgd-linf:eps=0.1,steps=0", "must be >= 1"),
    ("pgd-linf:eps=-0.1", "must be >= 0"),
    ("pgd-linf:eps=abc", "must be a number"),
    ("pgd-linf:eps=inf", "must be finite"),
    ("fgsm-l1:eps=1,random_start=maybe", "true or false"),
    ("ead:eps=1,decision_rule=L2", "one of EN, L1"),
    ("pgd-linf:eps=0.1,eps=0.2", "given twice"),
    ("pgd-linf:eps=0.1,,steps=2", "empty parameter"),
    ("pgd-linf:eps", "expected key=value"),
    ("cw-l2:eps=1,kappa=1,confidence=2", "given twice"),
])
def test_bad_specs_give_clear_errors(text, match):
    with pytest.raises(SpecError, match=match):
        parse_attack_spec(text)


def test_unknown_attack_name_suggests():
    with pytest.raises(UnknownNameError, match="pgd-linf"):
        parse_attack_spec("pgd-lnf:eps=0.1")
    with pytest.raises(SpecError, match="unknown attack suite"):
        parse_attacks("suite:mad-table9")


def test_parse_attacks_lists_overrides_and_dedup():
    specs = parse_attacks("fgsm-l1:eps=10; pgd-linf:eps=0.3\ncw-l2:eps=1.5;fgsm-l1:eps=10.0")
    assert [s.name for s in specs] == ["fgsm-l1", "pgd-linf", "cw-l2"]
    specs = parse_attacks("cw-l2:eps=1.5;ead:eps=10", overrides="cw-l2:steps=100,binary_search_steps=2")
    assert specs[0].params["steps"] == 100 and specs[0].params["binary_search_steps"] == 2
    assert specs[1].params["steps"] == 10000
    assert parse_attacks(["pgd-l2:eps=1", parse_attack_spec("bim-l2:eps=1")])[1].name == "bim-l2"
    assert len({parse_attack_spec("pgd-l2:eps=1"), parse_attack_spec("pgd-l2:eps=1.0")}) == 1  # hashable
    assert parse_attacks("cw-l2:eps=1", overrides={"cw-l2": {"kappa": 5}})[0].params["confidence"] == 5.0
    with pytest.raises(SpecError, match="unknown parameter 'stepz'"):
        parse_attacks("cw-l2:eps=1", overrides="cw-l2:stepz=3")
    with pytest.raises(SpecError, match="must be an integer"):
        parse_attacks("cw-l2:eps=1", overrides="ead:steps=many")
    with pytest.raises(SpecError):
        parse_attacks("")


@pytest.mark.parametrize("name, dataset", [("mad-table5-mnist", "mnist"), ("mad-table4-cifar10", "cifar10"),
                                           ("mad-table5-svhn", "svhn")])
def test_mad_suites_expand_to_the_papers_rows(name, dataset):
    specs = parse_attacks(f"suite:{name}")
    suite = get_suite(name)
    # 23 attack rows + the Benign row = the paper's 24 rows
    assert len(specs) == 23 and len(suite.rows) + 1 == 24 and suite.paper_benign is not None
    assert suite.dataset == dataset
    assert [s.name for s in specs].count("cw-l2") == 1
    for fam in ("fgsm", "bim", "pgd"):
        for norm in ("l1", "l2", "linf"):
            assert sum(s.name == f"{fam}-{norm}" for s in specs) == 2
    assert sum(s.name.startswith("deepfool") for s in specs) == 4
    for s in specs:
        p = s.paper
        assert p is not None and abs(p["defense"] - p["attack"] - p["improvement"]) < 2e-4
        assert s.params["steps"] == 10000 if s.name == "cw-l2" else True  # Foolbox defaults kept


def test_mnist_suite_epsilons_and_numbers():
    specs = {s.label: s for s in parse_attacks("suite:mad-table5-mnist")}
    assert specs["FGSM L1 eps=10"].eps == 10 and specs["FGSM L1 eps=10"].paper["attack"] == 0.4412
    assert specs["CW L2 eps=1.5"].paper["defense"] == 0.9339
    assert specs["DeepFool Linf eps=0.07"].name == "deepfool-linf"
    assert specs["PGD L2 eps=0.4"].paper == {"attack": 0.0126, "defense": 0.4885, "improvement": 0.4759}
    assert {"sfm-transfer", "sfm-graybox"} <= set(SUITES)
    assert len(parse_attacks("suite:sfm-transfer")) == 6


def test_registry_create_returns_callable_attack(tiny):
    model, x, y = tiny
    atk = ATTACKS.create("fgsm-linf", eps=0.1)
    assert atk.spec == parse_attack_spec("fgsm-linf:eps=0.1")
    x_adv = atk(model, x, y, generator=torch.Generator().manual_seed(0))
    assert verify_perturbation(x, x_adv, "linf", 0.1).valid.all()
    assert attack_def("EAD").family == "EAD"


# ----------------------------------------------------------------------------------------------
# every attack on a tiny model; the harness verifies the output

SMALL = {
    "fgsm-l1": "eps=4", "fgsm-l2": "eps=1", "fgsm-linf": "eps=0.1",
    "bim-l1": "eps=4,steps=3", "bim-l2": "eps=1,steps=3", "bim-linf": "eps=0.1,steps=3",
    "pgd-l1": "eps=4,steps=3,abs_stepsize=2", "pgd-l2": "eps=1,steps=3,abs_stepsize=0.5", "pgd-linf": "eps=0.1,steps=3,abs_stepsize=0.05",
    "cw-l2": "eps=1,steps=10,binary_search_steps=2", "deepfool-l2": "eps=1,steps=5",
    "deepfool-linf": "eps=0.1,steps=5", "ead": "eps=4,steps=10,binary_search_steps=2",
    "mi-fgsm": "eps=0.1,steps=3", "mi-fgsm-l2": "eps=1,steps=3", "di-fgsm": "eps=0.1,steps=3",
    "di-mi-fgsm": "eps=0.1,steps=3",
    "autoattack-standard": "eps=0.1,n_iter=3,n_queries=10",
    "autoattack-rand": "eps=0.1,n_iter=3,eot_iter=2",
}


def test_every_registered_attack_is_tested():
    assert set(SMALL) == {n for n in list_attacks() if not n.startswith("test-")}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_each_attack_runs_and_verifies(name, tiny):
    model, x, y = tiny
    spec = parse_attack_spec(f"{name}:{SMALL[name]}")
    state = torch.random.get_rng_state()
    x_adv = run_attack(spec, model, x, y, torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's global RNG is untouched
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    ver = verify_perturbation(x, x_adv, spec.norm, spec.eps)
    assert bool(ver.valid.all()), (name, ver.norms[spec.norm].max().item())
    # an attack should fool the tiny linear model on at least one image
    with torch.no_grad():
        fooled = (model(x_adv).argmax(1) != y).sum().item()
    if spec.kind != "minimization" or name.startswith("deepfool"):
        assert fooled > 0, name


def test_autoattack_leaves_the_trace_function_alone(tiny):
    import sys

    model, x, y = tiny
    calls = []

    def tracer(frame, event, arg):
        calls.append(event)
        return None

    sys.settrace(tracer)
    try:
        run_attack(f"autoattack-rand:{SMALL['autoattack-rand']}", model, x, y, torch.Generator().manual_seed(0))
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(None)


def test_randomized_attack_is_reproducible(tiny):
    model, x, y = tiny
    spec = parse_attack_spec("pgd-linf:eps=0.1,steps=2")
    a = run_attack(spec, model, x, y, torch.Generator().manual_seed(5))
    b = run_attack(spec, model, x, y, torch.Generator().manual_seed(5))
    c = run_attack(spec, model, x, y, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_attack_inputs_are_validated(tiny):
    model, x, y = tiny
    from maskdefense.validation import InputError

    with pytest.raises(InputError):
        run_attack("fgsm-linf:eps=0.1", model, x * 2, y)
    with pytest.raises(InputError):
        run_attack("fgsm-linf:eps=0.1", model, x, y[:3])


# ----------------------------------------------------------------------------------------------
# MI-FGSM and DI (ours) against Foolbox


def _fb(attack, model, x, y, eps):
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device="cpu")
    _, clipped, _ = attack(fmodel, x, fb.criteria.Misclassification(y), epsilons=eps)
    return clipped


def test_mi_fgsm_without_momentum_equals_foolbox_bim(tiny):
    model, x, y = tiny
    eps, step = 0.1, 0.02
    ours = mi_fgsm(model, x, y, eps=eps, steps=7, stepsize=step, mu=0.0)
    ref = _fb(fb.attacks.LinfBasicIterativeAttack(abs_stepsize=step, steps=7), model, x, y, eps)
    assert torch.allclose(ours, ref, atol=1e-6)
    ours2 = mi_fgsm(model, x, y, eps=1.0, steps=7, stepsize=0.3, mu=0.0, norm="l2")
    ref2 = _fb(fb.attacks.L2BasicIterativeAttack(abs_stepsize=0.3, steps=7), model, x, y, 1.0)
    assert torch.allclose(ours2, ref2, atol=1e-5)


def test_mi_fgsm_momentum_path_matches_foolbox_variant(tiny):
    # Foolbox's MI-FGSM accumulates sign(grad) (Linf) / grad/|grad|_2 (L2); ours must match it exactly
    # with the same normalization, and differ from it with Dong et al.'s L1 normalization.
    model, x, y = tiny
    ours = mi_fgsm(model, x, y, eps=0.1, steps=6, stepsize=0.02, mu=1.0, grad_norm="sign")
    ref = _fb(fb.attacks.LinfMomentumIterativeFastGradientMethod(abs_stepsize=0.02, steps=6, momentum=1.0),
              model, x, y, 0.1)
    assert torch.allclose(ours, ref, atol=1e-6)
    ours2 = mi_fgsm(model, x, y, eps=1.0, steps=6, stepsize=0.3, mu=0.8, norm="l2", grad_norm="l2")
    ref2 = _fb(fb.attacks.L2MomentumIterativeFastGradientMethod(abs_stepsize=0.3, steps=6, momentum=0.8),
               model, x, y, 1.0)
    assert torch.allclose(ours2, ref2, atol=1e-5)
    dong = mi_fgsm(model, x, y, eps=0.1, steps=6, stepsize=0.02, mu=1.0)
    assert not torch.allclose(dong, ref, atol=1e-6)


def test_mi_fgsm_uses_l1_normalized_momentum():
    # Two steps by hand on a linear model: g1 = d1/|d1|_1, g2 = mu*g1 + d2/|d2|_1.
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(2, 1, 2, 2) * 0.5 + 0.25
    y = torch.tensor([0, 1])
    eps, a, mu = 0.2, 0.05, 0.7
    out = mi_fgsm(model, x, y, eps=eps, steps=2, stepsize=a, mu=mu)

    def grad(z):
        z = z.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(z), y, reduction="sum").backward()
        return z.grad

    d1 = grad(x)
    g = d1 / d1.flatten(1).abs().sum(1).view(-1, 1, 1, 1)
    x1 = (x + (a * g.sign())).clamp(0, 1)
    d2 = grad(x1)
    g = mu * g + d2 / d2.flatten(1).abs().sum(1).view(-1, 1, 1, 1)
    x2 = (x + (x1 + a * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
    assert torch.allclose(out, x2, atol=1e-7)


def test_diverse_input():
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    assert diverse_input(x, p=0.0) is x
    g = torch.Generator().manual_seed(0)
    out = diverse_input(x, p=1.0, resize_rate=0.9, generator=g)
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(out, diverse_input(x, p=1.0, resize_rate=0.9, generator=torch.Generator().manual_seed(0)))
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    m = DiverseInputModel(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), p=1.0)
    assert m(x).shape == (3, 10)


# ----------------------------------------------------------------------------------------------
# EOT and BPDA


class _Cycling(nn.Module):
    """A 'randomized' model that returns a fixed sequence of outputs, one per call."""

    def __init__(self, shifts):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.shifts = shifts
        self.calls = 0

    def forward(self, x):
        s = self.shifts[self.calls % len(self.shifts)]
        self.calls += 1
        return self.lin(x.flatten(1)) * s


def test_eot_averages_fresh_samples():
    torch.manual_seed(0)
    shifts = [1.0, 2.0, -1.0]
    m = _Cycling(shifts)
    x = torch.rand(5, 1, 2, 2)
    with torch.no_grad():
        outs = [m.lin(x.flatten(1)) * s for s in shifts]
    e = EOT(m, 3)
    expect = torch.log(torch.stack([o.softmax(1) for o in outs]).mean(0))
    assert torch.allclose(e(x), expect, atol=1e-6)
    assert m.calls == 3
    # mean-of-logits reduction: the gradient is the average of the per-sample gradients
    m.calls = 0
    e2 = EOT(m, 3, reduction="logits")
    xg = x.clone().requires_grad_(True)
    e2(xg)[:, 0].sum().backward()
    w = m.lin.weight[0].detach()
    assert torch.allclose(xg.grad.flatten(1), (w * sum(shifts) / 3).expand(5, 4), atol=1e-6)
    with pytest.raises(ValueError):
        EOT(m, 0)


def test_bpda_identity_and_approximation():
    x = torch.rand(4, 1, 3, 3, requires_grad=True)
    out = bpda(torch.round, x)
    assert torch.equal(out, torch.round(x))
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # identity backward through round()
    x.grad = None
    out = bpda(torch.round, x, approx=lambda z: 2 * z)
    assert torch.equal(out, torch.round(x))
    out.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 2.0))


def test_bpda_makes_a_quantized_classifier_attackable():
    torch.manual_seed(0)
    clf = nn.Sequential(nn.Flatten(), nn.Linear(9, 3))
    x = torch.rand(4, 1, 3, 3)
    y = torch.tensor([0, 1, 2, 0])

    def quant(z):
        return torch.round(z * 4) / 4

    plain = nn.Sequential(_Lambda(quant), clf)
    wrapped = nn.Sequential(BPDA(quant), clf)
    for model, nonzero in ((plain, False), (wrapped, True)):
        xg = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xg), y).backward()
        assert bool(xg.grad.abs().sum() > 0) == nonzero
        assert torch.equal(plain(x), wrapped(x))


class _Lambda(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


def test_attack_leaves_parameter_gradients_untouched(tiny):
    from maskdefense.attacks import run_attack

    model, x, y = tiny
    model.zero_grad(set_to_none=True)
    run_attack("pgd-linf:eps=0.1,steps=3", model, x, y, torch.Generator().manual_seed(0))
    assert all(p.requires_grad for p in model.parameters())  # restored afterwards
    assert all(p.grad is None for p in model.parameters())  # and never accumulated
