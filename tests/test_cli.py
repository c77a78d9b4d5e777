import subprocess
import sys

import pytest

from maskdefense.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_required_commands_exist():
    for name in ("train", "info", "demo"):
        assert name in _subcommands()


@pytest.mark.parametrize("command", _subcommands())
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: maskdefense" in out and len(out) > 200


def test_info_lists_datasets_and_models(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("digits", "mnist", "cifar10", "svhn", "lenet5", "vgg16", "resnet18", "mad-cifar10-cpu"):
        assert word in out


def test_unknown_names_give_one_clear_line(capsys, tmp_path):
    assert main(["train", "--dataset", "imagenet", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown dataset 'imagenet'" in err and "Traceback" not in err
    assert main(["train", "--model", "lenet", "--out", str(tmp_path)]) == 2
    assert "lenet5" in capsys.readouterr().err


def test_train_cli_writes_a_loadable_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--epochs", "2", "--mask-cell", "2", "--mask-rate", "0.5",
                 "--out", str(out), "--no-progress"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["info", "--checkpoint", str(out / "model.safetensors")]) == 0
    info = capsys.readouterr().out
    assert '"arch": "digits_cnn"' in info and '"test_accuracy"' in info and '"cell": 2' in info


def test_console_script_runs():
    r = subprocess.run([sys.executable, "-m", "maskdefense.cli", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "maskdefense" in r.stdout


# ---- bad input: one error line, exit code 2, before any work


def _refused(capsys, argv, *words):
    """``main(argv)`` exits with 2 and one line ``maskdefense CMD: error: ...`` on stderr, no traceback."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"maskdefense {argv[0]}: error: "), err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def digits_checkpoint(tmp_path):
    """An (untrained) digits model saved as a MAD-trained one: 4x4 cells at rate 1/2 at training,
    preset mad-digits (whose test cell is 2)."""
    import torch

    from maskdefense.checkpoint import save_checkpoint
    from maskdefense.models import create_model

    def make(**meta):
        torch.manual_seed(0)
        m = create_model("digits_cnn", in_channels=1, input_size=8, num_classes=10)
        path = tmp_path / "ck" / "model.safetensors"
        path.parent.mkdir(exist_ok=True)
        record = {"dataset": "digits", "transform": {"transform": "grid_mask", "cell": 4, "rate": 0.5}, **meta}
        save_checkpoint(m, path, record)
        return str(path)

    return make


@pytest.fixture
def fake_studies(monkeypatch):
    """Every study replaced by a recorder with the same signature: a flag the CLI fails to refuse shows up
    as a call (instead of a long run)."""
    import functools

    from maskdefense.experiments.mad import clean, sweeps, tables

    calls = []
    for mod in (clean, tables, sweeps):
        for name, fn in list(mod.STUDIES.items()):
            def fake(out, _name=name, **kw):
                calls.append((_name, kw))
                return {"wall_time_s": 0.0}

            monkeypatch.setitem(mod.STUDIES, name, functools.wraps(fn)(fake))
    return calls


@pytest.mark.parametrize("argv, words", [
    (["mad-sweeps", "--dataset", "mnist"], ("mad-sweeps does not take --dataset", "cifar10")),
    (["mad-masks", "--limit", "3"], ("mad-masks does not take --limit",)),
    (["mad-votes", "--autoattack-n", "5"], ("mad-votes does not take --autoattack-n",)),
    (["mad-masks", "--runs-dir", "r"], ("mad-masks does not take --runs-dir",)),
    (["mad-table", "--dataset", "imagenet"], ("mad-table runs on mnist, cifar10, svhn, not 'imagenet'",)),
    (["mad-fig3", "--dataset", "digits"], ("not 'digits'",)),
    (["mad-votes", "--quick", "--dataset", "cifar10"], ("--quick", "drop --dataset")),
    (["mad-table", "--limit", "0"], ("--limit", "must be >= 1")),
    (["mad-table", "--autoattack-n", "-1"], ("--autoattack-n", "must be >= 0")),
])
def test_reproduce_refuses_flags_the_study_does_not_take(fake_studies, capsys, tmp_path, argv, words):
    out = tmp_path / "out"
    _refused(capsys, ["reproduce", *argv, "--out", str(out)], *words)
    assert fake_studies == [] and not out.exists()


def test_reproduce_passes_the_flags_a_study_takes(fake_studies, capsys, tmp_path):
    assert main(["reproduce", "mad-table", "--dataset", "svhn", "--limit", "7", "--autoattack-n", "0",
                 "--runs-dir", str(tmp_path / "r"), "--seed", "3", "--out", str(tmp_path / "o")]) == 0
    ((name, kw),) = fake_studies
    assert name == "mad-table"
    assert {k: kw[k] for k in ("dataset", "limit", "autoattack_n", "seed", "quick")} == \
        {"dataset": "svhn", "limit": 7, "autoattack_n": 0, "seed": 3, "quick": False}
    assert kw["runs_dir"] == str(tmp_path / "r") and "data_root" not in kw


def _read_only_dir(path, monkeypatch):
    """A folder the process cannot write into (as root, chmod does not stop writes: say so to os.access)."""
    import os

    path.mkdir()
    path.chmod(0o555)
    if os.access(path, os.W_OK):
        real = os.access
        monkeypatch.setattr("maskdefense.rundir.os.access",
                            lambda p, mode, *a, **k: False if os.fspath(p) == os.fspath(path) else real(p, mode, *a, **k))
    return path


def test_reproduce_refuses_an_unusable_out_path(fake_studies, capsys, tmp_path, monkeypatch):
    f = tmp_path / "file"
    f.write_text("x")
    _refused(capsys, ["reproduce", "mad-masks", "--quick", "--out", str(f)], "is not a folder")
    ro = _read_only_dir(tmp_path / "ro", monkeypatch)
    _refused(capsys, ["reproduce", "mad-masks", "--quick", "--out", str(ro)], "not writable")
    assert fake_studies == []


def test_reproduce_refuses_a_busy_out_folder(fake_studies, capsys, tmp_path):
    from maskdefense.rundir import exclusive

    out = tmp_path / "busy"
    with exclusive(out, "another reproduce"):
        _refused(capsys, ["reproduce", "mad-masks", "--quick", "--out", str(out)], "in use by another process")
    assert fake_studies == []
    assert main(["reproduce", "mad-masks", "--quick", "--out", str(out)]) == 0  # free again


@pytest.mark.parametrize("extra, words", [
    (["--votes", "0"], ("--votes", "must be >= 1")),
    (["--votes", "5", "-2"], ("--votes", "must be >= 1")),
    (["--limit", "0"], ("--limit", "must be >= 1")),
    (["--split", "foo"], ("--split", "invalid choice")),
    (["--mask-rate", "1.5"], ("--mask-rate", "[0, 1]")),
    (["--mask-cell", "0"], ("--mask-cell", "must be >= 1")),
    (["--mask-cell", "3"], ("--mask-cell", "does not divide")),
    (["--mask-cell", "2", "--mask-rate", "nan"], ("--mask-rate", "finite")),
])
def test_predict_refuses_bad_values(digits_checkpoint, capsys, extra, words):
    _refused(capsys, ["predict", "--checkpoint", digits_checkpoint(), *extra], *words)


def test_predict_refuses_an_unusable_json_path(digits_checkpoint, capsys, tmp_path, monkeypatch):
    ck = digits_checkpoint()
    _refused(capsys, ["predict", "--checkpoint", ck, "--json", str(tmp_path)], "is a folder")
    (tmp_path / "file").write_text("x")
    _refused(capsys, ["predict", "--checkpoint", ck, "--json", str(tmp_path / "file" / "p.json")], "not a folder")
    ro = _read_only_dir(tmp_path / "ro", monkeypatch)
    _refused(capsys, ["predict", "--checkpoint", ck, "--json", str(ro / "p.json")], "not writable")


def _predict(capsys, tmp_path, ck, *extra):
    import json

    js = tmp_path / "p.json"
    assert main(["predict", "--checkpoint", ck, "--limit", "20", "--votes", "3", "--json", str(js), *extra]) == 0
    return json.loads(js.read_text()), capsys.readouterr().out


def test_predict_votes_with_the_presets_test_cell(digits_checkpoint, capsys, tmp_path):
    """Trained with 4x4 cells under preset mad-digits, whose test cell is 2: the vote uses 2 (the preset's
    test setting), not the training cell."""
    from maskdefense.training.presets import create_preset

    p = create_preset("mad-digits")
    assert (p.test_cell, p.test_rate) == (2, 0.5)  # the fixture's training cell (4) differs
    for preset in ("mad-digits", p.to_dict()):  # by name, or as the preset's record
        rec, out = _predict(capsys, tmp_path, digits_checkpoint(preset=preset))
        assert (rec["cell"], rec["rate"]) == (2, 0.5)
        assert "preset mad-digits" in rec["vote_setting_from"] and "cell 2, rate 0.5 (the test setting" in out
    rec, out = _predict(capsys, tmp_path, digits_checkpoint(preset="mad-digits"), "--mask-cell", "4")
    assert (rec["cell"], rec["rate"]) == (4, 0.5) and rec["vote_setting_from"].startswith("given")


def test_predict_without_a_preset_says_it_uses_the_training_cell(digits_checkpoint, capsys, tmp_path):
    for meta in ({}, {"preset": "not-a-registered-preset"}):
        rec, out = _predict(capsys, tmp_path, digits_checkpoint(**meta))
        assert (rec["cell"], rec["rate"]) == (4, 0.5)
        assert "training setting" in out and "no known preset" in out


def test_predict_a_plain_preset_checkpoint_runs_unmasked(digits_checkpoint, capsys, tmp_path):
    """A preset without test masking (its test rate has a default value but no cell): no vote, no error."""
    ck = digits_checkpoint(preset="plain-digits", transform=None)
    rec, out = _predict(capsys, tmp_path, ck)
    assert "vote_accuracy" not in rec and "no vote" in out
    rec, out = _predict(capsys, tmp_path, ck, "--mask-cell", "2", "--mask-rate", "0.25")
    assert (rec["cell"], rec["rate"]) == (2, 0.25) and set(rec["vote_accuracy"]) == {"3"}


def test_train_with_a_preset_records_it_for_predict(tmp_path, capsys):
    """`train --preset` writes the preset's record into the checkpoint, so `predict` votes with the preset's
    test cell; with the masking overridden the preset's test setting no longer applies and is not recorded."""
    from maskdefense.checkpoint import read_metadata

    out = tmp_path / "run"
    assert main(["train", "--preset", "mad-digits", "--epochs", "1", "--limit", "64", "--out", str(out)]) == 0
    meta = read_metadata(out / "model.safetensors")
    assert meta["preset"]["name"] == "mad-digits" and meta["preset"]["test_cell"] == 2
    rec, printed = _predict(capsys, tmp_path, str(out / "model.safetensors"))
    assert "preset mad-digits" in printed
    out2 = tmp_path / "run2"
    assert main(["train", "--preset", "mad-digits", "--mask-cell", "4", "--epochs", "1", "--limit", "64",
                 "--out", str(out2)]) == 0
    assert "preset" not in read_metadata(out2 / "model.safetensors")


def test_library_errors_of_a_study_are_one_line(fake_studies, capsys, tmp_path, monkeypatch):
    """A study that hits a refused resume (ConfigMismatchError) or a damaged record file ends in one line, exit 2."""
    from maskdefense.eval import ConfigMismatchError, RecordFileError
    from maskdefense.experiments.mad import clean

    for err in (ConfigMismatchError("holds a run with a different configuration"), RecordFileError("damaged records")):
        def boom(out, _err=err, **kw):
            raise _err

        monkeypatch.setitem(clean.STUDIES, "mad-masks", boom)
        _refused(capsys, ["reproduce", "mad-masks", "--quick", "--out", str(tmp_path / "o")], str(err))


def test_evaluate_list_shows_every_papers_suites():
    """The suites come from the papers' plugins, loaded at the first lookup, not by an import order."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "from maskdefense.commands.evaluate import list_everything; "
                          "print(list_everything())"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in ("mad-table5-mnist", "mad-table4-cifar10", "sfm-transfer", "sfm-graybox"):
        assert f"  {name} " in out.stdout, out.stdout
