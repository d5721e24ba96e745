"""Every option declared once (issue 26): the parser, the Python keywords, the checks and the
command line that redoes a run all come from the dataclass fields of CompareOptions and TrainOptions."""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest
from conftest import make_image_folder

import image_classifier as ic
from image_classifier.cli import build_parser, main
from image_classifier.errors import OptionError
from image_classifier.optionspec import DEFAULT_KEEP, cache_root, check_keep, command_line, from_args, options_of
from image_classifier.data.options import CheckOptions, SplitOptions
from image_classifier.export.options import ExportOptions
from image_classifier.fileio import default_cache_dir
from image_classifier.inference.options import AddOptions
from image_classifier.people.options import GroupOptions
from image_classifier.serve.options import ServeOptions
from image_classifier.sorting.options import SortOptions
from image_classifier.study.comparison import reproduce_command
from image_classifier.study.evaluate import reproduce_command as evaluate_command
from image_classifier.study.options import CompareOptions, EvaluateOptions
from image_classifier.training.launch import torchrun_command
from image_classifier.training.options import TrainOptions

SRC = Path(__file__).resolve().parents[1] / "src"
#: Command-line options that are not options of the run: train's --recipe prints the recipe and exits;
#: group's folders and model are its inputs (``group_photos(data, out, namer=...)``), --json its output's form.
NOT_OPTIONS = {"-h", "--help", "--recipe"}
INPUTS = {"group": {"--out", "--model", "--json"}, "split": {"--out"}, "check": {"--json"}}


def _subparser(name: str) -> argparse.ArgumentParser:
    (action,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return action.choices[name]


def _cli_fields(cls: type) -> list:
    return [f for f, spec in options_of(cls) if spec.cli]


@pytest.mark.parametrize(("command", "cls"), [("compare", CompareOptions), ("train", TrainOptions),
                                              ("evaluate", EvaluateOptions), ("sort", SortOptions),
                                              ("group", GroupOptions), ("export", ExportOptions),
                                              ("serve", ServeOptions), ("split", SplitOptions),
                                              ("check", CheckOptions), ("add", AddOptions)])
def test_each_command_line_option_is_the_python_keyword_of_the_same_name(command, cls, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100000")  # --help on one line per option
    parser = _subparser(command)
    names = {f.name for f in fields(cls)}
    # Exclusive switches set one field: --resume | --fresh is resume=, --copy | --link is copy=.
    switches = {flag: f.name for f, spec in options_of(cls) for flag in (spec.switches or {})}
    flags = [s for a in parser._actions for s in a.option_strings if s not in NOT_OPTIONS | INPUTS.get(command, set())]
    assert flags  # the parser was built from the declarations
    for flag in flags:  # --no-NAME is NAME=False
        assert flag.removeprefix("--").removeprefix("no-").replace("-", "_") in names or flag in switches, flag
    # and every command-line field of the class is in --help, with its own help text
    help_text = parser.format_help()
    for f, spec in options_of(cls):
        texts = [text for _, text in spec.switches.values()] if spec.switches else [spec.help % {"default": f.default}]
        assert not spec.cli or all(text in help_text for text in texts), f.name
    assert {f.name for f, spec in options_of(cls) if not spec.cli} <= {
        "add_people_model", "invoked_as", "recipe", "channels_last", "speed_config", "workers", "seed",
        "verify_images"}


def test_every_command_that_reads_photos_has_the_same_cache_options(tmp_path, monkeypatch):
    commands = (CompareOptions, TrainOptions, SortOptions, GroupOptions, AddOptions)
    for name in ("cache", "cache_dir"):
        declared = {(f.default, spec.help, spec.metavar) for cls in commands for f, spec in options_of(cls)
                    if f.name == name}
        assert len(declared) == 1, name
    args = build_parser().parse_args(["add", "model", "person", "--out", "new", "--no-cache", "--cache-dir", "c"])
    assert from_args(AddOptions, args) == AddOptions(out="new", cache=False, cache_dir="c")
    monkeypatch.setenv("IMAGE_CLASSIFIER_CACHE_DIR", str(tmp_path / "env"))
    assert cache_root(True, None) == default_cache_dir() == tmp_path / "env"
    assert cache_root(True, tmp_path / "c") == tmp_path / "c" and cache_root(False, tmp_path / "c") is None


def test_compare_options_parsed_back_from_the_reproduce_command_are_the_same(tmp_path):
    data = make_image_folder(tmp_path / "photos", {"a": 2, "b": 2})
    given = CompareOptions(
        data=data, models=["simple_cnn", "mobilenet_v2"], out=tmp_path / "run", seed=4,
        split=tmp_path / "split.csv", weights={"mobilenet_v2": tmp_path / "w=1.pth"},
        set={"*": {"batch_size": "8"}, "simple_cnn": {"phases.0.epochs": "3"}}, speed_repeats=2, export=False,
        faces=False, audit=False, ensemble=False, ensemble_max_latency=12.5, keep=0.8, unknown=tmp_path,
        device="cpu", nproc=2,
    ).check()
    command = reproduce_command(given)
    assert command.startswith("image-classifier compare ") and "--no-audit" in command and "--set" in command
    args = build_parser().parse_args(shlex.split(command)[1:])
    again = from_args(CompareOptions, args).check()
    # What the command does not carry: how the run was started (resume, progress bars, language, cache).
    assert again == replace(given, resume="auto")


def test_evaluate_options_parsed_back_from_the_reproduce_command_are_the_same(tmp_path):
    given = EvaluateOptions(model=tmp_path / "m", data=tmp_path / "d", split=tmp_path / "s.csv", subset="val",
                            speed=False, backend="onnx", device="cpu", reject=False, unknown=tmp_path).check()
    command = evaluate_command(given, tmp_path / "out")
    again = from_args(EvaluateOptions, build_parser().parse_args(shlex.split(command)[1:])).check()
    assert again == replace(given, out=tmp_path / "out")
    # Without a split there is no subset to name; with one, the default subset is named.
    assert "--subset" not in evaluate_command(replace(given, split=None).check(), tmp_path / "out")
    assert "--subset test" in evaluate_command(replace(given, subset=None).check(), tmp_path / "out")


def test_the_torchrun_command_is_the_train_options_written_back(tmp_path):
    given = TrainOptions("simple_cnn", out=tmp_path / "m", seed=5, split=tmp_path / "s.csv", val=0.2, test=0.3,
                         epochs=2, batch_size=4, set={"phases.0.lr": 0.01, "augmentation.zoom": 0.1},
                         force=True, cache=False, threads=3, device="cpu", amp=False, keep=0.7, progress=False,
                         checkpoint_every=0.0)
    cmd = torchrun_command(tmp_path / "data", given, 2)
    assert cmd[cmd.index("train") + 1] == str(tmp_path / "data")
    args = build_parser().parse_args(cmd[cmd.index("train"):])
    again = from_args(TrainOptions, args)
    assert again == replace(given, set={"phases.0.lr": "0.01", "augmentation.zoom": "0.1"})  # values as text
    assert again.effective_recipe() == given.effective_recipe()
    # Defaults are not written: the child's own defaults are the same declarations.
    assert command_line(TrainOptions("simple_cnn")) == ["--arch", "simple_cnn"]


@pytest.mark.parametrize(("keep", "text"), [(1.5, "1.5"), (0.0, "0"), (-0.1, "-0.1"), (float("nan"), "nan")])
def test_a_bad_keep_is_refused_with_the_same_error_from_python_and_the_command_line(keep, text, tmp_path, capsys):
    data = make_image_folder(tmp_path / "d", {"a": 2, "b": 2})
    with pytest.raises(OptionError) as err:
        check_keep(keep)
    message = str(err.value)
    assert message == ("--keep must be between 0 and 1 (the fraction of known images kept, e.g. 0.9), "
                       f"not {keep}")
    assert isinstance(err.value, ValueError)
    for call in (lambda: ic.compare(data, out=tmp_path / "r", models=["simple_cnn"], keep=keep),
                 lambda: ic.train(data, arch="simple_cnn", out=tmp_path / "m", keep=keep),
                 lambda: SortOptions(out=tmp_path / "s", keep=keep)):
        with pytest.raises(OptionError) as err:
            call()
        assert str(err.value) == message
    assert main(["compare", str(data), "--models", "simple_cnn", "--out", str(tmp_path / "r"), "--keep", text]) == 2
    assert capsys.readouterr().err == f"image-classifier compare: error: {message}\n"
    assert main(["train", str(data), "--arch", "simple_cnn", "--out", str(tmp_path / "m"), "--keep", text]) == 2
    assert capsys.readouterr().err == f"image-classifier train: error: {message}\n"
    with pytest.raises(SystemExit) as exit_:  # predict checks it while parsing, before loading a model
        main(["predict", str(tmp_path), str(data), "--keep", text])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "m").exists()
    assert CompareOptions(data=data, models=["simple_cnn"]).keep == TrainOptions("simple_cnn").keep == DEFAULT_KEEP


def test_other_checks_give_the_same_error_from_python_and_the_command_line(tmp_path, capsys):
    data = make_image_folder(tmp_path / "d", {"a": 2, "b": 2})
    cases = [({"ensemble_max_latency": -1.0}, ["--ensemble-max-latency", "-1"]),
             ({"nproc": 0}, ["--nproc", "0"]), ({"weights": {"resnet50": "x.pth"}}, ["--weights", "resnet50=x.pth"]),
             ({"unknown": tmp_path / "none"}, ["--unknown", str(tmp_path / "none")])]
    for python, cli in cases:
        with pytest.raises(OptionError) as err:
            ic.compare(data, out=tmp_path / "r", models=["simple_cnn"], **python)
        assert main(["compare", str(data), "--models", "simple_cnn", "--out", str(tmp_path / "r"), *cli]) == 2
        assert capsys.readouterr().err == f"image-classifier compare: error: {err.value}\n"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("call", "old", "new"), [
    (lambda: ic.compare("d", overrides={"*": {"batch_size": 8}}), "overrides", "set"),
    (lambda: ic.compare("d", shortcut_audit=False), "shortcut_audit", "audit"),
    (lambda: ic.compare("d", ensemble_max_latency_ms=50), "ensemble_max_latency_ms", "ensemble_max_latency"),
])
def test_a_renamed_python_keyword_is_a_type_error_naming_the_new_one(call, old, new):
    with pytest.raises(TypeError, match=rf"unknown compare option\(s\) {old} \(now {new}\); the options are .*{new}"):
        call()


def test_the_parsers_are_built_without_loading_torch():
    code = ("import sys; from image_classifier.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'cv2', 'dlib', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert out.stdout.strip() == "[]"


def test_a_bad_export_option_is_refused_with_one_message_before_the_model_is_read(tmp_path, capsys):
    with pytest.raises(OptionError, match="^--opset must be between 11 and 20, not 9$"):
        ExportOptions(opset=9)
    assert main(["export", str(tmp_path / "no-model"), "--opset", "9"]) == 2
    assert "--opset must be between 11 and 20, not 9" in capsys.readouterr().err
    args = build_parser().parse_args(["export", "m", "--no-measure", "--quantize", "int8", "--opset", "13"])
    assert from_args(ExportOptions, args) == ExportOptions(measure=False, quantize="int8", opset=13)


@pytest.mark.parametrize(("argv", "message"), [
    (["--port", "70000"], "--port must be between 0 (any free port) and 65535, not 70000"),
    (["--threads", "0"], "--threads must be at least 1, not 0"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be above 0, not 0.0"),
    (["--keep", "0.9", "--no-reject"], "--keep and --no-reject contradict each other: give one"),
])
def test_a_bad_serve_option_is_refused_before_any_model_loads(argv, message, tmp_path, capsys):
    assert main(["serve", str(tmp_path / "no-model"), *argv]) == 2
    assert message in capsys.readouterr().err
    args = build_parser().parse_args(["serve", "run", "--models", "a, b", "--port", "0"])
    assert from_args(ServeOptions, args) == ServeOptions(models=("a", "b"), port=0)
