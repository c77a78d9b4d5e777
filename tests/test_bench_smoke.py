"""Smoke test of the benchmark scripts in bench/: each runs its main() with --quick (plus a model subset
and one repeat, to stay within seconds) into tmp_path, and writes its .md and .json with the expected
keys and provenance. Speeds are NOT asserted (project policy): only that the ratios are positive numbers.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"
META_KEYS = {"command", "seed", "git_commit", "versions", "machine", "threads", "repeats", "quick", "wall_time_s"}
TOP_KEYS = {"benchmark", "issue", "goal", "config", "summary", "metadata"}


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}_under_test", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _positive(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _read(tmp_path: Path, name: str) -> dict:
    md, js = tmp_path / f"{name}.md", tmp_path / f"{name}.json"
    assert md.is_file() and js.is_file()
    text = md.read_text()
    assert "ratio" in text and "goal" in text.lower()
    rec = json.loads(js.read_text())
    assert TOP_KEYS <= set(rec), set(rec)
    assert META_KEYS <= set(rec["metadata"]), set(rec["metadata"])
    assert rec["metadata"]["quick"] is True and rec["metadata"]["threads"] == 1
    assert "torch" in rec["metadata"]["versions"]
    assert rec["metadata"]["wall_time_s"] >= 0
    return rec


def test_bench_models_quick(tmp_path):
    mod = _load("bench_models")
    mod.main(["--quick", "--threads", "1", "--repeats", "1", "--models", "lenet5,digits_cnn", "--out", str(tmp_path)])
    rec = _read(tmp_path, "bench_models")
    assert [r["model"] for r in rec["results"]] == ["lenet5", "digits_cnn"]
    for r in rec["results"]:
        for part in ("train", "inference"):
            p = r[part]
            assert _positive(p["ratio"]) and _positive(p["library"]["images_per_s"]) and _positive(p["plain"]["images_per_s"])
            assert p["goal"] == 0.97 and isinstance(p["met"], bool)
            assert _positive(p["flops_per_image"]) and _positive(p["gflops_per_s"]["library"])
        # the two paths do the same arithmetic
        assert r["train"]["max_abs_weight_difference_after_epoch"] == 0.0
        assert r["inference"]["predictions_equal"] is True
        assert r["train_flops_per_image"] > 2 * r["forward_flops_per_image"]


def test_bench_vote_quick(tmp_path):
    mod = _load("bench_vote")
    mod.main(["--quick", "--threads", "1", "--repeats", "1", "--n-max", "5", "--out", str(tmp_path)])
    rec = _read(tmp_path, "bench_vote")
    assert {r["model"] for r in rec["vote_throughput"]} == {"lenet5", "vgg16_narrow"}
    for r in rec["vote_throughput"]:
        assert _positive(r["ratio"]) and _positive(r["mad_vote"]["images_per_s"])
        assert r["goal"] == 0.95 and isinstance(r["met"], bool)
    a = rec["adaptive"]
    assert a["goal_evaluated"] is False  # no checkpoint given: flagged, never claimed
    assert {row["stop"] for row in a["rows"]} == {"exact", "test", "predictive"}
    for row in a["rows"]:
        assert row["n_max"] == 5 and row["passes_full"] == row["images"] * 5
        assert row["images"] <= row["passes_used"] <= row["passes_full"]  # at least one pass per image
        assert row["passes_saved"] == pytest.approx(1 - row["passes_used"] / row["passes_full"])
        assert row["passes_per_image"] == pytest.approx(row["passes_used"] / row["images"])
        assert sum(row["stopped"].values()) == row["images"] and row["met"] is None
        if row["stop"] == "exact":  # exact stopping never changes the full vote's decision
            assert row["agreement_with_full_vote"] == 1.0 and row["stopped"]["test"] == 0
            assert row["accuracy_adaptive"] == row["accuracy_full_vote"]


def test_bench_pgd_quick(tmp_path):
    """Foolbox and the harness are part of the install: they are always benchmarked (a missing one fails
    here, it is not skipped). ART is optional (the ``bench`` extra): without it, its row says why."""
    mod = _load("bench_pgd")
    mod.main(["--quick", "--threads", "1", "--repeats", "1", "--images", "8", "--batch", "8", "--steps", "3",
              "--out", str(tmp_path)])
    rec = _read(tmp_path, "bench_pgd")
    (r,) = rec["results"]
    assert r["model"] == "lenet5" and r["steps"] == 3
    assert _positive(r["methods"]["plain"]["images_per_s"])
    assert _positive(r["ratio_vs_plain"]["foolbox"])
    assert r["harness"]["entry_point"] == "maskdefense.eval.attack_and_verify"
    expected = ["harness", "foolbox"]
    if importlib.util.find_spec("art") is not None:
        expected.append("art")
        assert _positive(r["harness_vs_art"])
    else:
        assert "adversarial-robustness-toolbox not importable" in r["skipped"]["art"]
        assert r["harness_vs_art"] is None and r["ratio_vs_plain"]["art"] is None
    assert set(r["methods"]) == {"plain", *expected} and set(r["skipped"]) == {"harness", "foolbox", "art"} - set(expected)
    for k in ["plain", *expected]:
        assert k == "plain" or _positive(r["ratio_vs_plain"][k]), k
        c = r["checks"][k]
        assert c["max_linf"] <= r["eps"] + 1e-6 and c["in_range"]
        # every method attacked the same images (labels: the model's own predictions, so clean accuracy is 1)
        assert c["accuracy_under_attack"] < 1.0, k


def test_bench_train_speed_quick(tmp_path):
    mod = _load("bench_train_speed")
    mod.main(["--quick", "--threads", "1", "--repeats", "1", "--models", "vgg11_narrow", "--images", "32",
              "--variants", "channels_last,bf16", "--out", str(tmp_path)])
    rec = _read(tmp_path, "bench_train_speed")
    assert [r["variant"] for r in rec["summary"]] == ["fp32", "channels_last", "bf16"]
    for r in rec["summary"]:
        assert _positive(r["images_per_s"]) and _positive(r["ratio"])
    assert rec["summary"][0]["ratio"] == pytest.approx(1.0) and rec["summary"][0]["met"] is None
    assert all(isinstance(r["met"], bool) for r in rec["summary"][1:])


def test_bench_recipe_quick(tmp_path):
    """The accuracy-against-time benchmark on digits: a plain model, then a masked one fine-tuned from it;
    resumable (a second run reuses both models and the vote)."""
    mod = _load("bench_recipe")
    args = ["--quick", "--threads", "1", "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path / "runs")]
    rec = mod.main(args)
    plain, tuned = rec["presets"]["plain-digits"], rec["presets"]["mad-digits-recipe"]
    assert len(plain["curve"]) == 30 and len(tuned["curve"]) == 2
    assert all(pt["test_accuracy"] is not None for pt in plain["curve"] + tuned["curve"])
    secs = [pt["seconds"] for pt in plain["curve"] + tuned["curve"]]
    assert secs == sorted(secs)  # the fine-tuned curve starts where its starting model ended
    assert plain["test_accuracy"] == plain["curve"][-1]["test_accuracy"]
    assert set(tuned["vote"]) >= {"cell2_votes1", "cell2_votes5"}
    for name in ("README.md", "results.json", "accuracy_vs_time.png", "models/plain-digits.json"):
        assert (tmp_path / "out" / name).is_file(), name
    again = mod.main([*args, "--presets", "mad-digits-recipe"])
    assert again["presets"]["mad-digits-recipe"]["checkpoint_sha256"] == tuned["checkpoint_sha256"]
    assert again["presets"]["mad-digits-recipe"]["vote"] == tuned["vote"]
    # each entry keeps the run that measured it, not the last run's command
    assert again["presets"]["mad-digits-recipe"]["measured_by"] == tuned["measured_by"]
    assert "--presets" not in tuned["measured_by"]["command"]
    assert "--presets" in again["metadata"]["command"]
    (tmp_path / "out" / "notes.md").write_text("## Analysis\n\nhand-written words\n")
    mod.main([*args, "--render"])
    text = (tmp_path / "out" / "README.md").read_text()
    assert "hand-written words" in text and text.index("## Targets") < text.index("## Analysis") < text.index("## All")


def test_bench_remix_quick(tmp_path):
    import maskdefense.papers.remix  # noqa: F401  (its presets, when the package is not reinstalled)

    mod = _load("bench_remix")
    record = mod.main(["--quick", "--threads", "1", "--repeats", "1", "--out", str(tmp_path)])
    assert TOP_KEYS <= set(record) and META_KEYS <= set(record["metadata"])
    assert [r["dataset"] for r in record["summary"]] == ["mnist", "cifar10"]
    for r in record["summary"]:
        assert _positive(r["cost_vs_classifier"]) and _positive(r["remix_vs_floor"])
    assert (tmp_path / "bench_remix.md").exists() and (tmp_path / "bench_remix.json").exists()


def test_bench_unmask_quick(tmp_path):
    import maskdefense.papers.unmask  # noqa: F401  (its presets, when the package is not reinstalled)

    mod = _load("bench_unmask")
    record = mod.main(["--quick", "--threads", "1", "--repeats", "1", "--out", str(tmp_path)])
    rec = _read(tmp_path, "bench_unmask")
    assert [r["classifier"] for r in rec["summary"]] == ["baseline", "ours"]
    assert [r["network"] for r in record["blocks"]] == ["plain", "denoise1", "denoise4"]
    assert record["blocks"][0]["train_vs_plain"] == pytest.approx(1.0)
    for r in record["summary"]:
        assert _positive(r["cost_vs_classifier"]) and _positive(r["unmask_vs_floor"])
    for r in record["blocks"]:
        assert _positive(r["train_vs_plain"]) and _positive(r["infer_vs_plain"])


def test_bench_sfm_quick(tmp_path):
    import maskdefense.papers.sfm  # noqa: F401  (its presets, when the package is not reinstalled)

    mod = _load("bench_sfm")
    record = mod.main(["--quick", "--threads", "1", "--repeats", "1", "--out", str(tmp_path)])
    assert _read(tmp_path, "bench_sfm")["goal"] == record["goal"]
    assert [r["preprocess"] for r in record["summary"]] == ["bits", "median", "nlm"]
    for r in record["summary"]:
        assert _positive(r["cost_vs_classifier"]) and _positive(r["parts_vs_sfm"])
        assert sum(r[f"share_{k}"] for k in ("masker", "squeeze", "classifier")) == pytest.approx(1.0)


def test_bench_certify_quick(tmp_path):
    mod = _load("bench_certify")
    record = mod.main(["--quick", "--threads", "1", "--repeats", "1", "--out", str(tmp_path)])
    rec = _read(tmp_path, "bench_certify")
    assert [r["certifier"] for r in rec["summary"]] == ["ds:mode=column,band=2", "pc:patch=5,k=2",
                                                       "grid:cell=7,rate=0.875"]
    for r in record["summary"]:
        assert _positive(r["certify_vs_floor"]) and isinstance(r["met"], bool)
    assert [r["passes_per_image"] for r in record["summary"]] == [28, 10, 120]
