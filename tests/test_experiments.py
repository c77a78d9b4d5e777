"""The experiments' --quick mode: seconds-long versions on the embedded digits."""

import json

import pytest
import torch

from maskdefense.attacks import get_suite
from maskdefense.cli import main
from maskdefense.papers.mad import FIG3_ATTACKS, FIG3_KEPT, TABLE_SUITE


def _suite_labels(dataset):
    return [r.label for r in get_suite(TABLE_SUITE[dataset]).rows]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _read(out):
    data = json.loads((out / "results.json").read_text())
    readme = (out / "README.md").read_text()
    assert (out / "results.csv").exists()
    for key in ("command", "seed", "git_commit", "versions", "wall_time_s"):
        assert key in data["meta"]
    assert "## Provenance" in readme
    return data, readme


def _trained(runs, preset):
    """Checkpoints of ``preset`` in ``runs`` (a folder ``<preset>`` or ``<preset>-<hash of its training
    configuration>``)."""
    import re

    return [p for p in sorted(runs.glob("*/model.safetensors"))
            if re.fullmatch(re.escape(preset) + r"(-[0-9a-f]{6,64})?", p.parent.name)]


def _checkpoint(runs, preset, sha256):
    """The model a study used: the checkpoint of ``preset`` in ``runs`` with the sha256 the study recorded."""
    from maskdefense.checkpoint import load_model

    found = [m for m in (load_model(p) for p in _trained(runs, preset)) if m[1]["sha256"] == sha256]
    assert len(found) == 1, f"no single checkpoint of {preset} with sha256 {sha256} in {runs}"
    return found[0][0]


def _digits_test():
    from maskdefense.data import load_dataset

    return load_dataset("digits", "test").tensors()


def _unmasked_accuracy(model, x, y):
    """Plain torch, independent of the library's batching helpers."""
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _is_fraction_of(v, n):
    """``v`` is k/n for an integer k (an accuracy over n images, as the studies round it: 6 places)."""
    return 0 <= round(v * n) <= n and abs(v * n - round(v * n)) < 1e-5 * n


def test_votes_study_quick(runs, tmp_path, capsys):
    from maskdefense.defenses.mad import MADClassifier
    from maskdefense.seeding import seeded
    from maskdefense.training.presets import create_preset

    out = tmp_path / "votes"
    assert main(["reproduce", "mad-votes", "--quick", "--runs-dir", str(runs), "--out", str(out)]) == 0
    data, readme = _read(out)
    meta = data["meta"]
    votes = [r["votes"] for r in data["rows"]]
    assert votes == [0, 1, 3, 5, 7, 9, 15, 20]
    # recomputed from the checkpoint the study names, on the whole digits test split
    x, y = _digits_test()
    assert meta["n_test"] == len(y) == 360 and meta["seed"] == 0
    model = _checkpoint(runs, "mad-digits", meta["checkpoint_sha256"])
    acc = {r["votes"]: r["accuracy"] for r in data["rows"]}
    assert acc[0] == pytest.approx(_unmasked_accuracy(model, x, y), abs=1e-6)
    p = create_preset("mad-digits")
    mad = MADClassifier(model, p.test_cell, p.test_rate).eval()
    for n in (1, 5, 20):  # the vote with the preset's test masking, masks drawn from the study's seed
        assert acc[n] == pytest.approx(float((mad.predict(x, n, generator=seeded(0)) == y).float().mean()), abs=1e-6)
    assert all(_is_fraction_of(a, len(y)) for a in acc.values())
    adaptive = {a["stop"]: a for a in meta["adaptive"]}
    assert set(adaptive) == {"exact", "test", "predictive"}
    for a in adaptive.values():  # every adaptive run is compared with the same full 20-vote
        assert a["n_max"] == 20 and a["full_vote_accuracy"] == acc[20]
        assert a["passes_saved"] == pytest.approx(1 - a["mean_passes"] / 20)
    exact = adaptive["exact"]
    assert exact["changed_decisions"] == 0  # exact stopping never changes the full vote's decision
    assert exact["accuracy"] == exact["full_vote_accuracy"] and exact["stopped_by_test"] == 0
    assert exact["mean_passes"] < 20  # with 4 votes a round, a unanimous image stops after 12 of 20
    assert (out / "votes.png").stat().st_size > 1000


def test_training_summary_states_each_presets_own_training():
    from maskdefense.experiments.common import training_summary
    from maskdefense.training.presets import Preset
    tuned = Preset("t", "digits", "mlp", epochs=15, optimizer="sgd", lr=0.05, schedule="onecycle", init="base")
    assert training_summary(tuned) == "15 epochs, sgd lr 0.05, onecycle schedule, fine-tuned from base"
    assert training_summary(Preset("b", "digits", "mlp", epochs=3)) == "3 epochs, adam lr 0.001, none schedule"
    assert training_summary(tuned.to_dict()) == training_summary(tuned)  # as a checkpoint's record keeps it


def test_ablation_study_quick(runs, tmp_path):
    out = tmp_path / "ablation"
    assert main(["reproduce", "mad-ablation", "--quick", "--runs-dir", str(runs), "--out", str(out)]) == 0
    data, readme = _read(out)
    assert "plain-digits 3 epochs, adam lr 0.001" in readme  # each model's own training, from its preset
    rows = data["rows"]
    # per model: one unmasked row, then the vote at 5 and at 20 votes
    assert [(r["train_mask"], r["test_mask"], r["votes"]) for r in rows] == [
        (False, False, "-"), (False, True, 5), (False, True, 20), (True, False, "-"), (True, True, 5), (True, True, 20)]
    ck = data["meta"]["checkpoints"]
    assert len(set(ck.values())) == 2  # two different models
    x, y = _digits_test()
    assert data["meta"]["n_test"] == len(y)
    for train_mask, name, key in ((False, "plain-digits", "plain"), (True, "mad-digits", "mad")):
        model = _checkpoint(runs, name, ck[key])
        unmasked = next(r for r in rows if r["train_mask"] == train_mask and not r["test_mask"])
        assert unmasked["accuracy"] == pytest.approx(_unmasked_accuracy(model, x, y), abs=1e-6)
    assert all(r["epochs"] == 3 and _is_fraction_of(r["accuracy"], len(y)) for r in rows)
    assert all(r["paper"] is None and r["gap_to_paper"] is None for r in rows)  # the paper has no digits numbers


def test_masks_figure_quick(tmp_path):
    out = tmp_path / "masks"
    assert main(["reproduce", "mad-masks", "--quick", "--out", str(out)]) == 0
    assert (out / "masks.png").stat().st_size > 1000
    _read(out)


def test_predict_command_reports_vote_accuracy(runs, tmp_path, capsys):
    if not _trained(runs, "mad-digits"):
        assert main(["reproduce", "mad-votes", "--quick", "--runs-dir", str(runs), "--out", str(tmp_path / "v")]) == 0
    (ckpt,) = _trained(runs, "mad-digits")
    js = tmp_path / "p.json"
    assert main(["predict", "--checkpoint", str(ckpt), "--votes", "1", "5", "--adaptive", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "5 votes" in out and "adaptive" in out
    rec = json.loads(js.read_text())
    assert rec["cell"] == 2 and set(rec["vote_accuracy"]) == {"1", "5"}
    assert rec["adaptive"]["changed_decisions"] == 0


def test_mad_table_quick_puts_paper_and_ours_side_by_side(runs, tmp_path):
    out = tmp_path / "table"
    assert main(["reproduce", "mad-table", "--quick", "--runs-dir", str(runs), "--out", str(out)]) == 0
    data, readme = _read(out)
    assert len(data["rows"]) == 6
    suite = {r.label: r.paper for r in get_suite(TABLE_SUITE["mnist"]).rows}
    assert [r["attack"] for r in data["rows"]] == list(suite)[::4]  # every fourth row of the MNIST table
    _check_table_reads_the_harness(out, data["rows"])
    for r in data["rows"]:  # the paper's numbers sit beside ours
        assert r["paper_defense"] == suite[r["attack"]]["defense"]
        assert r["paper_attack"] == suite[r["attack"]]["attack"]
        assert r["gap_defense"] == pytest.approx(r["gray_box_defense"] - r["paper_defense"], abs=2e-6)
    # quick mode runs the adaptive threat on all images: the subset columns repeat the full ones
    assert all(r["gray_box_sub_defense"] == r["gray_box_defense"] for r in data["rows"])
    assert all(r["black_box_sub_defense"] == r["black_box_defense"] for r in data["rows"])
    assert "adaptive EOT" in readme and "black-box transfer" in readme
    assert (out / "eval-adaptive" / "summary.md").exists()
    assert (out / "eval" / "records.jsonl").exists()
    # the budget check: each attack's largest-eps row again at twice the budget, under every threat (and
    # the adaptive EOT samples doubled), compared with the adaptive run's rows on the same images
    checked = data["meta"]["budget_check"]
    adaptive = {(q["label"], q["threat"]): q for q in
                json.loads((out / "eval-adaptive" / "summary.json").read_text())["rows"]}
    assert {c["threat"] for c in checked} == {"gray-box", "black-box", "adaptive"}
    for c in checked:
        assert c["base"] == adaptive[(c["label"], c["threat"])]["defense_acc"]
        assert c["budget_scaled"] == {k: 2 * v for k, v in c["budget"].items()}
        if c["threat"] == "adaptive":
            assert c["samples_per_gradient"][1] == 2 * c["samples_per_gradient"][0]
    assert "Is the attack budget enough?" in readme and (out / "budget-x2" / "summary.md").exists()


def _check_table_reads_the_harness(out, rows):
    """Every number of the study's table is the harness's (eval/ and eval-adaptive/ summaries), by attack
    label and threat: gray-box Attack and Defense, black-box Defense, and the adaptive run's columns."""
    import json

    def by_threat(run):
        summary = json.loads((out / run / "summary.json").read_text())
        return {(q["label"], q["threat"]): q for q in summary["rows"] if not q["sanity"]}  # not the sanity attack

    main_run, adaptive = by_threat("eval"), by_threat("eval-adaptive")
    assert {t for _, t in main_run} == {"gray-box", "black-box"}
    assert {t for _, t in adaptive} == {"gray-box", "black-box", "adaptive"}
    assert len(main_run) == 2 * len(rows) and len(adaptive) == 3 * len(rows)
    for r in rows:
        lab = r["attack"]
        assert r["attack_acc"] == main_run[(lab, "gray-box")]["attack_acc"]
        assert r["gray_box_defense"] == main_run[(lab, "gray-box")]["defense_acc"]
        assert r["gray_box_robust"] == main_run[(lab, "gray-box")]["robust_acc"]
        assert r["black_box_defense"] == main_run[(lab, "black-box")]["defense_acc"]
        assert r["gray_box_sub_defense"] == adaptive[(lab, "gray-box")]["defense_acc"]
        assert r["black_box_sub_defense"] == adaptive[(lab, "black-box")]["defense_acc"]
        assert r["adaptive_defense"] == adaptive[(lab, "adaptive")]["defense_acc"]
        assert r["adaptive_robust"] == adaptive[(lab, "adaptive")]["robust_acc"]


def test_fig3_quick(runs, tmp_path):
    out = tmp_path / "fig3"
    assert main(["reproduce", "mad-fig3", "--quick", "--runs-dir", str(runs), "--out", str(out)]) == 0
    data, _ = _read(out)
    # the first (smaller-epsilon) row of each family the paper's figure shows, at 0% and each fraction kept
    labels = list(_suite_labels("mnist"))
    wanted = [next(lab for lab in labels if lab.startswith(fam + " ")) for fam in FIG3_ATTACKS]
    kept = (0.0, *FIG3_KEPT)
    assert [(r["attack"], r["kept"]) for r in data["rows"]] == [(a, k) for a in sorted(wanted, key=labels.index)
                                                                for k in kept]
    none = {r["attack"]: r["accuracy"] for r in data["rows"] if r["kept"] == 0.0}
    assert all(v == 1.0 for v in none.values())  # 0% kept = the clean, correctly classified images
    n = data["meta"]["n_images"]
    assert 0 < n <= 60 and all(_is_fraction_of(r["accuracy"], n) for r in data["rows"])
    assert (out / "fig3.png").exists()


def test_sweeps_quick_tables_come_from_the_harness_runs(runs, tmp_path):
    out = tmp_path / "sweeps"
    assert main(["reproduce", "mad-sweeps", "--quick", "--runs-dir", str(runs), "--out", str(out)]) == 0
    data, readme = _read(out)
    for title in ("## Table 1", "## Table 2", "## Table 3", "gray-box"):
        assert title in readme
    assert (out / "sweeps.png").exists()
    # 1 + 4 attack rows (every sixth of 23) in Tables 1 and 3; the 4 (train, test) masking rows of Table 2
    assert [r["table"] for r in data["rows"]] == ["1"] * 5 + ["2"] * 4 + ["3"] * 5
    rows = {(r["table"], r.get("attack")): r for r in data["rows"] if r["table"] in ("1", "3")}
    plain = json.loads((out / "runs" / "plain-digits" / "summary.json").read_text())
    main_run = json.loads((out / "runs" / "mad-digits-sweep-main" / "summary.json").read_text())
    other_cell = json.loads((out / "runs" / "mad-digits-sweep-main-test4" / "summary.json").read_text())
    # Table 1, rate 0 = the plain network alone; rate 3/4 = the vote of the main model
    assert rows[("1", "Benign")]["0"] == plain["clean"]["base_clean_acc"]
    assert rows[("1", "Benign")]["3/4"] == main_run["clean"]["defense_clean_acc"]
    for r in main_run["rows"]:
        assert rows[("1", r["label"])]["3/4"] == r["defense_acc"]
        assert rows[("1", r["label"])]["0"] == next(q["attack_acc"] for q in plain["rows"] if q["label"] == r["label"])
    # Table 3: the 4x4-test column re-votes the stored examples of the same model (same Attack numbers)
    for r, q in zip(main_run["rows"], other_cell["rows"]):
        assert r["attack_acc"] == q["attack_acc"] and q["defense_acc"] == rows[("3", q["label"])]["4x4/4x4"]
    # Table 2: rows (train, test) read the right numbers
    t2 = {(r["train"], r["test"]): r for r in data["rows"] if r["table"] == "2"}
    assert t2[(True, False)]["Benign"] == main_run["clean"]["base_clean_acc"]
    assert t2[(False, True)]["Benign"] == plain["clean"]["defense_clean_acc"]
    # the provenance names the commits that computed the harness runs' records, and this command's wall time
    commits = sorted({json.loads(p.read_text())["git_commit"] for p in (out / "runs").glob("*/run.json")})
    assert data["meta"]["record_commits"] == commits
    assert f"- commits that computed the records: {', '.join(commits)}" in readme
    assert f"- wall time of this command: {data['meta']['wall_time_s']} s" in readme


def test_harness_provenance_sums_the_runs_and_keeps_a_dirty_mark(tmp_path):
    from maskdefense.experiments.common import harness_provenance

    for name, commit, wall in (("a", "f" * 40 + "+dirty", 2.0), ("b", "e" * 40, 3.5)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps(
            {"git_commit": commit, "records_at_start": 0, "records": 4, "wall_time_s_total": wall}))
    got = harness_provenance([tmp_path / "a", tmp_path / "b", tmp_path / "missing"])
    assert got == {"eval_wall_time_s_total": 5.5, "record_commits": ["e" * 40, "f" * 40 + "+dirty"]}


def test_mad_table_svhn_on_a_stand_in(tmp_path, monkeypatch):
    """The Table 5 (right half) path: ResNet18/SVHN presets, suite, surrogate, all three threats."""
    from maskdefense.experiments.mad.tables import QUICK_AUTOATTACK, QUICK_OVERRIDES, table_study

    from test_data import svhn_stand_in

    root = tmp_path / "data"
    svhn_stand_in(root, monkeypatch)
    out = tmp_path / "svhn"
    meta = table_study(out, dataset="svhn", data_root=root, runs_dir=tmp_path / "runs", limit=6, adaptive_n=3,
                       preset_overrides={"epochs": 1}, every=8, attack_overrides=QUICK_OVERRIDES,
                       autoattack=(3, (0.1,), QUICK_AUTOATTACK[2]), budget=False, log=lambda m: None)
    assert meta["mad_preset"]["name"] == "mad-svhn-cpu" and meta["mad_preset"]["model"] == "resnet18_narrow"
    assert meta["surrogate_preset"]["name"] == "plain-svhn-cpu" and meta["preset_overrides"] == {"epochs": 1}
    data, readme = _read(out)
    assert len(data["rows"]) == 3 and all(r["paper_defense"] is not None for r in data["rows"])
    assert "Table 5 (right)" in readme and "resnet18_narrow" in readme
    # random stand-in images: the 1-epoch model may classify none correctly (then the cells are None, as the
    # harness's); every cell is the harness's number
    _check_table_reads_the_harness(out, data["rows"])
    assert (out / "eval-adaptive" / "summary.md").exists() and (out / "eval" / "summary.md").exists()
    assert [r["name"] for r in meta["autoattack"]] == ["autoattack-rand", "pgd-linf"]


def test_mad_table_with_missing_data_says_so(tmp_path, monkeypatch):
    from maskdefense.data import DataError
    from maskdefense.experiments.mad.tables import table_study

    from test_data import no_network

    no_network(monkeypatch)
    out = tmp_path / "svhn"
    with pytest.raises(DataError, match="train_32x32.mat|test_32x32.mat"):
        table_study(out, dataset="svhn", data_root=tmp_path / "empty", runs_dir=tmp_path / "runs", log=lambda m: None)
    data, readme = _read(out)
    assert "data missing" in readme and "nothing was trained" in readme
    assert data["meta"]["status"] == "data missing" and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("module, study", [("clean", "votes_study"), ("clean", "ablation_study"),
                                           ("tables", "table_study"), ("tables", "fig3_study"),
                                           ("sweeps", "sweep_study")])
def test_the_study_seed_reaches_the_models_training(module, study, tmp_path, monkeypatch):
    """``--seed`` of a study seeds the training of the models it needs, not only its evaluation."""
    import importlib

    mod = importlib.import_module(f"maskdefense.experiments.mad.{module}")
    seen = []

    class _Stop(Exception):
        pass

    def recorder(preset, runs_dir="runs", *, seed=0, **kw):
        seen.append(seed)
        raise _Stop

    monkeypatch.setattr(mod, "ensure_model", recorder)
    with pytest.raises(_Stop):
        getattr(mod, study)(tmp_path / "out", quick=True, seed=7, runs_dir=tmp_path / "runs")
    assert seen == [7]
