"""The attack-budget check: budget parameters, doubling, and the comparison that flags a short attack."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import train_digits_linear
from maskdefense.attacks import list_attacks, parse_attack_spec
from maskdefense.attacks.base import attack_def
from maskdefense.attacks.spec import SpecError
from maskdefense.defenses.mad import MADClassifier
from maskdefense.eval import budget_check, compare_budgets, evaluate, strongest_per_attack

# the parameters of every attack that count iterations, restarts, searches, queries or EOT samples
COUNTS = {"steps", "binary_search_steps", "n_iter", "n_restarts", "n_queries", "eot_iter"}


@pytest.mark.parametrize("name", [n for n in list_attacks() if not n.startswith("test-")])
def test_every_count_is_a_budget_parameter_and_doubles(name):
    d = attack_def(name)
    assert {p.name for p in d.params if p.budget} == {p.name for p in d.params if p.name in COUNTS}
    spec = parse_attack_spec(f"{name}:eps=0.1")
    doubled = spec.with_budget(2)
    assert doubled.budget == {k: 2 * v for k, v in spec.budget.items()}
    # nothing else changes, except a step size derived from the number of steps
    derived = {"stepsize"} if attack_def(name).backend == "maskdefense" else set()  # MI-/DI-FGSM: eps / steps
    for k, v in spec.params.items():
        if k not in spec.budget and k not in derived:
            assert doubled.params[k] == v, (name, k)
    if "stepsize" in derived:
        assert doubled.params["stepsize"] == pytest.approx(spec.params["stepsize"] / 2)
    assert doubled.label.endswith("(budget x2)") and doubled.paper is None
    assert (doubled.key == spec.key) == (not spec.budget)


def test_with_budget_keeps_overridden_values_and_refuses_bad_factors():
    spec = parse_attack_spec("cw-l2:eps=1,steps=100,binary_search_steps=5")
    assert spec.with_budget(2).budget == {"steps": 200, "binary_search_steps": 10}
    assert spec.with_budget(1).key == spec.key
    for bad in (0, 1.5, True):
        with pytest.raises(SpecError, match="positive int"):
            spec.with_budget(bad)


def test_strongest_per_attack_keeps_the_largest_eps_of_each_attack():
    specs = [parse_attack_spec(t) for t in ("pgd-linf:eps=0.01", "fgsm-l2:eps=0.4", "pgd-linf:eps=0.02",
                                            "fgsm-l2:eps=0.3")]
    assert [s.text for s in strongest_per_attack(specs)] == ["pgd-linf:eps=0.02", "fgsm-l2:eps=0.4"]


def test_compare_budgets_by_hand():
    spec = parse_attack_spec("pgd-linf:eps=0.1,steps=10")
    big = spec.with_budget(2)
    base = [{"threat": "gray-box", "attack": spec.key, "label": "PGD", "defense_acc": 0.5, "n_correct": 100,
             "samples_per_gradient": 1, "robust_acc": 0.4}]
    moved = [{"threat": "gray-box", "attack": big.key, "defense_acc": 0.44, "samples_per_gradient": 1,
              "robust_acc": 0.35}]
    still = [{**moved[0], "defense_acc": 0.46}]
    (c,) = compare_budgets(base, moved, {big.key: spec}, factor=2)
    # noise = sqrt(0.5 * 0.5 / 100) = 0.05; the move 0.06 is larger
    assert c["noise"] == pytest.approx(0.05) and c["delta"] == pytest.approx(-0.06) and not c["enough"]
    assert c["budget"] == {"steps": 10} and c["budget_scaled"] == {"steps": 20}
    assert compare_budgets(base, still, {big.key: spec}, factor=2)[0]["enough"]
    # at 0% or 100% the noise is one image, not zero
    zero = [{**base[0], "defense_acc": 0.0}]
    assert compare_budgets(zero, [{**moved[0], "defense_acc": 0.0}], {big.key: spec}, factor=2)[0]["noise"] == 0.01
    # rows of another threat or another attack are not paired
    assert compare_budgets(base, [{**moved[0], "threat": "black-box"}], {big.key: spec}, factor=2) == []


@pytest.fixture(scope="module")
def linear():
    return train_digits_linear(120)


def _run(model, x, y, tmp_path, attack):
    base = evaluate(model, (x, y), attack, "gray-box", out_dir=tmp_path / "base", progress=False, sanity=None)
    return budget_check(model, (x, y), base, [attack], out_dir=tmp_path, progress=False)


def test_budget_check_flags_a_short_attack_and_passes_a_converged_one(linear, tmp_path):
    model, x, y = linear
    # 2 BIM steps of 2.5% of eps cover 5% of the eps ball: doubling the steps doubles the perturbation
    short, flags = _run(model, x, y, tmp_path / "short", "bim-linf:eps=0.3,steps=2")
    assert len(short) == 1 and short[0]["delta"] < -short[0]["noise"]
    assert [f.code for f in flags] == ["BUDGET_NOT_ENOUGH"]
    # 100 steps reach the corner of the ball a linear model's gradient points to: 200 change nothing
    done, flags = _run(model, x, y, tmp_path / "done", "bim-linf:eps=0.3,steps=100")
    assert done[0]["enough"] and abs(done[0]["delta"]) <= done[0]["noise"] and not flags
    assert (tmp_path / "done" / "budget-x2" / "run.json").exists()


def test_budget_check_doubles_eot_for_a_randomized_defense(linear, tmp_path):
    model, x, y = linear
    defense = MADClassifier(model, 2, 0.5, n=3, n_grad=2)
    x4 = x[:40]
    base = evaluate(defense, (x4, y[:40]), "fgsm-linf:eps=0.2;pgd-linf:eps=0.2,steps=3", "adaptive",
                    out_dir=tmp_path / "base", progress=False, sanity=None)
    rows, _ = budget_check(defense, (x4, y[:40]), base, ["fgsm-linf:eps=0.2", "pgd-linf:eps=0.2,steps=3"],
                           out_dir=tmp_path, progress=False)
    by = {r["label"]: r for r in rows}
    assert by["fgsm-linf:eps=0.2"]["samples_per_gradient"] == [2, 4] and by["fgsm-linf:eps=0.2"]["budget"] == {}
    assert by["pgd-linf:eps=0.2,steps=3"]["budget_scaled"] == {"steps": 6}
    assert (tmp_path / "budget-x2-eot" / "run.json").exists() and (tmp_path / "budget-x2" / "run.json").exists()


def test_evaluate_command_budget_check(tmp_path, capsys):
    from maskdefense.checkpoint import save_checkpoint
    from maskdefense.cli import main
    from maskdefense.models import create_model

    from maskdefense.data import load_dataset

    torch.manual_seed(0)
    model, train = create_model("digits_cnn", width=4), load_dataset("digits", "train")
    opt = torch.optim.Adam(model.parameters(), 0.01)
    for _ in range(60):  # a few seconds: right on most test digits, so the defense accuracies are defined
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(train.images), train.labels).backward()
        opt.step()
    ck = tmp_path / "model.safetensors"
    save_checkpoint(model.eval(), ck, {"dataset": "digits"})
    out = tmp_path / "ev"
    args = ["evaluate", "--checkpoint", str(ck), "--attacks", "fgsm-linf:eps=0.1;pgd-l2:eps=0.3,steps=2;"
            "pgd-l2:eps=0.5,steps=2", "--defense", "mad:cell=2,rate=0.5,n=3,n_grad=2", "--threat", "adaptive",
            "--n", "12", "--sanity", "none", "--out", str(out), "--no-progress", "--budget-check"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "budget check" in text and "budget.json" in text
    rows = json.loads((out / "budget.json").read_text())["rows"]
    # the largest-eps PGD row with 4 steps, and FGSM with twice the EOT samples (4 instead of 2)
    assert sorted((r["label"], r["samples_per_gradient"][1]) for r in rows) == [
        ("fgsm-linf:eps=0.1", 4), ("pgd-l2:eps=0.5,steps=2", 4)]
    assert (out / "budget-x2" / "run.json").exists() and (out / "budget-x2-eot" / "run.json").exists()


def test_worst_per_norm_by_hand():
    from maskdefense.eval.budget import worst_per_norm

    def row(attack, norm, eps, acc, threat="adaptive", sanity=False):
        return {"attack": attack, "norm": norm, "eps": eps, "defense_acc": acc, "threat": threat, "sanity": sanity}

    rows = [row("pgd-linf", "linf", 0.3, 0.02), row("apgd", "linf", 0.3, 0.01), row("square", "linf", 0.3, 0.5),
            row("pgd-l2", "l2", 2.0, 0.10), row("cw", "l2", 2.0, 0.10),  # a tie: the first
            row("pgd-linf-big", "linf", 0.5, 0.0, sanity=True), row("fgsm", "linf", 0.3, 0.0, threat="gray-box"),
            row("none", "l2", 1.0, None)]
    assert worst_per_norm(rows) == {"apgd", "pgd-l2"}
    assert worst_per_norm(rows, "gray-box") == {"fgsm"}


def test_budget_check_rechecks_only_the_chosen_attacks_adaptively(linear, tmp_path):
    model, x, y = linear
    defense = MADClassifier(model, 2, 0.5, n=3, n_grad=2)
    data = (x[:40], y[:40])
    specs = ["fgsm-linf:eps=0.2", "pgd-linf:eps=0.2,steps=3", "pgd-l2:eps=1.0,steps=3"]
    base = evaluate(defense, data, ";".join(specs), "gray-box,adaptive", out_dir=tmp_path / "base", progress=False,
                    sanity=None)
    keys = [parse_attack_spec(s).key for s in specs]
    rows, _ = budget_check(defense, data, base, specs, out_dir=tmp_path, progress=False,
                           adaptive_keys={keys[0], keys[1]})
    seen = {(r["attack"], r["threat"]) for r in rows}
    # every attack with a budget under the oblivious threat; adaptively only the chosen (FGSM: its EOT samples)
    assert seen == {(keys[1], "gray-box"), (keys[2], "gray-box"), (keys[0], "adaptive"), (keys[1], "adaptive")}
    by = {(r["attack"], r["threat"]): r for r in rows}
    assert by[(keys[1], "adaptive")]["samples_per_gradient"] == [2, 4]
    assert (tmp_path / "budget-x2-adaptive" / "run.json").exists() and not (tmp_path / "budget-x2-eot").exists()
