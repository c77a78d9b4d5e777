"""The SFM-Defense studies (maskdefense.experiments.sfm): the paper's numbers against the paper's text, the
surrogate and sweep presets, missing data, and each study in its quick mode on the embedded digits: its folder,
every number the harness's, and a second call that recomputes nothing."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, replace

import pytest

from maskdefense.cli import main
from maskdefense.papers.sfm import (ABLATION, BLACK_BOX_COLUMNS, CLASSIFIER, GRAY_BOX_COLUMNS, LOSS_WEIGHTS,
                                    MAIN_PREPROCESS, NOT_RUN, PREPROCESS, SWEEP_EPOCHS, SWEEP_W1, TABLES, TIME_COST,
                                    WHITE_BOX)
from maskdefense.training.presets import create_preset

from conftest import SHARED_DATA

PAPER = SHARED_DATA.parent / "papers" / "004_66ddce0753ab849d.txt"


def _paper_tables() -> dict[int, dict[str, list[str]]]:
    """Every table row of the paper's text: ``{table number: {first cell: [the other cells]}}``."""
    if not PAPER.is_file():
        pytest.skip(f"the paper's text {PAPER} is not here")
    out: dict[int, dict[str, list[str]]] = {}
    number = None
    for line in PAPER.read_text().splitlines():
        heading = re.match(r"TABLE (\d+)\.", line)
        if heading:
            number = int(heading.group(1))
        elif number is not None and "\t" in line:
            first, *cells = re.sub(r"</?b>", "", line).strip().split("\t")
            out.setdefault(number, {})[first] = cells
    return out


def test_tables_1_to_8_are_the_paper_s_numbers():
    text = _paper_tables()
    for (dataset, threat), (number, rows) in TABLES.items():
        columns = BLACK_BOX_COLUMNS if threat == "black-box" else GRAY_BOX_COLUMNS
        assert text[number]["Method"] == list(columns)
        assert set(rows) == set(text[number]) - {"Method"}, number
        for method, values in rows.items():
            assert [f"{100 * values[c]:.1f}%" for c in columns] == text[number][method], (number, method)
    names = {"cifar10": "CIFAR10", "svhn": "SVHN", "tiny-imagenet": "Tiny-ImageNet"}
    for dataset, values in WHITE_BOX.items():
        assert [f"{100 * values[c]:.1f}%" for c in GRAY_BOX_COLUMNS] == text[7][names[dataset]]
    assert text[8]["Time Cost"] == list(TIME_COST)
    for i, key in enumerate(("training_min", "defending_min")):
        row = text[8]["Training Cost (50 epochs)" if i == 0 else "Defending Cost (10000samples)"]
        assert row == [f"{v[key]:.1f}min" for v in TIME_COST.values()]


def test_the_surrogate_is_the_classifier_preset_with_another_seed():
    for ds, net in CLASSIFIER.items():
        clf, sur = create_preset(f"{net}-{ds}-cpu"), create_preset(f"{net}-{ds}-surrogate-cpu")
        a, b = asdict(clf), asdict(sur)
        assert {k for k in a if a[k] != b[k]} == {"name", "seed_offset", "description"} | (
            {"differs"} if a["differs"] != b["differs"] else set())
        assert (clf.train_config(seed=0).seed, sur.train_config(seed=0).seed) == (0, 1)
        assert sur.train_config(seed=7).seed == 8  # a study's --seed moves both, they stay apart


def test_cpu_presets_state_their_own_peak_learning_rate():
    from maskdefense.training.presets import PRESETS

    names = PRESETS.list("sfm-*-cpu")
    assert len(names) == 12  # bits, median, nlm and the sweep, on CIFAR-10, SVHN and Tiny-ImageNet
    for name in names:
        p = create_preset(name)
        assert re.findall(r"peak lr ([0-9.]+)", "; ".join(p.differs)) == [f"{p.lr:g}"], name


def test_the_sweep_preset_is_the_main_preset_shortened():
    main_p, sweep = create_preset(f"sfm-cifar10-{MAIN_PREPROCESS}-cpu"), create_preset(
        f"sfm-cifar10-{MAIN_PREPROCESS}-sweep-cpu")
    a, b = asdict(main_p), asdict(sweep)
    assert {k for k in a if a[k] != b[k]} == {"name", "epochs", "differs", "description"}
    assert sweep.epochs == SWEEP_EPOCHS < main_p.epochs


@pytest.mark.parametrize("study", ["sfm-models", "sfm-tables", "sfm-whitebox", "sfm-cost", "sfm-w1", "sfm-ablation",
                                   "sfm-samples"])
def test_a_missing_dataset_is_the_data_loader_s_error(study, tmp_path, monkeypatch, capsys):
    from test_data import no_network

    no_network(monkeypatch)
    runs = tmp_path / "runs"
    assert main(["reproduce", study, "--dataset", "svhn", "--data-root", str(tmp_path / "none"), "--runs-dir",
                 str(runs), "--out", str(tmp_path / "out")]) == 2
    assert "test_32x32.mat" in capsys.readouterr().err and not runs.exists()  # nothing trained
    assert main(["reproduce", study, "--dataset", "tiny-imagenet", "--data-root", str(tmp_path / "none"),
                 "--runs-dir", str(runs), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "tiny-imagenet-200.zip" in err and "90528d7ca1a48142e341f4ef8d21d0de" in err and not runs.exists()
    assert main(["reproduce", study, "--dataset", "mnist", "--out", str(tmp_path / "m")]) == 2
    assert "runs on cifar10, svhn, tiny-imagenet, not 'mnist'" in capsys.readouterr().err


def test_tiny_imagenet_is_the_paper_s_setting():
    """Section 6.1: ResNet-50 on Tiny-ImageNet; Section 6.2: w1 = 0.1, w2 = 0.01, w3 = 100; the CPU presets say how
    they differ."""
    import torch

    from maskdefense.models import create_model

    full = create_preset(f"sfm-tiny-imagenet-{MAIN_PREPROCESS}-full")
    assert (full.classifier, full.classifier_kwargs, full.weights, full.epochs) == (
        "resnet50", {}, (0.1, 0.01, 100.0), 50)
    assert full.masker_kwargs == {"width": 64, "depth": 4} and create_preset(full.init).model == "resnet50"
    for t in PREPROCESS:
        cpu = create_preset(f"sfm-tiny-imagenet-{t}-cpu")
        init = create_preset(cpu.init)
        assert (cpu.classifier, cpu.classifier_kwargs) == (init.model, init.model_kwargs) == (
            "resnet50", {"width": 0.25})
        assert cpu.weights == full.weights and cpu.epochs < full.epochs and cpu.preprocess == PREPROCESS[t]
        assert any("ResNet-50 at width 1/4" in d for d in cpu.differs) and any("estimated" in d for d in cpu.differs)
    net = create_model("resnet50", in_channels=3, input_size=64, num_classes=200, width=0.25).eval()
    with torch.no_grad():
        assert net(torch.rand(2, 3, 64, 64)).shape == (2, 200)
    assert net.layers[-1].conv3.out_channels == 512  # 4 x 128 planes of the last stage at width 1/4


def test_the_sweep_and_the_ablation_hold_the_paper_s_weights():
    for ds, (w1, w2, w3) in LOSS_WEIGHTS.items():
        assert w1 in SWEEP_W1[ds] and create_preset(f"sfm-{ds}-{MAIN_PREPROCESS}-sweep-cpu").weights == (w1, w2, w3)
    assert ABLATION["complete"] == (1.0, 1.0)  # factors of (w2, w3): the complete loss is the sweep's paper point


def test_the_studies_find_their_tiny_imagenet_presets(tmp_path, monkeypatch):
    from test_data import make_tiny_tree, tiny_stand_in

    from maskdefense.experiments.sfm import VARIANTS, _Lab

    make_tiny_tree(tmp_path)
    tiny_stand_in(monkeypatch)
    lab = _Lab("tiny-imagenet", False, tmp_path / "runs", 0, tmp_path, lambda m: None)
    roles = ("classifier", "surrogate", "sweep", *(f"sfm-{t}" for t in VARIANTS))
    names = {role: lab.preset(role).name for role in roles}
    assert names == {"classifier": "resnet50-tiny-imagenet-cpu", "surrogate": "resnet50-tiny-imagenet-surrogate-cpu",
                     "sweep": f"sfm-tiny-imagenet-{MAIN_PREPROCESS}-sweep-cpu",
                     **{f"sfm-{t}": f"sfm-tiny-imagenet-{t}-cpu" for t in VARIANTS}}
    assert lab.preset("sweep", (0.4, 0.01, 100.0)).weights == (0.4, 0.01, 100.0)


@pytest.mark.parametrize("folder, tables", [("sfm-w1-digits", "sfm-tables-digits"),
                                            ("sfm-w1-quick", "sfm-tables-quick"), ("fig3", "sfm-tables-digits")])
def test_the_w1_sweep_needs_the_tables_run(folder, tables, tmp_path):
    """The sibling folder of the tables run is named as the sweep's own folder is (``reproduce --quick`` writes
    ``results/<study>-quick``); a folder of another name looks for ``sfm-tables-<dataset>``."""
    from maskdefense.experiments.sfm import w1_study

    with pytest.raises(FileNotFoundError, match=re.escape(f"reproduce sfm-tables --quick` into {tmp_path / tables} first")):
        w1_study(tmp_path / folder, quick=True, runs_dir=tmp_path / "runs", log=lambda m: None)


# ---- the quick studies (one runs folder and one results folder for the module)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """``(results folder, runs folder)``; the quick tables run in it first (the w1 sweep reuses its examples)."""
    base = tmp_path_factory.mktemp("sfm-results")
    runs = base / "runs"
    assert _reproduce("sfm-tables", base, runs) == 0
    return base, runs


def _reproduce(study: str, base, runs) -> int:
    return main(["reproduce", study, "--quick", "--runs-dir", str(runs), "--out", str(base / f"{study}-digits")])


def _records(out) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("**/records.jsonl"))}


def _again_without_work(study: str, base, runs, monkeypatch) -> None:
    """The study a second time, with every attack and every training made to fail: all is reused, and the
    harness records are unchanged."""
    import maskdefense.eval.harness as harness
    import maskdefense.experiments.common as common

    def boom(*a, **k):
        raise AssertionError("recomputed on resume")

    out = base / f"{study}-digits"
    before = _records(out)
    with monkeypatch.context() as m:
        for mod, name in ((harness, "_attack_batch"), (common, "train_on_dataset"), (common, "train_sfm_on_dataset")):
            m.setattr(mod, name, boom)
        assert _reproduce(study, base, runs) == 0
    assert _records(out) == before


def _summary(run_dir) -> dict[tuple[str, str], dict]:
    return {(r["label"], r["threat"]): r for r in json.loads((run_dir / "summary.json").read_text())["rows"]}


def test_tables_quick_every_number_is_the_harness_s_and_it_resumes(quick, monkeypatch):
    from maskdefense.experiments.sfm import NAMES

    base, runs = quick
    out = base / "sfm-tables-digits"
    data = json.loads((out / "results.json").read_text())
    rows, meta = data["rows"], data["meta"]
    assert [(r["threat"], r["defense"]) for r in rows] == [(t, n) for t in ("black-box", "gray-box") for n in NAMES]
    for r in rows:
        attacked = (r["threat"], r["defense"]) == ("black-box", "vanilla")
        run = out / r["threat"] / ("attacks" if attacked else r["defense"])
        summary = _summary(run)
        for label in (BLACK_BOX_COLUMNS if r["threat"] == "black-box" else GRAY_BOX_COLUMNS)[1:]:
            assert r[label] == summary[label, r["threat"]]["robust_acc"], (r["defense"], label)
        # the gray-box attacker of FS and TVM knows the classifier (the Vanilla examples), SFM-Defense's also
        # its masker; the black-box examples are the surrogate's for every defense
        target = {"black-box": "surrogate model", "gray-box": "masker and base model (no preprocessing)"
                  if r["defense"].startswith("sfm-") else "base model (no defense)"}[r["threat"]]
        assert r["target"] == target
    reused = json.loads((out / "black-box" / "sfm-median" / "run.json").read_text())
    assert reused["source_run"] == str(out / "black-box" / "attacks")
    assert {(b["defense"], b["threat"]) for b in meta["budget_check"]} >= {
        ("vanilla", "black-box"), (f"sfm-{MAIN_PREPROCESS}", "black-box"), ("vanilla", "gray-box"),
        (f"sfm-{MAIN_PREPROCESS}", "gray-box")}
    assert all(b["budget_scaled"] == {k: 2 * v for k, v in b["budget"].items()} for b in meta["budget_check"])
    readme = (out / "README.md").read_text()
    for text in ("Table 1: black box", "Table 2: gray box", "64.6%", "84.9%", "Quilt, not run here",
                 "Is the attack budget enough?", "(n=16)", "(n=12)"):
        assert text in readme, text
    assert (out / "tables.png").exists()
    trained = sorted(p.name for p in (out / "checkpoints").glob("*.json"))
    assert len(trained) == 5 and sorted(meta["training_records"]) == trained  # classifier, surrogate, 3 maskers
    _again_without_work("sfm-tables", base, runs, monkeypatch)


@pytest.mark.parametrize("study", ["sfm-models", "sfm-cost", "sfm-ablation", "sfm-samples"])
def test_small_studies_quick_write_their_folder_and_resume(study, quick, monkeypatch):
    base, runs = quick
    assert _reproduce(study, base, runs) == 0
    out = base / f"{study}-digits"
    data = json.loads((out / "results.json").read_text())
    assert "## Provenance" in (out / "README.md").read_text() and (out / "results.csv").exists()
    assert data["meta"]["training_records"] and all((out / "checkpoints" / f).exists()
                                                    for f in data["meta"]["training_records"])
    if study == "sfm-cost":
        ratios = {r["method"]: r["ratio"] for r in data["rows"]}
        assert ratios["no defense"] == 1.0 and all(v > 0 for v in ratios.values())
        assert [t["ratio_equal_epochs"] > 1 for t in data["meta"]["training"][1:]] == [True] * 3
    if study == "sfm-ablation":
        assert [r["weights"][1:] for r in data["rows"]] == [[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]
        assert all(0 <= r["near_zero"] <= 1 and 0 <= r["kept"] <= 1 for r in data["rows"])
    if study in ("sfm-ablation", "sfm-samples"):
        assert (out / ("fig5.png" if study == "sfm-ablation" else "fig4.png")).exists()
    _again_without_work(study, base, runs, monkeypatch)


def test_cost_training_ratio_takes_each_run_s_median_epoch(quick, monkeypatch, tmp_path):
    """Table 8's training ratio at equal epochs from the median epoch of each run: one epoch slowed by other
    work (10 s among 1 s epochs) leaves it where the run's typical epoch puts it (mean: 4 s -> ratio 1.5)."""
    import maskdefense.experiments.sfm as sfm

    base, runs = quick
    calls: list[str] = []  # the classifier's record is read first, then each masker's

    def seconds(meta):
        calls.append(meta["path"])
        return [1.0, 10.0, 1.0] if len(calls) == 1 else [2.0, 2.0, 2.0]

    monkeypatch.setattr(sfm, "_history_seconds", seconds)
    data = sfm.cost_study(tmp_path / "cost", quick=True, runs_dir=runs, log=lambda *a: None)
    assert data["training"][0]["epoch_minutes"] == pytest.approx(1 / 60)
    assert [t["ratio_equal_epochs"] for t in data["training"][1:]] == pytest.approx([3.0] * 3)
    assert len(set(calls)) == 4  # four different training records: classifier and three maskers


@pytest.mark.slow
@pytest.mark.parametrize("study", ["sfm-whitebox", "sfm-w1"])
def test_attack_studies_quick_every_number_is_the_harness_s_and_they_resume(study, quick, monkeypatch):
    base, runs = quick
    assert _reproduce(study, base, runs) == 0
    out = base / f"{study}-digits"
    data = json.loads((out / "results.json").read_text())
    if study == "sfm-whitebox":
        assert [r["defense"] for r in data["rows"]] == [f"sfm-{MAIN_PREPROCESS}", f"fs-{MAIN_PREPROCESS}", "tvm"]
        for r in data["rows"]:
            summary = _summary(out / r["defense"])
            labels = [k for k in summary if k[1] == "adaptive" and k[0] in r]
            assert labels and all(r[k[0]] == summary[k]["robust_acc"] for k in labels)
        assert {"APGD-CE-8", "Square-8"} <= set(data["rows"][0]) and "CW" in data["rows"][2]
        assert not {"APGD-CE-8", "Square-8"} & set(data["rows"][2])  # TVM: the paper's attacks only
        assert {b["defense"] for b in data["meta"]["budget_check"]} == {r["defense"] for r in data["rows"]}
    else:
        assert [r["w1"] for r in data["rows"]] == [1e-3, 2.5e-3, 1e-2, 4e-2]
        for r in data["rows"]:
            tag = out / f"w1-{r['w1']:g}"
            assert r["black_pgd8"] == _summary(tag / "black-box")["PGD-8", "black-box"]["robust_acc"]
            assert r["gray_pgd8"] == _summary(tag / "gray-box")["PGD-8", "gray-box"]["robust_acc"]
        assert len(data["meta"]["budget_check"]) == 1 and (out / "fig3.png").exists()
    _again_without_work(study, base, runs, monkeypatch)


# ---- SVHN and Tiny-ImageNet end to end on stand-in files (their data is not on this machine)


def _shrink_presets(monkeypatch, dataset: str) -> dict:
    """The dataset's CPU presets (classifier, surrogate, the maskers and the sweep) shrunk for a test: their own
    architecture at width 1/16, a masker of width 2, one epoch, small batches; returns the shrunk fields."""
    from maskdefense.training.presets import PRESETS

    PRESETS.list()  # the plugins first
    net = CLASSIFIER[dataset]
    width = {**create_preset(f"{net}-{dataset}-cpu").model_kwargs, "width": 1 / 16}
    small = {"epochs": 1, "batch_size": 16, "n_eval": 4}
    shrunk = {}
    for pattern, changes in ((f"{net}-{dataset}-*cpu", {"model_kwargs": width}),
                             (f"sfm-{dataset}-*-cpu", {"classifier_kwargs": width,
                                                       "masker_kwargs": {"width": 2, "depth": 4}})):
        for name in PRESETS.list(pattern):
            e = PRESETS._entries[name]
            shrunk[name] = {**small, **changes}
            monkeypatch.setitem(PRESETS._entries, name, replace(e, defaults={**e.defaults, **shrunk[name]}))
    assert len(shrunk) == 2 + len(PREPROCESS) + 1  # classifier, surrogate, a masker per preprocessing, the sweep
    return shrunk


def _short_attacks(monkeypatch) -> None:
    """Every study's attacks as short as in quick mode (a few steps each, TVM's EOT over 2 draws) on the real
    dataset's path: the suites, sizes and paper tables of the dataset, only fewer iterations."""
    from maskdefense.experiments import sfm

    real = sfm._Lab.__init__

    def init(self, *a, **k):
        real(self, *a, **k)
        assert not self.quick
        self.overrides, self.tvm_spec = sfm.QUICK_OVERRIDES, "tvm:n_grad=2"

    monkeypatch.setattr(sfm._Lab, "__init__", init)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _run_sfm_studies(dataset: str, root, tmp_path, n: int, monkeypatch) -> dict:
    """Every study through the CLI (``maskdefense reproduce <study> --dataset <dataset>``, ``--limit n`` where it
    takes one) on the stand-in data at ``root``, with the dataset's presets shrunk and the attacks shortened;
    checks each folder against the paper's numbers and settings of ``dataset``. Returns ``{study: (results.json,
    README.md)}``."""
    from test_data import no_network

    from maskdefense.data import load_dataset
    from maskdefense.experiments.sfm import DISPLAY, NAMES, SIZES, VARIANTS

    no_network(monkeypatch)
    shrunk = _shrink_presets(monkeypatch, dataset)
    _short_attacks(monkeypatch)
    n_test = len(load_dataset(dataset, "test", root=root))  # fewer than the cost and samples studies ask for
    assert n_test < min(SIZES["cost"], SIZES["samples"])
    runs, out = tmp_path / "runs", {}
    for study in ("sfm-models", "sfm-tables", "sfm-whitebox", "sfm-w1", "sfm-ablation", "sfm-cost", "sfm-samples"):
        folder = tmp_path / f"{study}-{dataset}"  # sfm-w1 finds the black-box examples of sfm-tables-<dataset>
        limit = ["--limit", str(n)] if study in ("sfm-tables", "sfm-whitebox", "sfm-w1") else []  # the others: none
        args = ["reproduce", study, "--dataset", dataset, "--data-root", str(root), "--runs-dir", str(runs),
                "--out", str(folder), *limit]
        assert main(args) == 0, study
        data = json.loads((folder / "results.json").read_text())
        readme = (folder / "README.md").read_text()
        assert data["meta"]["dataset"] == dataset and not data["meta"]["quick"]
        assert data["meta"]["study"] == f"{study}-{dataset}"
        assert f": {dataset}" in readme.splitlines()[0] or f"({dataset})" in readme.splitlines()[0], study
        out[study] = data, readme
    net = CLASSIFIER[dataset]
    # sfm-models: the dataset's presets, as shrunk
    rows = out["sfm-models"][0]["rows"]
    presets = [f"{net}-{dataset}-cpu", f"{net}-{dataset}-surrogate-cpu", *(f"sfm-{dataset}-{t}-cpu" for t in VARIANTS)]
    assert [r["preset"] for r in rows] == presets
    assert [r["epochs"] for r in rows] == [shrunk[p]["epochs"] for p in presets]  # the shrunk presets trained
    # sfm-tables: a row per defense and threat, and the paper's tables of this dataset beside ours
    data, readme = out["sfm-tables"]
    assert [(r["threat"], r["defense"]) for r in data["rows"]] == [(t, d) for t in ("black-box", "gray-box")
                                                                   for d in NAMES]
    assert all(r["n"] == n for r in data["rows"])
    for d in NAMES:
        assert readme.count(f"| {DISPLAY[d]} | ours (n={n}) |") == 2, d  # the black-box and gray-box tables
    columns = {"black-box": BLACK_BOX_COLUMNS, "gray-box": GRAY_BOX_COLUMNS}
    numbers = []
    for threat in ("black-box", "gray-box"):
        number, paper = TABLES[dataset, threat]
        numbers.append(number)
        assert f"## Table {number}: {threat.replace('-', ' ')}\n" in readme  # the paper's number on this dataset
        for method, values in paper.items():
            line = f"| {method} | paper Table {number}" + (" (not run)" if method in NOT_RUN else "") + " | "
            assert line + " | ".join(_pct(values[c]) for c in columns[threat]) + " |" in readme, (threat, method)
    assert sorted(int(k.removeprefix("table")) for k in data["meta"]["paper"]) == numbers
    assert readme.startswith(f"# SFM-Defense Tables {numbers[0]} and {numbers[1]}: {dataset}\n")
    # sfm-whitebox: Table 7's row of this dataset
    data, readme = out["sfm-whitebox"]
    assert [r["defense"] for r in data["rows"]] == [f"sfm-{MAIN_PREPROCESS}", f"fs-{MAIN_PREPROCESS}", "tvm"]
    assert data["meta"]["paper"]["table7"] == WHITE_BOX[dataset]
    number, paper = TABLES[dataset, "gray-box"]
    for method, values in (("paper Table 7: Ours (white box, adaptive)", WHITE_BOX[dataset]),
                           (f"paper Table {number}: Ours (gray box, for reference)", paper["Ours"])):
        assert f"| {method} | " + " | ".join(_pct(values[c]) for c in GRAY_BOX_COLUMNS) + " |" in readme, method
    assert f"Attacks as in Tables {number - 1}-{number} (" in readme
    # sfm-w1 and sfm-ablation: the dataset's loss weights and sweep
    w1, w2, w3 = LOSS_WEIGHTS[dataset]
    data, readme = out["sfm-w1"]
    assert [r["w1"] for r in data["rows"]] == list(SWEEP_W1[dataset]) and all(r["n_gray"] == n for r in data["rows"])
    assert (data["meta"]["w1_paper"], data["meta"]["w2"], data["meta"]["w3"]) == (w1, w2, w3)
    checked = sorted(p.parent.parent.name for p in (tmp_path / f"sfm-w1-{dataset}").glob("*/gray-box/budget-x2"))
    assert checked == [f"w1-{w1:g}"]  # the budget check at the paper's w1 (its rows: on the images classified right)
    assert (tmp_path / f"sfm-w1-{dataset}" / "fig3.png").exists()
    data, readme = out["sfm-ablation"]
    assert [r["weights"] for r in data["rows"]] == [[w1, w2 * a, w3 * b] for a, b in ABLATION.values()]
    # sfm-cost and sfm-samples: every defense timed, every preprocessing's masks shown
    data, readme = out["sfm-cost"]
    assert [r["method"] for r in data["rows"]] == [DISPLAY[d] for d in NAMES] and data["rows"][0]["ratio"] == 1.0
    assert data["meta"]["n_images"] == n_test and "the paper times CIFAR-10 only" in readme  # its Table 8's ratios
    data, readme = out["sfm-samples"]
    assert [r["preprocessing"] for r in data["rows"]] == list(VARIANTS) and "![Figure 4](fig4.png)" in readme
    shown = min(n_test, SIZES["samples"])
    assert data["meta"]["n_images"] == n_test and f"the first {shown} test images through" in readme
    return out


@pytest.mark.slow  # ~40 s on one thread
def test_the_svhn_studies_run_end_to_end_on_a_stand_in(tmp_path, monkeypatch):
    """Every study on SVHN-format stand-in files: the SVHN presets (ResNet-18, no flips), Tables 3 and 4 and
    Table 7's SVHN row beside ours, the SVHN sweep and loss weights."""
    from test_data import svhn_stand_in

    svhn_stand_in(tmp_path / "data", monkeypatch, n_test=7)
    _run_sfm_studies("svhn", tmp_path / "data", tmp_path, 6, monkeypatch)


@pytest.mark.slow  # ~55 s on one thread
def test_the_tiny_imagenet_studies_run_end_to_end_on_a_stand_in(tmp_path, monkeypatch):
    """The same on a Tiny-ImageNet-format tree of 64x64 JPEGs: the ResNet-50 presets, Tables 5 and 6 and Table
    7's Tiny-ImageNet row, its loss weights (0.1, 0.01, 100) and sweep."""
    from test_data import make_tiny_tree, tiny_stand_in

    make_tiny_tree(tmp_path / "data")
    tiny_stand_in(monkeypatch)
    _run_sfm_studies("tiny-imagenet", tmp_path / "data", tmp_path, 3, monkeypatch)
    for run in ("sfm-tables-tiny-imagenet/gray-box/sfm-median", "sfm-whitebox-tiny-imagenet/sfm-median"):
        assert json.loads((tmp_path / run / "run.json").read_text())["config"]["image_shape"] == [3, 64, 64]
