"""The experiments' --quick mode: seconds-long versions on the embedded digits."""

import json

import pytest

from maskdefense.cli import main


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


def test_votes_study_quick(runs, tmp_path, capsys):
    out = tmp_path / "votes"
    assert main(["reproduce", "mad-votes", "--quick", "--runs-dir", str(runs), "--out", str(out)]) == 0
    data, readme = _read(out)
    votes = [r["votes"] for r in data["rows"]]
    assert votes == [0, 1, 3, 5, 7, 9, 15, 20]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in data["rows"])
    exact = next(a for a in data["meta"]["adaptive"] if a["stop"] == "exact")
    assert exact["changed_decisions"] == 0  # exact stopping never changes the full vote's decision
    assert 0 < exact["mean_passes"] <= 20
    assert (out / "votes.png").stat().st_size > 1000


def test_ablation_study_quick(runs, tmp_path):
    out = tmp_path / "ablation"
    assert main(["reproduce", "mad-ablation", "--quick", "--runs-dir", str(runs), "--out", str(out)]) == 0
    data, readme = _read(out)
    combos = {(r["train_mask"], r["test_mask"]) for r in data["rows"]}
    assert combos == {(False, False), (False, True), (True, False), (True, True)}
    assert len(set(data["meta"]["checkpoints"].values())) == 2  # two different models


def test_masks_figure_quick(tmp_path):
    out = tmp_path / "masks"
    assert main(["reproduce", "mad-masks", "--quick", "--out", str(out)]) == 0
    assert (out / "masks.png").stat().st_size > 1000
    _read(out)


def test_predict_command_reports_vote_accuracy(runs, tmp_path, capsys):
    ckpt = runs / "mad-digits" / "model.safetensors"
    if not ckpt.exists():
        assert main(["reproduce", "mad-votes", "--quick", "--runs-dir", str(runs), "--out", str(tmp_path / "v")]) == 0
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
    for r in data["rows"]:
        assert r["paper_defense"] is not None  # the paper's number sits beside ours
        for key in ("attack_acc", "gray_box_defense", "black_box_defense", "gray_box_sub_defense",
                    "black_box_sub_defense", "adaptive_defense"):
            assert 0.0 <= r[key] <= 1.0
    # quick mode runs the adaptive threat on all images: the subset columns repeat the full ones
    assert all(r["gray_box_sub_defense"] == r["gray_box_defense"] for r in data["rows"])
    assert "adaptive EOT" in readme and "black-box transfer" in readme
    assert (out / "eval-adaptive" / "summary.md").exists()
    assert (out / "eval" / "records.jsonl").exists()


def test_fig3_quick(runs, tmp_path):
    out = tmp_path / "fig3"
    assert main(["reproduce", "mad-fig3", "--quick", "--runs-dir", str(runs), "--out", str(out)]) == 0
    data, _ = _read(out)
    full = {r["attack"]: r["accuracy"] for r in data["rows"] if r["kept"] == 1.0}
    none = {r["attack"]: r["accuracy"] for r in data["rows"] if r["kept"] == 0.0}
    assert set(full) == set(none) and len(full) >= 4
    assert all(v == 1.0 for v in none.values())  # 0% kept = the clean, correctly classified images
    assert (out / "fig3.png").exists()


def test_sweeps_quick_tables_come_from_the_harness_runs(runs, tmp_path):
    out = tmp_path / "sweeps"
    assert main(["reproduce", "mad-sweeps", "--quick", "--runs-dir", str(runs), "--out", str(out)]) == 0
    data, readme = _read(out)
    for title in ("## Table 1", "## Table 2", "## Table 3", "gray-box"):
        assert title in readme
    assert (out / "sweeps.png").exists()
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


def _svhn_stand_in(root, monkeypatch):
    """Small SVHN-format .mat files (random images) that pass the md5 check (patched) and a 4-image val split."""
    import hashlib

    import numpy as np
    import scipy.io

    from conftest import patch_specs

    rng = np.random.default_rng(0)
    folder = root / "SVHN"
    folder.mkdir(parents=True)
    changes = {}
    for split, n in (("train", 40), ("test", 8)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        changes[f"SVHN/{split}_32x32.mat"] = {"md5": hashlib.md5((folder / f"{split}_32x32.mat").read_bytes()).hexdigest()}
    patch_specs(monkeypatch, "svhn", changes, default_val_size=4)


def test_mad_table_svhn_on_a_stand_in(tmp_path, monkeypatch):
    """The Table 5 (right half) path: ResNet18/SVHN presets, suite, surrogate, all three threats."""
    from maskdefense.experiments.mad.tables import QUICK_AUTOATTACK, QUICK_OVERRIDES, table_study

    root = tmp_path / "data"
    _svhn_stand_in(root, monkeypatch)
    out = tmp_path / "svhn"
    meta = table_study(out, dataset="svhn", data_root=root, runs_dir=tmp_path / "runs", limit=6, adaptive_n=3,
                       preset_overrides={"epochs": 1}, every=8, attack_overrides=QUICK_OVERRIDES,
                       autoattack=(3, (0.1,), QUICK_AUTOATTACK[2]), log=lambda m: None)
    assert meta["mad_preset"]["name"] == "mad-svhn-cpu" and meta["mad_preset"]["model"] == "resnet18_narrow"
    assert meta["surrogate_preset"]["name"] == "plain-svhn-cpu" and meta["preset_overrides"] == {"epochs": 1}
    data, readme = _read(out)
    assert len(data["rows"]) == 3 and all(r["paper_defense"] is not None for r in data["rows"])
    assert "Table 5 (right)" in readme and "resnet18_narrow" in readme
    # random stand-in images: the 1-epoch model may classify none correctly (then the cells are empty)
    assert all(r["adaptive_defense"] is None or 0 <= r["adaptive_defense"] <= 1 for r in data["rows"])
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
