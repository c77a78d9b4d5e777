"""UNMASK's experiments: the part-segmentation task and its metrics, networks trained on part data (presets,
reuse, the train command), adversarial training presets, the ``unmask:`` defense spec, Table 7's attacks, the
adaptive target's gradient through ``detect``, and the three studies in quick mode (end to end, resumed)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import maskdefense.papers.unmask as paper  # registers the presets (the package's entry point may be stale)
from maskdefense.checkpoint import save_checkpoint
from maskdefense.data import part_dataset, synthetic_parts
from maskdefense.defenses.registry import build_defense
from maskdefense.defenses.unmask import UNMASK
from maskdefense.eval.threat import DetectorAware, bound_labels, make_target
from maskdefense.experiments import unmask as E
from maskdefense.experiments.common import ensure_model
from maskdefense.models import create_model
from maskdefense.spec import SpecError
from maskdefense.training.config import TrainConfig
from maskdefense.training.loop import Trainer
from maskdefense.training.presets import PartPreset, Preset, add_preset, create_preset
from maskdefense.training.tasks import SegmentationTask, segmentation_metrics
from maskdefense.validation import InputError

QUIET = {"log": lambda s: None, "progress": False}
TINY_DATA = {"source": "synthetic_parts", "class_parts": {"a": ["x", "y"], "b": ["y", "z"]}, "size": 16,
             "n": {"train": 48, "val": 16, "test": 16}}
TINY_UNET = {"channels": [8, 16], "strides": [2], "num_res_units": 1}


class FixedLogits(nn.Module):
    """A 'network' whose logits are fixed part maps (one-hot, scaled): image ``i`` (every pixel ``i / 10``) gets
    map ``i``."""

    def __init__(self, maps: torch.Tensor, channels: int) -> None:
        super().__init__()
        self.z = 5.0 * F.one_hot(maps, channels).permute(0, 3, 1, 2).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.z[(x[:, 0, 0, 0] * 10).round().long()]


# ---- segmentation ------------------------------------------------------------------------------------------

def _hand_case() -> tuple[torch.Tensor, torch.Tensor]:
    truth, pred = torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 4, dtype=torch.long)
    truth[0, 0, :] = 1       # part 0: 4 pixels
    truth[0, 1, :2] = 2      # part 1: 2 pixels
    pred[0, 0, :3] = 1       # 3 of them found ...
    pred[0, 3, 3] = 1        # ... and one pixel of background taken for part 0
    pred[0, 1, :2] = 2
    pred[1, 2, 2] = 2        # image 1 is all background; one pixel taken for part 1
    return truth, pred


@pytest.mark.parametrize("area, sets", [(0.1, 1.0), (0.05, 0.5)])
def test_segmentation_metrics_by_hand(area, sets):
    truth, pred = _hand_case()
    images = torch.arange(2.0).view(2, 1, 1, 1).expand(2, 3, 4, 4) / 10
    m = segmentation_metrics(FixedLogits(pred, 3), images, truth.to(torch.uint8), area_threshold=area, batch_size=1)
    assert m["pixel_accuracy"] == pytest.approx(29 / 32)
    assert m["mean_iou"] == pytest.approx((3 / 5 + 2 / 3) / 2)  # part 0: 3 / (4 + 4 - 3); part 1: 2 / 3
    # at 10% of the pixels the stray pixel of image 1 is no part; at 5% it is, and its set is wrong
    assert m["part_set_accuracy"] == sets


def test_segmentation_task_moves_part_maps_with_their_images_and_checks_them():
    task = SegmentationTask(nn.Conv2d(1, 3, 1))
    maps = torch.randint(0, 5, (6, 8, 8), dtype=torch.uint8)
    x = maps[:, None].float() / 10  # the image shows its map
    xa, ya = task.augment(x, maps, torch.Generator().manual_seed(0), 2, True)
    assert ya.dtype == torch.uint8 and torch.equal((xa[:, 0] * 10).round().to(torch.uint8), ya)
    assert not torch.equal(ya, maps)  # something was cropped or flipped
    with pytest.raises(InputError, match="part maps"):
        task.check_targets(torch.zeros(6, dtype=torch.long), 6)
    with pytest.raises(InputError, match="integer"):
        task.check_targets(torch.zeros(6, 8, 8), 6)
    with pytest.raises(InputError, match="shape"):  # a classification task still wants class labels
        Trainer(create_model("digits_cnn"), (torch.rand(6, 1, 8, 8), maps), progress=False)


def test_segmentation_task_trains_on_generated_parts():
    d = synthetic_parts({"a": ["x", "y"], "b": ["y", "z"]}, "train", size=16, n=32)
    torch.manual_seed(0)
    net = create_model("part_unet", num_parts=3, input_size=16, **TINY_UNET)
    hist = Trainer(SegmentationTask(net), (d.images, d.part_map), (d.images[:16], d.part_map[:16]),
                   TrainConfig(epochs=3, batch_size=16, lr=1e-2, hflip=True), **QUIET).fit()
    assert hist[-1].train_loss < hist[0].train_loss
    assert set(hist[-1].val) == {"pixel_accuracy", "mean_iou", "part_set_accuracy"}
    assert hist[-1].val["pixel_accuracy"] > hist[0].val["pixel_accuracy"]


# ---- networks on part data, the defense spec ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_part_models(tmp_path_factory):
    runs = tmp_path_factory.mktemp("part-runs")
    ext = PartPreset("test-extractor", "segment", TINY_DATA, "part_unet", model_kwargs=TINY_UNET, epochs=1, batch_size=16)
    clf = PartPreset("test-classifier", "classify", TINY_DATA, "resnet18", model_kwargs={"width": 0.125}, epochs=1,
                     batch_size=16)
    return runs, ensure_model(ext, runs, **QUIET), ensure_model(clf, runs, **QUIET)


def test_part_models_record_what_unmask_needs_and_are_reused(tiny_part_models):
    runs, (_, emeta), (_, cmeta) = tiny_part_models
    assert emeta["part_names"] == ["x", "y", "z"] and emeta["class_parts"] == {"a": ["x", "y"], "b": ["y", "z"]}
    assert {"test_pixel_accuracy", "test_mean_iou", "test_part_set_accuracy"} <= set(emeta)
    assert emeta["training_key"]["task"] == {"kind": "segment", "area_threshold": 0.01}
    assert cmeta["classes"] == ["a", "b"] and 0 <= cmeta["test_accuracy"] <= 1
    logs: list[str] = []
    again = ensure_model(PartPreset("test-extractor", "segment", TINY_DATA, "part_unet", model_kwargs=TINY_UNET,
                                    epochs=1, batch_size=16), runs, log=logs.append, progress=False)[1]
    assert logs == [] and again["sha256"] == emeta["sha256"]
    test = part_dataset(TINY_DATA, "test")
    assert test.images.shape == (16, 3, 16, 16) and test.classes == ("a", "b")
    with pytest.raises(ValueError, match="unknown keys"):
        part_dataset({**TINY_DATA, "bogus": 1}, "test")


def test_unmask_spec_builds_from_the_extractor_record(tiny_part_models, tmp_path):
    _, (_, emeta), (clf, _) = tiny_part_models
    u = build_defense(f"unmask:extractor={emeta['path']},classes=b+a,mode=defend,rule=min", clf)
    assert isinstance(u, UNMASK) and u.mode == "defend" and u.rule == "min" and u.classes == ("b", "a")
    assert u.attributes.tolist() == [[0, 1, 1], [1, 1, 0]] and u.area_threshold == 0.01
    x = part_dataset(TINY_DATA, "test").images[:4]
    assert u.predict(x).shape == (4,)
    assert build_defense(f"unmask:extractor={emeta['path']},classes=a+b,threshold=0.5", clf).threshold == 0.5
    with pytest.raises(SpecError, match="no part set"):
        build_defense(f"unmask:extractor={emeta['path']},classes=a+c", clf)
    plain = tmp_path / "plain.safetensors"
    save_checkpoint(create_model("part_unet", num_parts=3, input_size=16, **TINY_UNET), plain, {})
    with pytest.raises(SpecError, match="class_parts"):
        build_defense(f"unmask:extractor={plain},classes=a+b", clf)


def test_train_command_trains_a_part_preset(tmp_path, capsys):
    from maskdefense.cli import main

    add_preset(PartPreset("test-parts-cli", "segment", TINY_DATA, "part_unet", model_kwargs=TINY_UNET, epochs=1,
                          batch_size=16))
    assert main(["train", "--preset", "test-parts-cli", "--out", str(tmp_path / "k"), "--no-progress"]) == 0
    assert "part-set accuracy" in capsys.readouterr().out and (tmp_path / "k" / "model.safetensors").exists()
    assert main(["train", "--preset", "test-parts-cli", "--dataset", "mnist", "--out", str(tmp_path / "k2")]) == 2
    assert main(["train", "--preset", "test-parts-cli", "--mask-cell", "2", "--out", str(tmp_path / "k3")]) == 2


def test_adversarial_presets_train_adversarially_under_their_own_key(tmp_path):
    plain = Preset("test-digits-plain", "digits", "digits_cnn", epochs=1)
    adv = replace(plain, name="test-digits-at", task={"name": "adversarial", "eps": 0.1, "mode": "fast"})
    _, pmeta = ensure_model(plain, tmp_path, **QUIET)
    _, ameta = ensure_model(adv, tmp_path, **QUIET)
    assert "task" not in pmeta["training_key"]
    assert ameta["training_key"]["task"] == {"name": "adversarial", "eps": 0.1, "mode": "fast"}
    assert ameta["task"]["attack"] == {"mode": "fast", "norm": "linf", "eps": 0.1, "alpha": pytest.approx(0.125),
                                       "steps": 1, "random_start": True}
    assert ameta["task"]["task"] == "adversarial" and ameta["weights_sha256"] != pmeta["weights_sha256"]
    for row in ("resnet101", "resnet101_denoise1"):
        assert create_preset(paper.TABLE6_PRESETS[(row, True)]).task == paper.TABLE6_CPU_AT
        assert create_preset(paper.TABLE6_PRESETS[(row, False)]).task is None


def test_cpu_presets_say_how_they_differ_and_match_the_class_sets():
    for cs in paper.CLASS_SETS:
        for key in paper.TABLE7_CPU_MODELS.values():
            p = create_preset(paper.preset_name(cs, key))
            assert p.differs and p.data["class_parts"] == {c: list(v) for c, v in paper.class_set_parts(cs).items()}
        d = part_dataset({**p.data, "n": {"test": 20}}, "test")  # the class set's data, as class_set_data gives it
        ref = paper.class_set_data(cs, "test", n=20)
        assert torch.equal(d.images, ref.images) and d.classes == paper.CLASS_SETS[cs]
    ext = create_preset("unmask-extractor-cpu")
    assert set(ext.data["class_parts"]) == set(paper.CLASS_PARTS) and ext.data["seed"] != 0
    assert create_preset("unmask-cs3a-resnet101-denoise4-full").model == "resnet101_denoise4"


# ---- attacks and the adaptive target -----------------------------------------------------------------------

def test_table7_attacks_and_the_l2_conversion():
    assert E.l2_eps(300, 32) == pytest.approx(300 / 255 * 32 / 150) and E.l2_eps(600, 150) == pytest.approx(600 / 255)
    specs = E.table7_specs(32)
    assert [s.display for s in specs] == ["PGD-Linf 8", "PGD-L2 300", "MIA-Linf 8", "MIA-L2 300", "PGD-Linf 16",
                                          "PGD-L2 600", "MIA-Linf 16", "MIA-L2 600"]
    assert [s.name for s in specs[:4]] == ["pgd-linf", "pgd-l2", "mi-fgsm", "mi-fgsm-l2"]
    assert specs[0].eps == pytest.approx(8 / 255) and specs[5].eps == pytest.approx(0.502, abs=1e-3)
    assert all(s.params["steps"] == 20 for s in specs) and specs[2].params["mu"] == 1.0
    assert specs[0].params["rel_stepsize"] == pytest.approx(2.5 / 20)


def test_the_adaptive_target_gets_a_gradient_through_detect():
    torch.manual_seed(0)
    m = create_model("resnet18", num_classes=3, width=0.125, input_size=16).eval()
    k = create_model("part_unet", num_parts=44, input_size=16, **TINY_UNET).eval()
    u = UNMASK(m, k, paper.attributes("CS3a"), temperature=0.05).eval()
    x = torch.rand(4, 3, 16, 16)
    g = E.detect_gradient(u, x)
    assert g["nonzero_fraction"] == 1.0 and g["mean_l1"] > 0
    target, info = make_target(u, "adaptive")
    assert isinstance(target, DetectorAware) and "detector" in info
    wrong = (m(x).argmax(1) + 1) % 3  # labels M gets wrong: the detector's term is active on every image

    def grad(t: nn.Module) -> torch.Tensor:
        xg = x.clone().requires_grad_(True)
        with bound_labels(t, wrong):
            out = t(xg)
        (gr,) = torch.autograd.grad(out.gather(1, wrong[:, None]).sum(), xg)
        return gr

    with_detector = grad(target)
    u.detect = lambda x, **kw: torch.zeros(len(x))  # the same target without the detector's gradient
    assert (with_detector - grad(target)).abs().sum() > 0


def test_the_adaptive_attack_moves_the_parts_to_the_new_class_and_passes_the_test():
    """Hand-made UNMASK (tests/test_unmask.py): parts red, green, blue (image quarters); class 0 = {red, green},
    class 1 = {red, blue}. The image shows {red, green} (label 0), M says 1: d = 1 - 1/3 >= 0.5, rejected. The
    detector-aware attack must remove green and add blue (K's parts -> V[1]) so that the example passes."""
    from maskdefense.attacks.run import run_attack
    from maskdefense.defenses.base import REJECT
    from test_unmask import _images, _unmask

    x, y = _images({0, 1}, {0, 1}), torch.zeros(2, dtype=torch.long)
    u = _unmask([1, 1], threshold=0.5, scale=10.0, temperature=0.05)
    assert u.predict(x).tolist() == [REJECT, REJECT]
    target, _ = make_target(u, "adaptive", detector_weight=10.0)
    with bound_labels(target, y):
        xa = run_attack("pgd-linf:eps=1.0,steps=40", target, x, y, torch.Generator().manual_seed(0))
    assert u.part_sets(xa).tolist() == [[1, 0, 1]] * 2 and u.predict(xa).tolist() == [1, 1]


# ---- the studies, quick ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_studies(tmp_path_factory):
    """Every study in quick mode, once (Table 7 and the adaptive study share their models)."""
    root = tmp_path_factory.mktemp("unmask-quick")
    kw = dict(quick=True, runs_dir=root / "runs", log=lambda s: None)
    return root, {name: fn(root / name, **kw) for name, fn in E.STUDIES.items()}


def test_table6_quick(quick_studies):
    root, metas = quick_studies
    out = root / "unmask-table6"
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [(r["row"], r["adversarial"]) for r in rows] == list(paper.TABLE6_PRESETS)
    summary = {q["label"]: q for q in json.loads((out / rows[2]["preset"] / "summary.json").read_text())["rows"]}
    assert rows[2]["pgd10"] == summary["PGD-Linf 10/255"]["robust_acc"]
    readme = (out / "README.md").read_text()
    assert "95.40%" in readme and "59.21%" in readme and "Is the attack budget enough?" in readme
    assert len(list((out / "checkpoints").glob("*.json"))) == 4
    assert metas["unmask-table6"]["budget_check"]


def test_table7_quick_numbers_follow_the_code_conventions(quick_studies):
    root, metas = quick_studies
    out = root / "unmask-table7"
    meta = metas["unmask-table7"]
    rows = json.loads((out / "results.json").read_text())["meta"]["rows_detail"]
    assert [(r["class_set"], r["model"]) for r in rows] == [(cs, m) for cs in E.QUICK_SETS for m in ("baseline", "ours")]
    for r in rows:  # the code's defense accuracy = the parts' class is the label, over all attacked images
        d = out / r["class_set"] / r["model"]
        labels = {x["idx"]: x["label"] for x in map(json.loads, (d / "defend-max" / "records.jsonl").open())
                  if x["kind"] == "clean"}
        spec = E.table7_specs(16, steps=2)[0]
        recs = [x for x in map(json.loads, (d / "defend-max" / "records.jsonl").open())
                if x["kind"] == "attack" and x["attack"] == spec.key]
        assert r["pgd-linf 8"] == pytest.approx(sum(x["pred_defense_adv"][0] == labels[x["idx"]] for x in recs) / len(recs))
        assert 0 <= r["clean_fpr"] <= 1 and r["code"]["clean"]["n"] == meta["n_images"]
        # the plotted threshold point: d >= t among the pooled ROC's images (clean twins of the examples fooling M)
        det = list(map(json.loads, (d / "detect" / "records.jsonl").open()))
        clean = {x["idx"]: x["score"] for x in det if x["kind"] == "clean"}
        fooled = [x for x in det if x["kind"] == "attack" and x["pred_base_adv"] != x["label"]]
        t = float(torch.tensor(paper.REFERENCE_THRESHOLD, dtype=torch.float32))
        point = r["code"]["roc_point"]
        assert point["tpr"] == pytest.approx(sum(x["score_adv"] >= t for x in fooled) / len(fooled))
        assert point["fpr"] == pytest.approx(sum(clean[x["idx"]] >= t for x in fooled) / len(fooled))
    readme = (out / "README.md").read_text()
    assert "(83.97)" in readme and "PASCAL-Part is not on this machine" in readme and (out / "roc.png").exists()
    # the core's detector conventions beside the code's: a rejection counted as failed can only lower accuracy
    assert "## The same in the harness's conventions" in readme and "rejected = failed" in readme
    pairs = [(a["defense_acc"], a["defense_acc_rejected_failed"])
             for r in rows for a in r["harness"]["detect"].values()]
    assert pairs and all(f <= d for d, f in pairs if None not in (d, f))
    assert {c["defense"].split(":")[1].strip() for c in meta["budget_check"]} >= {"no defense", "UNMASK defend-max"}


def test_adaptive_quick_and_resume(quick_studies):
    root, metas = quick_studies
    meta = metas["unmask-adaptive"]
    assert all(g["nonzero_fraction"] > 0 for g in meta["detect_gradient"].values())
    assert set(meta["part_shift"]) == {"gray-box", "adaptive"}
    rows = json.loads((root / "unmask-adaptive" / "results.json").read_text())["rows"]
    assert {(r["system"], r["threat"]) for r in rows} >= {("detect", "adaptive"), ("defend", "adaptive"),
                                                          ("detect-soft", "adaptive"), ("alone-ours", "gray-box")}
    readme = (root / "unmask-adaptive" / "README.md").read_text()
    assert "| detect-soft | PGD-Linf 8/255 |" in readme and "83.97%" in readme  # the thesis, CS5b
    assert any(r["attack"].startswith("Square") for r in rows if r["system"] == "defend" and r["threat"] == "adaptive")
    # the defense mode's oblivious rows: UNMASK on the examples made against M alone, not attacked again
    out = root / "unmask-adaptive"
    assert json.loads((out / "defend" / "summary.json").read_text())["threats"] == ["adaptive"]
    for run in ("defend-oblivious", "defend-oblivious-budget-x2"):
        source = json.loads((out / run / "run.json").read_text())["source_run"]
        assert source == str(out / "alone-ours" / run.replace("defend-oblivious", "").lstrip("-"))
    alone = {r["attack"] for r in rows if r["system"] == "alone-ours"}
    assert {r["attack"] for r in rows if r["system"] == "defend" and r["threat"] == "gray-box"} == alone
    assert {c["threat"] for c in meta["budget_check"] if c["defense"] == "defend"} == {"gray-box", "adaptive"}
    logs: list[str] = []
    again = E.adaptive_study(root / "unmask-adaptive", quick=True, runs_dir=root / "runs", log=logs.append)
    assert not any("training" in s or "epoch" in s for s in logs)
    assert json.loads((root / "unmask-adaptive" / "results.json").read_text())["rows"] == rows
    assert again["part_shift"] == meta["part_shift"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["unmask-table6", "unmask-table7"])
def test_quick_studies_resume(quick_studies, name):
    root, _ = quick_studies
    before = json.loads((root / name / "results.json").read_text())["rows"]
    E.STUDIES[name](root / name, quick=True, runs_dir=root / "runs", log=lambda s: None)
    assert json.loads((root / name / "results.json").read_text())["rows"] == before


def test_reproduce_lists_the_studies_and_refuses_a_dataset(tmp_path):
    from maskdefense.cli import main
    from maskdefense.commands.reproduce import studies

    assert {"unmask-table6", "unmask-table7", "unmask-adaptive"} <= set(studies())
    assert main(["reproduce", "unmask-table7", "--dataset", "cifar10", "--out", str(tmp_path / "x")]) == 2
