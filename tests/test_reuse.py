"""Re-evaluating another test-time configuration on stored gray-box/black-box adversarial examples."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from maskdefense.eval import ConfigMismatchError, build_defense, evaluate
from maskdefense.eval.reuse import reevaluate

from conftest import train_digits_linear  # noqa: E402

ATTACKS = "fgsm-linf:eps=0.1;pgd-linf:eps=0.1,steps=5"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    model, x, y = train_digits_linear(40)
    torch.manual_seed(3)
    surrogate = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    out = tmp_path_factory.mktemp("src")
    defense = build_defense("mad:cell=2,rate=0.25,n=5,n_grad=2", model)
    rep = evaluate(defense, (x, y), ATTACKS, "gray-box,black-box,adaptive", out_dir=out, surrogate=surrogate,
                   sanity=None, batch_size=16, progress=False, save_adversarial=True)
    return model, x, y, out, rep


def test_same_defense_reproduces_the_source_rows(source, tmp_path):
    model, x, y, out, rep = source
    again = reevaluate(build_defense("mad:cell=2,rate=0.25,n=5,n_grad=2", model), (x, y), out, out_dir=tmp_path,
                       progress=False)
    # same seeds, same examples: every reusable row and the clean numbers are identical
    assert again.clean == rep.clean
    for row in again.rows:
        assert row == rep.row(row["attack"], row["threat"])
    assert {r["threat"] for r in again.rows} == {"gray-box", "black-box"}  # adaptive rows were not reusable
    assert json.loads((tmp_path / "run.json").read_text())["source_run"] == str(out)


def test_other_test_cell_changes_defense_not_attack(source, tmp_path):
    model, x, y, out, rep = source
    other = reevaluate(build_defense("mad:cell=4,rate=0.75,n=5", model), (x, y), out, out_dir=tmp_path, progress=False)
    assert other.config["defense"]["cell"] == 4
    for row in other.rows:
        src = rep.row(row["attack"], row["threat"])
        assert row["attack_acc"] == src["attack_acc"] and row["n_correct"] == src["n_correct"]
    # 3/4 of 4x4 cells of an 8x8 image removed is a different classifier: some prediction differs
    assert other.clean["defense_clean_per_repeat"] != rep.clean["defense_clean_per_repeat"] or any(
        r["defense_acc"] != rep.row(r["attack"], r["threat"])["defense_acc"] for r in other.rows)
    # resumable: a second call finds everything done and gives the same summary
    before = (tmp_path / "summary.json").read_bytes()
    reevaluate(build_defense("mad:cell=4,rate=0.75,n=5", model), (x, y), out, out_dir=tmp_path, progress=False)
    assert (tmp_path / "summary.json").read_bytes() == before


def test_refusals(source, tmp_path):
    model, x, y, out, _ = source
    other_weights = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    with pytest.raises(ConfigMismatchError, match="weights differ"):
        reevaluate(build_defense("mad:cell=2,rate=0.25,n=5", other_weights), (x, y), out, out_dir=tmp_path / "a")
    with pytest.raises(ConfigMismatchError, match="other data"):
        reevaluate(build_defense("mad:cell=2,rate=0.25,n=5", model), (x[:20], y[:20]), out, out_dir=tmp_path / "b")
    plain = tmp_path / "nosave"
    evaluate(model, (x, y), "fgsm-linf:eps=0.1", out_dir=plain, sanity=None, batch_size=16, progress=False)
    with pytest.raises(ConfigMismatchError, match="save_adversarial"):
        reevaluate(model, (x, y), plain, out_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()  # refused before anything was written
    with pytest.raises(ConfigMismatchError, match="not a complete"):
        reevaluate(model, (x, y), tmp_path / "missing", out_dir=tmp_path / "d")


def test_a_busy_output_folder_is_refused_and_a_stale_run_json_does_not_block(source, tmp_path):
    from maskdefense.rundir import BusyError, exclusive

    model, x, y, out, rep = source
    target = tmp_path / "busy"
    with exclusive(target, "another run"):
        with pytest.raises(BusyError, match="in use"):
            reevaluate(build_defense("mad:cell=2,rate=0.25,n=5,n_grad=2", model), (x, y), out, out_dir=target,
                       progress=False)
        assert not (target / "run.json").exists()
    (target / "run.json").write_text(json.dumps({"config_hash": "0" * 64}))  # left by a failure, no records
    again = reevaluate(build_defense("mad:cell=2,rate=0.25,n=5,n_grad=2", model), (x, y), out, out_dir=target,
                       progress=False)
    assert again.clean == rep.clean


def test_the_source_is_read_only_and_not_while_it_is_written(source, tmp_path):
    """Re-voting reads the source's records without rewriting them, and refuses a source another run
    is still writing."""
    from maskdefense.rundir import BusyError, exclusive

    model, x, y, out, rep = source
    records = (out / "records.jsonl").read_bytes()
    with exclusive(out, "the source run"):
        with pytest.raises(BusyError, match="in use"):
            reevaluate(build_defense("mad:cell=2,rate=0.25,n=5,n_grad=2", model), (x, y), out,
                       out_dir=tmp_path / "a", progress=False)
    reevaluate(build_defense("mad:cell=2,rate=0.25,n=5,n_grad=2", model), (x, y), out, out_dir=tmp_path / "b",
               progress=False)
    assert (out / "records.jsonl").read_bytes() == records


def test_transfer_examples_serve_a_defense_with_another_base(source, tmp_path):
    """Black-box examples depend on the surrogate alone: another base network reuses them, with its own
    predictions, exactly as if it had been evaluated under the black-box threat itself."""
    model, x, y, out, _ = source
    torch.manual_seed(3)
    surrogate = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()  # the source fixture's surrogate
    torch.manual_seed(5)
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    transfer = tmp_path / "transfer"
    evaluate(model, (x, y), ATTACKS, "black-box", out_dir=transfer, surrogate=surrogate, sanity=None, batch_size=16,
             progress=False, save_adversarial=True)
    defense = build_defense("mad:cell=2,rate=0.25,n=5", other)
    direct = evaluate(defense, (x, y), ATTACKS, "black-box", out_dir=tmp_path / "direct", surrogate=surrogate,
                      sanity=None, batch_size=16, progress=False)
    again = reevaluate(defense, (x, y), transfer, out_dir=tmp_path / "again", progress=False)
    assert again.clean == direct.clean and again.rows == direct.rows
    assert again.config["model_sha256"] == direct.config["model_sha256"]
    assert again.summary["diagnostics"]["outputs:base"] == direct.summary["diagnostics"]["outputs:base"]
    # a source with gray-box rows was made against its own base: refused for another one
    with pytest.raises(ConfigMismatchError, match="weights differ"):
        reevaluate(defense, (x, y), out, out_dir=tmp_path / "refused")
