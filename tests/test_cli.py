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
