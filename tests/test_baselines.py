"""MAD's comparison baselines (issue 14): the Parseval retraction, PCL's loss, randomized (denoised) smoothing's
vote and certificate, DnCNN, the denoiser trained through a frozen classifier, PGD adversarial training from its
preset, and the Table 6 study; each against a hand computation or the library's own output."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import beta, binom, binomtest, norm, spearmanr
from torch import nn

from maskdefense.checkpoint import load_components
from maskdefense.data import load_dataset
from maskdefense.defenses.base import ABSTAIN, contract_of

from maskdefense.defenses.registry import create_defense
from maskdefense.defenses.smoothing import (Smoothing, certify_from_counts, clopper_pearson_lower,
                                            predict_from_counts)
from maskdefense.models import create_model
from maskdefense.ops.vote import top_two_pvalue
from maskdefense.training.hooks import ParsevalRetraction
from maskdefense.training.loop import TrainConfig, Trainer, accuracy
from maskdefense.training.pcl import PrototypeConformity, pcl_terms
from maskdefense.training.presets import create_preset
from maskdefense.training.tasks import DenoiserTask, make_task, pgd_linf


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "val"), load_dataset("digits", "test")


# ---- Parseval networks ---------------------------------------------------------------------------------


def _gram_error(layer, hook):
    w = hook.scale(layer) * layer.weight.detach().flatten(1)
    return float(torch.linalg.matrix_norm(w @ w.t() - torch.eye(w.shape[0])))


@pytest.mark.parametrize("conv_scaling", [True, False])
@pytest.mark.parametrize("make", [lambda: nn.Linear(32, 8), lambda: nn.Conv2d(4, 6, 3),
                                  lambda: nn.Conv2d(4, 6, 3).to(memory_format=torch.channels_last)],
                         ids=["linear", "conv", "conv-channels-last"])
def test_parseval_retraction_moves_rows_towards_orthonormal(make, conv_scaling):
    torch.manual_seed(0)
    layer = make()
    with torch.no_grad():
        layer.weight.mul_(2.0)
    hook = ParsevalRetraction(0.01, conv_scaling=conv_scaling)
    contiguous = layer.weight.is_contiguous()
    w0 = layer.weight.detach().flatten(1).clone()
    errors = [_gram_error(layer, hook)]
    hook.retract(layer)
    s2 = hook.scale(layer) ** 2  # by hand: W <- (1 + beta) W - beta s^2 W W^T W
    assert torch.allclose(layer.weight.flatten(1), 1.01 * w0 - 0.01 * s2 * w0 @ w0.t() @ w0, atol=1e-6)
    for _ in range(200):
        hook.retract(layer)
        errors.append(_gram_error(layer, hook))
    assert errors[1] < errors[0] and errors[-1] < 0.05 * errors[0], errors[::50]
    assert hook.scale(layer) == (3.0 if conv_scaling and isinstance(layer, nn.Conv2d) else 1.0)
    assert layer.weight.is_contiguous() == contiguous  # a channels-last weight stays channels-last


def test_parseval_preset_task_retracts_after_every_step(digits):
    p = create_preset("parseval-cifar10-cpu")
    model = create_model("digits_cnn", width=8)
    task = make_task(model, p.task)
    (hook,) = task.hooks
    assert isinstance(hook, ParsevalRetraction) and hook.beta == 0.0003 and hook.conv_scaling
    calls = []
    task.hooks = [lambda t, phase: (calls.append(phase), hook(t, phase))]
    x, y = digits[0].images[:128], digits[0].labels[:128]
    # the preset's recipe: channels-last weights (a retraction through a view of them raised) and bf16 autocast
    assert p.channels_last and p.precision == "bf16"
    Trainer(task, (x, y), None, TrainConfig(epochs=1, batch_size=64, channels_last=True, precision="bf16"),
            progress=False, log=lambda s: None).fit()
    assert len(calls) == 2 and model.features[0].weight.is_contiguous(memory_format=torch.channels_last)


# ---- PCL -------------------------------------------------------------------------------------------------


def test_pcl_terms_on_a_hand_made_case():
    f = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([0, 1])
    centres = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    con = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    prox, conprox = pcl_terms(f, y, centres, con)
    assert float(prox) == pytest.approx((1 + 1) / 2)  # |(0,0)-(1,0)|^2, |(1,1)-(0,1)|^2
    assert float(conprox) == pytest.approx((8 + 2) / 2)  # |(0,0)-(2,2)|^2, |(1,1)-(0,0)|^2


def test_pcl_module_captures_features_and_steps_its_centres():
    model = nn.Sequential(nn.Identity(), nn.Linear(2, 2))
    pcl = PrototypeConformity(model, {"0": 2}, 2, weight_prox=2.0, weight_conprox=0.5, centre_lr=(0.1, 0.01))
    c, cc = pcl.centres("0")
    with torch.no_grad():
        c.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        cc.copy_(torch.tensor([[0.0, 0.0], [2.0, 2.0]]))
    x, y = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([0, 1])
    loss = pcl(x, model(x), y)
    assert float(loss.detach()) == pytest.approx(2.0 * 1 - 0.5 * 5)
    loss.backward()
    pcl.update_centres()
    # d prox / d c_y = 2 (c_y - f) / N; the step is lr * grad / weight: the unweighted term's gradient
    assert torch.allclose(c, torch.tensor([[1.0 - 0.1 * 1.0, 0.0], [0.0 - 0.1 * (-1.0), 1.0]]))
    # con-prox is pushed away: the step ascends the distance (loss has -weight * conprox)
    assert torch.allclose(cc, torch.tensor([[0.0 - 0.01 * 1.0, -0.01 * 1.0], [2.0 + 0.01 * 2.0, 2.0 + 0.01 * 2.0]]))
    assert c.grad is None and list(pcl.parameters()) == []  # the model's optimizer never sees the centres


def test_pcl_fine_tuning_keeps_the_classifier_and_saves_the_centres(digits, tmp_path):
    torch.manual_seed(0)
    model = create_model("digits_cnn", width=8)
    train, val, test = digits
    Trainer(model, train.tensors(), None, TrainConfig(epochs=2, batch_size=64, lr=3e-3), progress=False,
            log=lambda s: None).fit()  # the reference fine-tunes a softmax-trained network
    task = make_task(model, create_preset("pcl-digits").task)
    before = task.extra.centres("classifier.2")[0].detach().clone()
    Trainer(task, train.tensors(), val.tensors(), TrainConfig(epochs=2, batch_size=64), out_dir=tmp_path,
            progress=False, log=lambda s: None).fit()
    assert accuracy(model, *test.tensors()) > 0.8
    after = task.extra.centres("classifier.2")[0].detach()
    assert not torch.equal(before, after)
    extra = PrototypeConformity(create_model("digits_cnn", width=8), {"classifier.2": 128}, 10)
    nets, _ = load_components(tmp_path / "model.safetensors", {"model": create_model("digits_cnn", width=8),
                                                                "extra": extra})
    assert torch.equal(nets["extra"].centres("classifier.2")[0], after)


# ---- randomized smoothing ------------------------------------------------------------------------------


def test_top_two_pvalue_is_scipys_binomial_test():
    for a, b in [(60, 40), (90, 5), (7, 7), (3, 0), (51, 49)]:
        assert top_two_pvalue(np.array([a]), np.array([b]))[0] == pytest.approx(binomtest(a, a + b, 0.5).pvalue)


def test_smoothing_vote_abstains_when_the_test_fails():
    counts = torch.tensor([[60, 40, 0], [5, 90, 5], [0, 0, 0]])
    pred = predict_from_counts(counts, 0.001)
    # binomtest(60, 100) p = 0.057 > 0.001: abstain; 90 of 95: p ~ 1e-21: class 1; no votes: abstain
    assert pred.tolist() == [ABSTAIN, 1, ABSTAIN]
    assert predict_from_counts(counts[:1], 0.1).tolist() == [0]


def test_certified_radius_against_a_hand_computation():
    counts = torch.tensor([[990, 10], [3, 997], [520, 480]])
    selected = torch.tensor([0, 1, 0])
    pred, radius = certify_from_counts(selected, counts, 0.25, 0.001)
    # Clopper-Pearson: the one-sided lower bound p_L solves P(X >= k | n, p_L) = alpha
    for k, p_l in ((990, clopper_pearson_lower(990, 1000, 0.001)), (997, clopper_pearson_lower(997, 1000, 0.001))):
        assert binom.sf(k - 1, 1000, p_l) == pytest.approx(0.001, rel=1e-4)
    p_a = beta.ppf(0.001, 990, 11)
    assert float(radius[0]) == pytest.approx(0.25 * norm.ppf(p_a))
    assert float(radius[1]) == pytest.approx(0.25 * norm.ppf(beta.ppf(0.001, 997, 4)))
    assert pred.tolist() == [0, 1, ABSTAIN] and float(radius[2]) == 0.0  # 520 / 1000 cannot certify p_A > 1/2


class Const(nn.Module):
    """Always class ``k``, whatever the input (its logits depend on the input only to keep a gradient)."""

    def __init__(self, k, classes=3):
        super().__init__()
        self.k, self.classes = k, classes

    def forward(self, x):
        z = torch.zeros(x.shape[0], self.classes) + 0.0 * x.flatten(1).sum(1, keepdim=True)
        z[:, self.k] += 5.0
        return z


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = 0

    def forward(self, x):
        self.seen += x.shape[0]
        return x


def test_smoothing_predict_certify_forward_and_contract():
    denoiser = Counting()
    d = Smoothing(Const(2), 0.5, denoiser=denoiser, n=50, n0=10, n_grad=4, chunk_size=7).eval()
    x = torch.rand(3, 1, 4, 4)
    assert d.predict(x, generator=torch.Generator().manual_seed(0)).tolist() == [2, 2, 2]
    assert denoiser.seen == 150
    pred, radius = d.certify(x, n=200, generator=torch.Generator().manual_seed(0))
    assert pred.tolist() == [2, 2, 2]
    assert torch.allclose(radius, torch.full((3,), 0.5 * norm.ppf(beta.ppf(0.001, 200, 1)), dtype=torch.float64))
    x.requires_grad_(True)
    out = d(x)
    assert out.shape == (3, 3) and torch.allclose(out.exp().sum(1), torch.ones(3))
    out[:, 2].sum().backward()
    assert x.grad is not None
    c = contract_of(d)
    assert c.randomized and c.samples_per_forward == 4 and c.components == ("base", "denoiser")


def test_smoothing_results_do_not_depend_on_the_chunk_size():
    torch.manual_seed(0)
    base = create_model("digits_cnn", width=8).eval()
    x = load_dataset("digits", "test", limit=4).images
    counts = [Smoothing(base, 0.25, n=30, chunk_size=cs).vote_counts(x, generator=torch.Generator().manual_seed(1))
              for cs in (7, 1000)]
    assert torch.equal(counts[0], counts[1]) and counts[0].sum(1).tolist() == [30] * 4


def test_smoothing_from_its_spec(tmp_path):
    d = create_defense("smoothing:sigma=0.12,n=10,n_grad=2", Const(0))
    assert isinstance(d, Smoothing) and d.denoiser is None and d.config()["sigma"] == 0.12 and d.n == 10


# ---- DnCNN and its training through the frozen classifier -------------------------------------------


def test_dncnn_is_residual():
    net = create_model("dncnn", in_channels=3, input_size=8, width=8, depth=5)
    assert len([m for m in net.modules() if isinstance(m, nn.Conv2d)]) == 5
    x = torch.rand(2, 3, 8, 8)
    assert net(x).shape == x.shape
    with torch.no_grad():
        net.net[-1].weight.zero_()  # no noise estimate: the output is the input
    assert torch.equal(net(x), x)


def test_dncnn_default_is_the_papers_17_layers_of_64_channels():
    convs = [m for m in create_model("dncnn").modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 17 and [c.out_channels for c in convs] == [64] * 16 + [3]


@pytest.mark.parametrize("objective", ["stability", "mse"])
def test_denoiser_objectives_against_a_hand_computation(objective):
    torch.manual_seed(0)
    f = create_model("digits_cnn", width=8).eval()
    denoiser = create_model("dncnn", in_channels=1, input_size=8, width=8, depth=3)
    x = torch.rand(6, 1, 8, 8)
    wrong = (f(x).argmax(1) + 1) % 10  # the stability objective never reads the labels
    loss, _ = DenoiserTask(denoiser, f, 0.5, objective=objective).loss("train", x, wrong,
                                                                        torch.Generator().manual_seed(3))
    noisy = x + 0.5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))  # unclipped
    # Salman et al.: CE(f(D(x + noise)), argmax f(x)); the MSE objective: ||D(x + noise) - x||^2 per pixel
    want = (nn.functional.cross_entropy(f(denoiser(noisy)), f(x).argmax(1)) if objective == "stability"
            else (denoiser(noisy) - x).pow(2).mean())
    assert float(loss.detach()) == pytest.approx(float(want.detach()), rel=1e-5)


def test_denoiser_stability_training_moves_only_the_denoiser(digits):
    torch.manual_seed(0)
    f = create_model("digits_cnn", width=8).eval()
    denoiser = create_model("dncnn", in_channels=1, input_size=8, width=8, depth=3)
    frozen = {k: v.clone() for k, v in f.state_dict().items()}
    start = {k: v.clone() for k, v in denoiser.state_dict().items()}
    train, val, _ = digits
    Trainer(DenoiserTask(denoiser, f, 0.25), (train.images[:128], train.labels[:128]), None,
            TrainConfig(epochs=1, batch_size=64), progress=False, log=lambda s: None).fit()
    assert all(torch.equal(frozen[k], v) for k, v in f.state_dict().items())
    assert any(not torch.equal(start[k], v) for k, v in denoiser.state_dict().items())


# ---- PGD adversarial training ----------------------------------------------------------------------------


def test_pgd_at_from_its_preset_is_more_robust_than_plain_training(digits):
    train, val, test = digits
    spec = create_preset("pgdat-digits").task
    nets = {}
    for name, s in (("plain", None), ("pgd-at", spec)):
        torch.manual_seed(0)
        nets[name] = create_model("digits_cnn", width=8)
        Trainer(make_task(nets[name], s), train.tensors(), None, TrainConfig(epochs=4, batch_size=64, lr=3e-3),
                progress=False, log=lambda s: None).fit()
    x, y = test.tensors()

    def robust(m):
        m.eval()
        adv = pgd_linf(m, x, y, spec["eps"], spec["eps"] / 4, 10, torch.Generator().manual_seed(0))
        with torch.no_grad():
            return float((m(adv).argmax(1) == y).float().mean())

    assert robust(nets["pgd-at"]) > robust(nets["plain"]) + 0.15
    assert accuracy(nets["pgd-at"], x, y) > 0.8


def test_make_task_refuses_unknown_tasks_and_options():
    with pytest.raises(ValueError, match="unknown task"):
        make_task(nn.Linear(2, 2), {"name": "distillation"})
    with pytest.raises(ValueError, match="parseval"):
        make_task(nn.Linear(2, 2), {"name": "parseval", "gamma": 1})


# ---- the Table 6 study ---------------------------------------------------------------------------------


def test_table6_paper_numbers_agree_with_table4():
    from maskdefense.attacks import get_suite
    from maskdefense.papers.mad import BENIGN, SWEEP_ROWS, TABLE6, TABLE6_DEFENSES

    assert list(TABLE6) == list(SWEEP_ROWS) and all(list(r) == list(TABLE6_DEFENSES) for r in TABLE6.values())
    assert TABLE6["Benign"]["mad"] == BENIGN["cifar10"]
    for row in get_suite("mad-table4-cifar10").rows:  # MAD's column is Table 4's Defense column
        assert TABLE6[row.label]["mad"] == row.paper["defense"]


def test_mad_best_count_reads_every_defense():
    from maskdefense.experiments.mad.table6 import _best_count

    rows = [{"attack": "Benign"}, {"m": 0.8, "a": 0.5, "b": 0.7}, {"m": 0.6, "a": 0.9, "b": 0.1},
            {"m": 0.5, "a": 0.5, "b": None}, {"m": 0.4, "a": 0.4, "b": 0.3}]
    assert _best_count(rows, "m", ["a", "b"]) == (2, 3)


def test_mad_clear_count_against_two_standard_errors_by_hand():
    from maskdefense.experiments.mad.table6 import _clear_count

    def se2(p, m):  # two standard errors, Laplace's estimate of p
        q = (p * m + 1) / (m + 2)
        return q * (1 - q) / m

    rows = [{"attack": "Benign"},
            {"m": 0.9, "a": 0.5, "b": 0.6},  # MAD ahead of both by far
            {"m": 0.6, "a": 0.5, "b": 0.55},  # within the noise of 50 and 25 examples
            {"m": 0.3, "a": 0.9, "b": 0.2},  # a ahead of MAD
            {"m": 0.5, "a": None, "b": 0.1}]  # not compared
    sizes = {"m": 50, "a": 25, "b": 200}
    band = lambda m, x, kx: 2 * math.sqrt(se2(m, 50) + se2(x, sizes[kx]))  # noqa: E731
    assert 0.9 - 0.6 > band(0.9, 0.6, "b") and 0.9 - 0.5 > band(0.9, 0.5, "a")
    assert 0.6 - 0.5 < band(0.6, 0.5, "a") and 0.9 - 0.3 > band(0.3, 0.9, "a")
    assert _clear_count(rows, "m", ["a", "b"], sizes) == (1, 1, 3)
    # a MAD ahead by less than its noise is not counted: with 10x fewer examples the first row is within noise
    assert _clear_count(rows, "m", ["a", "b"], {"m": 5, "a": 3, "b": 20})[0] == 0
    assert _clear_count(rows, "m", ["a", "b"], {"m": None, "a": 25, "b": 200}) == (0, 0, 0)  # sizes unknown


@pytest.mark.slow
def test_table6_quick_runs_and_resumes(tmp_path):
    from maskdefense.cli import main

    out, runs = tmp_path / "t6", tmp_path / "runs"
    args = ["reproduce", "mad-table6", "--quick", "--runs-dir", str(runs), "--out", str(out)]
    assert main(args) == 0
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    assert rows[0]["attack"] == "Benign" and len(rows) == 9
    extra = rows[-2:]  # APGD-CE and PGD-CW: the adaptive runs and the white-box networks, not in Table 6
    rows = rows[:-2]
    assert [e["attack"].split()[0] for e in extra] == ["APGD-CE", "PGD-CW"]
    for e in extra:
        assert e["extra"] and "pgd-at" not in e  # not in the gray-box (paper's) table
        for name in ("magnet", "denoised-smoothing"):
            summary = {(q["label"], q["threat"]): q
                       for q in json.loads((out / f"{name}-adaptive" / "summary.json").read_text())["rows"]}
            assert e[f"{name}_adaptive"] == summary[(e["attack"], "adaptive")]["defense_acc"]
        for name in ("parseval", "pcl", "pgd-at"):
            summary = {q["label"]: q for q in json.loads((out / name / "summary.json").read_text())["rows"]}
            assert e[f"{name}_adaptive"] == summary[e["attack"]]["defense_acc"]
    assert {b["label"] for b in data["meta"]["budget_check"] if b["defense"] == "pcl"} >= {e["attack"] for e in extra}
    assert json.loads((out / "magnet-adaptive" / "run.json").read_text())["config"]["detector_weight"] == \
        [1.0, 10.0, 100.0]
    magnet_sanity = [q["label"] for q in json.loads((out / "magnet-adaptive" / "summary.json").read_text())["rows"]
                     if q["sanity"]]
    assert magnet_sanity and magnet_sanity[0].startswith("pgd-cw-linf:eps=0.5")  # a detector's sanity attack
    pgd = {q["label"]: q for q in json.loads((out / "pgd-at" / "summary.json").read_text())["rows"]}
    smooth = {(q["label"], q["threat"]): q
              for q in json.loads((out / "denoised-smoothing-adaptive" / "summary.json").read_text())["rows"]}
    for r in rows[1:]:
        assert r["pgd-at"] == pgd[r["attack"]]["defense_acc"] == r["pgd-at_adaptive"]  # white-box = gray-box
        assert r["denoised-smoothing_adaptive"] == smooth[(r["attack"], "adaptive")]["defense_acc"]
    meta = data["meta"]
    records = sorted(p.name for p in (out / "checkpoints").glob("*.json"))
    assert records == sorted(meta["training_records"]) and len(records) == 7
    assert sorted(r.rsplit("-", 1)[0] for r in records) == sorted(
        ["plain-digits-short", "dncnn-digits", "parseval-digits", "pcl-digits", "pgdat-digits", "magnet-ae1-digits",
         "magnet-ae2-digits"])
    assert {c: meta["checkpoints"][c]["preset"]["name"] for c in ("parseval", "pcl", "pgd-at")} == {
        "parseval": "parseval-digits", "pcl": "pcl-digits", "pgd-at": "pgdat-digits"}
    # the digits suite shares some labels with Table 6 (PGD Linf eps=0.015, ...): no CIFAR-10 paper numbers beside
    # them; the paper's own count is from its table (MAD best in 20 of its 23 rows)
    paper_keys = [f"paper_{c}" for c in ("magnet", "denoised-smoothing", "parseval", "pcl", "mad")]
    assert all(r[k] is None for r in rows for k in paper_keys)
    assert rows[0]["magnet_gray_sub"] == rows[0]["magnet_adaptive"] is not None  # Benign on the adaptive subset
    readme = (out / "README.md").read_text()
    assert "in the paper's Table 6, 20 of 23" in readme
    assert "MAD outperforms" in readme and "## The models" in readme and "ours PCL (white-box, n=20)" in readme
    assert "reconstruction error (p = 2), reconstruction error (p = 1)" in readme  # MagNet's detectors, stated
    # every white-box network and both adaptive runs have their budget rechecked
    assert {r["defense"] for r in meta["budget_check"]} == {"parseval", "pcl", "pgd-at", "magnet",
                                                             "denoised-smoothing"}
    mtime = (out / "attacks-base" / "records.jsonl").stat().st_mtime
    assert main(args) == 0  # resumes: nothing is attacked again
    assert (out / "attacks-base" / "records.jsonl").stat().st_mtime == mtime
    assert json.loads((out / "results.json").read_text())["rows"] == [*rows, *extra]
    assert math.isfinite(data["meta"]["eval_wall_time_s_total"])


def test_train_command_trains_a_presets_task(tmp_path, capsys):
    from maskdefense.checkpoint import read_metadata
    from maskdefense.cli import main

    out = tmp_path / "parseval"
    assert main(["train", "--preset", "parseval-digits", "--from-scratch", "--epochs", "1", "--out", str(out)]) == 0
    task = read_metadata(out / "model.safetensors")["training_key"]["task"]
    assert task == {"name": "parseval", "beta": 0.01, "conv_scaling": True}
    assert main(["train", "--preset", "dncnn-digits", "--out", str(tmp_path / "d")]) != 0
    assert "mad-table6" in capsys.readouterr().err


def test_table6_states_magnet_and_how_alike_its_js_detectors_are():
    from maskdefense.defenses.magnet import JensenShannon, MagNet
    from maskdefense.experiments.mad.table6 import _js_agreement, _magnet_text

    torch.manual_seed(0)
    f = nn.Sequential(nn.Flatten(), nn.Linear(12, 4)).eval()
    ae = nn.Sequential(nn.Conv2d(3, 3, 1), nn.Sigmoid()).eval()
    x = torch.rand(30, 3, 2, 2)
    det = {"T10": JensenShannon(ae, f, 10.0), "T40": JensenShannon(ae, f, 40.0)}
    js = _js_agreement(MagNet(f, ae, det), x)
    with torch.no_grad():
        top2 = f(x).topk(2, dim=1).values
        s10, s40 = (d(x).numpy() for d in det.values())
    assert js == {"n": 30, "rank_correlation": round(float(spearmanr(s10, s40).correlation), 4),
                  "median_margin": round(float((top2[:, 0] - top2[:, 1]).median()), 4)}
    assert js["rank_correlation"] > 0.99  # small logits: both temperatures in the near-uniform regime
    assert _js_agreement(MagNet(f, ae, {"T10": det["T10"]}), x) is None
    config = {**MagNet(f, ae, det).config(), "fpr": 0.005, "n_val": 30, "js_agreement": js}
    plain = _magnet_text(config, {"label_smoothing": 0.0})
    assert "at T = 10, Jensen-Shannon" in plain and "0.50% false positives on 30" in plain and "Spearman" not in plain
    assert f"Spearman correlation {js['rank_correlation']:.3f}" in _magnet_text(config, {"label_smoothing": 0.1})


def test_table6_says_whether_its_base_is_the_network_mad_was_fine_tuned_from(tmp_path):
    from maskdefense.experiments.mad.table6 import _base_provenance, _mad_reference

    table4 = tmp_path / "mad-table-quick"
    (table4 / "checkpoints").mkdir(parents=True)
    (table4 / "results.json").write_text(json.dumps({"meta": {"git_commit": "abc"}, "rows": []}))
    out = tmp_path / "t6"
    assert _mad_reference(out, True, "plain-x")["base_weights_sha256"] is None  # no record kept
    (table4 / "checkpoints" / "plain-x.json").write_text(json.dumps({"weights_sha256": "a" * 64}))
    mad = _mad_reference(out, True, "plain-x")
    assert mad["base_weights_sha256"] == "a" * 64
    base = {"preset": {"name": "plain-x"}, "weights_sha256": "a" * 64}
    assert "identical weights" in _base_provenance(mad, base)
    assert "not bit-identical" in _base_provenance(mad, {**base, "weights_sha256": "b" * 64})
    assert "could not be checked" in _base_provenance({**mad, "base_weights_sha256": None}, base)
