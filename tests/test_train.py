"""Training end to end on tiny synthetic images: real training, real files, real subprocesses."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import image_classifier
import train_helpers
from conftest import SHARED, make_image_folder, wait_until
from image_classifier import load_model
from image_classifier.data.split import load_split, make_split
from image_classifier.errors import OptionError, WeightsNotFoundError
from image_classifier.runs import CARD_NAME, RESUME_NAME, SPLIT_NAME
from image_classifier.saved_model import read_card
from image_classifier.training import ImageCache, TrainOptions, train_model
from image_classifier.training.checkpoint import load_resume_state
from image_classifier.training.loop import plan_phases
from image_classifier.trust.temperature import MIN_IMAGES

TINY = train_helpers.TINY
WEIGHTS = SHARED / "weights"
MOBILENET_WEIGHTS = WEIGHTS / "mobilenet_v2-b0353104.pth"
RESNET_WEIGHTS = WEIGHTS / "resnet50-keras-imagenet.pth"

# Registered while these tests run, not at import: other modules parametrize over list_archs().
pytestmark = pytest.mark.usefixtures("tiny_arch")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("train_data"), {"red": 14, "blue": 14, "green": 14})
    return root, make_split(root, seed=0, val=0.2, test=0.2)


def _history_metrics(history):
    return [(h["epoch"], h["phase"], h["train_loss"], h["val_loss"], h["val_accuracy"]) for h in history]


def test_a_registered_architecture_trains_learns_and_saves_a_complete_card(data, tmp_path):
    root, split = data
    result = train_model(split, TINY, tmp_path / "m", seed=1, progress=False,
                         set={"phases.scratch.epochs": 8, "early_stopping_patience": 8})
    assert [h["epoch"] for h in result.history] == list(range(1, 9))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_val_accuracy >= 0.8, result.history  # colour + stripes: easy to learn
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)
    card = read_card(tmp_path / "m")
    assert card.status == "complete"
    assert card.architecture == TINY and card.classes == split.classes
    assert card.split_manifest_sha256 == split.manifest_sha256
    assert card.recipe["phases"][0]["epochs"] == 8
    assert card.best["epoch"] == result.best_epoch
    # The saved model, loaded and asked for labels, gets the validation accuracy its card records.
    val = split.subset("val")
    labels = load_model(tmp_path / "m", backend="torch").predict([r.path for r in val])
    right = sum(label == r.class_name for label, r in zip(labels, val))
    assert card.best["inference_val_accuracy"] == pytest.approx(right / len(val))
    assert len(card.history) == 8 and card.train_seconds > 0 and card.peak_rss_mb > 0
    for key in ("versions", "preprocessing", "arch_options", "args", "precision", "data", "phases"):
        assert getattr(card, key) is not None
    assert not (tmp_path / "m" / RESUME_NAME).exists(), "the resume state is removed after a finished run"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "weights.safetensors"]


def test_python_train_returns_a_loaded_model_that_tells_the_classes_apart(data, tmp_path, monkeypatch):
    root, _ = data
    monkeypatch.chdir(tmp_path)  # the default model directory is models/<arch> under the working directory
    model = image_classifier.train(root, arch=TINY, epochs=8, seed=1, val=0.2, test=0.2, cache=False, progress=False,
                                   set={"early_stopping_patience": 8})
    out = tmp_path / "models" / TINY
    assert model.model_dir.resolve() == out.resolve()
    assert (out / CARD_NAME).is_file() and (out / SPLIT_NAME).is_file()
    assert model.classes == ["blue", "green", "red"]
    assert len(model.card.history) == 8  # epochs=8 set the recipe's one phase
    # The test images of the split it saved, which training never saw: an easy task (colour and
    # stripes), so the model must do far better than chance (1/3).
    split = load_split(out / SPLIT_NAME, root)
    test = split.subset("test")
    truth = [split.classes[r.label] for r in test]
    model.reject = False  # the classes only: "none of these" (a rejected image) is tests/test_rejection.py's
    labels = model.predict([str(r.path) for r in test])
    assert set(labels) <= set(model.classes) and len(set(labels)) >= 2
    accuracy = sum(a == b for a, b in zip(labels, truth)) / len(test)
    assert len(test) >= 6 and accuracy >= 0.8, (labels, truth)
    # Calibrated after training, on the split's validation images (T = 1 with a note when too few).
    cal = model.card.calibration
    assert cal.fitted_on == "validation" and cal.images == len(split.subset("val"))
    assert model.temperature == cal.temperature
    if cal.images < MIN_IMAGES:
        assert cal.temperature == 1.0 and cal.notes
    else:
        assert cal.nll_after <= cal.nll_before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"arch": "nope"}, "unknown architecture 'nope'; available: "),
        ({"arch": TINY, "val": 1.2}, "--val must be a fraction between 0 and 1, not 1.2"),
        ({"arch": TINY, "val": 0.6, "test": 0.5}, "leave nothing to train on"),
        ({"arch": TINY, "epochs": 0}, "epochs must be at least 1, not 0"),
        ({"arch": TINY, "epochs": -3}, "epochs must be at least 1, not -3"),
        ({"arch": TINY, "batch_size": 0}, "batch_size must be at least 1, not 0"),
        ({"arch": TINY, "threads": 0}, "threads must be at least 1"),
        ({"arch": TINY, "checkpoint_every": -1}, "--checkpoint-every must be 0 or more seconds"),
        ({"arch": TINY, "resume": True, "force": True}, "--resume and --force contradict each other"),
        ({"arch": TINY, "set": {"bach_size": 3}}, "bad recipe option: unknown recipe key 'bach_size'"),
        ({"arch": TINY, "set": {"phases.0.lr": "fast"}}, "bad recipe option: phases.0.lr: expected float"),
        ({"arch": TINY, "weights": "w.pth"}, "trains from scratch: it takes no pretrained --weights"),
    ],
)
def test_train_options_reject_what_cannot_work_with_a_message_saying_what(options, message):
    with pytest.raises(OptionError) as err:
        TrainOptions(**options).validate()
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)  # what a Python caller expects of a bad argument


def test_python_train_checks_its_arguments_before_reading_any_image(data, tmp_path):
    root, _ = data
    with pytest.raises(OptionError, match="is not a folder"):
        image_classifier.train(tmp_path / "no_such_folder", arch=TINY, out=tmp_path / "m")
    with pytest.raises(OptionError, match=r"unknown training option\(s\) epoch; the options are .*epochs"):
        image_classifier.train(root, arch=TINY, out=tmp_path / "m", epoch=3)
    with pytest.raises(OptionError, match="epochs must be at least 1"):
        image_classifier.train(root, arch=TINY, out=tmp_path / "m", epochs=0)
    with pytest.raises(WeightsNotFoundError, match="no such file"):
        image_classifier.train(root, arch="mobilenet_v2", out=tmp_path / "m", weights=tmp_path / "missing.pth")
    assert not (tmp_path / "m").exists()  # nothing written, no split made


@pytest.mark.slow
def test_saved_model_predicts_the_same_probabilities_in_a_fresh_process(data, tmp_path):
    root, split = data
    train_model(split, TINY, tmp_path / "m", seed=0, progress=False, set={"phases.0.epochs": 2})
    images = [str(r.path) for r in split.subset("test")]
    here = load_model(tmp_path / "m").predict_proba(images)
    code = train_helpers.child_prelude() + (
        "import json, sys\nfrom image_classifier import load_model\n"
        f"p = load_model({str(tmp_path / 'm')!r}).predict_proba({images!r})\n"
        "json.dump(p.tolist(), sys.stdout)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    there = np.array(json.loads(out.stdout))
    assert there.shape == (len(images), 3)
    np.testing.assert_allclose(there, here, rtol=0, atol=1e-6)
    np.testing.assert_allclose(there.sum(axis=1), 1.0, atol=1e-5)


def test_same_seed_same_metrics_and_another_seed_differs(data, tmp_path):
    _, split = data
    kw = dict(progress=False, set={"phases.0.epochs": 3})
    a = train_model(split, TINY, tmp_path / "a", seed=5, **kw)
    b = train_model(split, TINY, tmp_path / "b", seed=5, **kw)
    c = train_model(split, TINY, tmp_path / "c", seed=6, **kw)
    assert _history_metrics(a.history) == _history_metrics(b.history)
    assert _history_metrics(a.history) != _history_metrics(c.history)
    assert read_card(tmp_path / "a").weights_sha256 == read_card(tmp_path / "b").weights_sha256


def test_cached_activation_phases_keep_frozen_batchnorm_and_match_their_plan(data, tmp_path):
    _, split = data
    recipe = train_helpers.two_phase_recipe(head_epochs=3, top_epochs=3)
    plans = plan_phases(recipe, 9)
    assert [(p.cut, p.store_cuts) for p in plans] == [(9, (4, 9)), (4, (4,))]
    torch.manual_seed(0)
    result = train_model(split, TINY, tmp_path / "m", recipe=recipe, seed=0, progress=False)
    assert [h["phase"] for h in result.history] == ["frozen"] * 3 + ["finetune"] * 3
    assert [p["name"] for p in result.phases] == ["frozen", "finetune"]
    # The first block (backbone[0:4], frozen in both phases) must be exactly as initialised,
    # BatchNorm running statistics included: frozen layers stay in eval mode.
    from image_classifier.training.seeding import seed_global

    seed_global(0, "init")
    fresh = train_helpers.tiny_cnn(3)
    saved = load_model(tmp_path / "m").module
    for key, value in fresh.state_dict().items():
        if key.startswith(("backbone.0.", "backbone.1.")):
            assert torch.equal(saved.state_dict()[key], value), key
    # ... while the fine-tuned block changed.
    assert not torch.equal(saved.state_dict()["backbone.4.weight"], fresh.state_dict()["backbone.4.weight"])


def test_training_never_reads_the_test_images(data, tmp_path):
    root, _ = data
    import shutil

    copy = Path(shutil.copytree(root, tmp_path / "data"))
    split = make_split(copy, seed=0, val=0.2, test=0.2)
    for record in split.subset("test"):
        Path(record.path).unlink()  # a test image read by training would now fail loudly
    result = train_model(split, TINY, tmp_path / "m", progress=False, set={"phases.0.epochs": 2})
    assert result.card.data["skipped"] == {}
    assert result.card.data["train_images"] == len(split.subset("train"))


def test_decode_cache_on_disk_is_reused_by_content(data, tmp_path):
    _, split = data
    from image_classifier.models import get_arch

    prep = get_arch(TINY).preprocessing
    first = ImageCache(tmp_path / "cache")
    a = first.decode(split.subset("train"), prep)
    assert first.stats["decoded"] == len(a) and first.stats["disk_hits"] == 0
    second = ImageCache(tmp_path / "cache")
    b = second.decode(split.subset("train"), prep)
    assert second.stats == {"memory_hits": 0, "disk_hits": len(b), "decoded": 0}
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # The pixels are exactly what prediction feeds the model.
    record = split.subset("train")[0]
    expected = prep.to_uint8(load_model_free_decode(record.path, prep.input_size))[0]
    assert torch.equal(a.images[0], expected)


def load_model_free_decode(path, size):
    from image_classifier.data.decode import load_image

    return [load_image(path, target_size=size)]


def _main(args, capsys):
    """The real CLI entry point, in this process (the tiny architecture is registered here)."""
    from image_classifier.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def _cli(args, *, timeout=180, **kw):
    code = train_helpers.child_prelude() + "from image_classifier.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.mark.slow
def test_kill_at_any_moment_then_resume_gives_the_uninterrupted_result(data, tmp_path):
    root, split = data
    split_csv = tmp_path / "split.csv"
    split.save(split_csv)
    epochs = 30
    overrides = {"phases.0.epochs": epochs, "early_stopping_patience": epochs}
    common = ["train", root, "--arch", TINY, "--split", split_csv, "--checkpoint-every", "0", "--no-cache",
              "--no-progress"] + [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "run"
    code = train_helpers.child_prelude() + "from image_classifier.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, common + ["--out", out])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: (out / RESUME_NAME).exists() or proc.poll() is not None, timeout=120,
                   what="the first checkpoint")
        assert proc.poll() is None, proc.communicate()
        # Not a wait for anything: a moment somewhere inside a later epoch or checkpoint write (any must do).
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    state = load_resume_state(out / RESUME_NAME)
    done = state["state"]["global_epoch"]
    assert 1 <= done < epochs, "killed too late to test resuming"
    # Whatever moment the kill hit, the best model so far is a complete, loadable model.
    interrupted = load_model(out)
    assert interrupted.card.status == "training"
    assert interrupted.predict_proba([str(split.subset("val")[0].path)]).shape == (1, 3)

    # Resuming needs only the output directory: split, seed and recipe come from the interrupted run.
    resumed = _cli(["train", root, "--arch", TINY, "--out", out, "--resume", "--no-cache", "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at epoch {done + 1}" in resumed.stderr
    card = read_card(out)
    assert card.status == "complete" and not (out / RESUME_NAME).exists()

    straight = train_model(split, TINY, tmp_path / "straight", set=overrides, progress=False)
    assert _history_metrics(card.history) == _history_metrics(straight.history)
    assert card.weights_sha256 == straight.card.weights_sha256


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "nope"], "unknown architecture 'nope'"),
        (["--arch", TINY, "--set", "bach_size=3"], "unknown recipe key 'bach_size'"),
        (["--arch", TINY, "--set", "phases.0.epochs"], "--set expects KEY=VALUE"),
        (["--arch", TINY, "--set", "batch_size=lots"], "batch_size: expected int"),
        (["--arch", TINY, "--set", "phases.0.epochs=0"], "epochs must be at least 1"),
        (["--arch", TINY, "--set", "precision=fp8"], "precision must be one of"),
        (["--arch", TINY, "--set", "augmentation.interpolation=cubic"],
         "augmentation.interpolation must be one of ('bilinear', 'nearest'), not 'cubic'"),
        (["--arch", TINY, "--set", "phases.0.trainable_from=40"], "past the end of the backbone"),
        (["--arch", "mobilenet_v2", "--weights", "/nonexistent/w.pth"], "no such file"),
        (["--arch", TINY, "--weights", "/nonexistent/w.pth"], "trains from scratch"),
        (["--arch", TINY, "--weights", "resnet50=/nonexistent/w.pth"], "but --arch is"),
        (["--arch", TINY, "--resume", "--force"], "contradict"),
        (["--arch", TINY, "--resume"], "nothing to resume"),
        (["--arch", TINY, "--config", "/nonexistent.toml"], "cannot read recipe file"),
    ],
)
def test_bad_train_arguments_give_clear_errors(data, tmp_path, capsys, args, message):
    root, split = data
    split.save(tmp_path / "split.csv")
    proc = _main(["train", root, "--split", tmp_path / "split.csv", "--out", tmp_path / "m", "--no-cache", *args], capsys)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_existing_model_needs_force_and_recipe_round_trips_through_a_config_file(data, tmp_path, capsys):
    root, split = data
    split.save(tmp_path / "split.csv")
    base = ["train", root, "--split", tmp_path / "split.csv", "--arch", TINY, "--no-cache", "--no-progress"]
    printed = _main(base + ["--set", "phases.0.epochs=2", "--set", "augmentation.zoom=0.1", "--recipe"], capsys)
    assert printed.returncode == 0, printed.stderr
    (tmp_path / "r.toml").write_text(printed.stdout)
    first = _main(base + ["--config", tmp_path / "r.toml", "--out", tmp_path / "m"], capsys)
    assert first.returncode == 0, first.stderr
    assert "best epoch" in first.stdout and str(tmp_path / "m") in first.stdout
    card = read_card(tmp_path / "m")
    assert f"{TINY}: temperature" in first.stdout and card.calibration.images == len(split.subset("val"))
    assert card.args["seed"] == 0 and card.args["arch"] == TINY and card.args["config"] == str(tmp_path / "r.toml")
    assert load_split(tmp_path / "m" / SPLIT_NAME, root).manifest_sha256 == split.manifest_sha256  # the split it used
    assert card.recipe["phases"][0]["epochs"] == 2 and card.recipe["augmentation"]["zoom"] == 0.1
    again = _main(base + ["--out", tmp_path / "m", "--set", "phases.0.epochs=1"], capsys)
    assert again.returncode == 2 and "--force" in again.stderr
    forced = _main(base + ["--out", tmp_path / "m", "--set", "phases.0.epochs=1", "--force"], capsys)
    assert forced.returncode == 0, forced.stderr
    assert len(read_card(tmp_path / "m").history) == 1


def test_predict_cli_prints_top_k_json_and_reports_bad_files(data, tmp_path, capsys):
    _, split = data
    train_model(split, TINY, tmp_path / "m", progress=False, set={"phases.0.epochs": 2})
    good = [str(r.path) for r in split.subset("test")[:2]]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    proc = _main(["predict", tmp_path / "m", *good, bad, "--json", "--top-k", "2"], capsys)
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["classes"] == split.classes
    # --backend auto without an exported model.onnx runs PyTorch, and says so.
    assert doc["backend"] == "torch" and "backend: torch (" in proc.stderr
    ok = [p for p in doc["predictions"] if "error" not in p]
    assert [p["image"] for p in ok] == good
    expected = load_model(tmp_path / "m").predict_proba(good)
    for p, row in zip(ok, expected):
        assert len(p["top"]) == 2 and p["top"][0]["probability"] >= p["top"][1]["probability"]
        assert p["top"][0]["label"] == split.classes[int(row.argmax())]
        assert p["probabilities"][p["top"][0]["label"]] == pytest.approx(float(row.max()), abs=1e-6)
    assert doc["predictions"][-1] == {"image": str(bad), "error": "not an image: the file holds text",
                                      "kind": "unsupported"}
    text = _main(["predict", tmp_path / "m", good[0]], capsys)
    assert text.returncode == 0 and text.stdout.count("0.") == 3  # three classes shown (default top 3)
    bad_k = _main(["predict", tmp_path / "m", good[0], "--top-k", "0"], capsys)
    assert bad_k.returncode == 2 and "--top-k" in bad_k.stderr
    not_model = _main(["predict", tmp_path, good[0]], capsys)
    assert not_model.returncode == 2
    assert f"{tmp_path} is neither a saved model (no model.json) nor a compare run (no best)" in not_model.stderr


def test_missing_pretrained_weights_stop_with_the_expected_file_and_place(data, tmp_path, monkeypatch):
    _, split = data
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("IMAGE_CLASSIFIER_WEIGHTS", raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        train_model(split, "mobilenet_v2", tmp_path / "m", progress=False)
    text = str(err.value)
    assert "mobilenet_v2-b0353104.pth" in text and str(tmp_path / "torch_home" / "hub" / "checkpoints") in text
    assert not (tmp_path / "m" / "model.json").exists()
    with pytest.raises(WeightsNotFoundError, match="not found"):
        train_model(split, "resnet50", tmp_path / "m", weights=tmp_path / "missing.pth", progress=False)
    with pytest.raises(ValueError, match="trains from scratch"):
        train_model(split, TINY, tmp_path / "m", weights=tmp_path / "missing.pth", progress=False)


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "weights"), [("mobilenet_v2", MOBILENET_WEIGHTS), ("resnet50", RESNET_WEIGHTS)])
def test_pretrained_backbones_train_from_the_shared_weights(data, tmp_path, arch, weights):
    if not weights.is_file():
        pytest.skip(f"{weights} is not present")
    small = make_image_folder(tmp_path / "d", {"red": 6, "blue": 6}, size=(64, 48))
    split = make_split(small, seed=0, val=0.3, test=0.2)
    result = train_model(split, arch, tmp_path / arch, weights=weights, progress=False,
                         set={"phases.frozen.epochs": 1, "phases.finetune.epochs": 1, "feature_views": 1})
    card = result.card
    assert card.pretrained_weights["source"] == str(weights)
    import hashlib

    assert card.pretrained_weights["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert [h["phase"] for h in result.history] == ["frozen", "finetune"]
    model = load_model(tmp_path / arch)
    assert model.predict_proba([str(split.subset("val")[0].path)]).shape == (1, 2)
    if arch == "resnet50":
        assert card.arch_options["block_variant"] == "v1"  # read from the weights' JSON card


def test_replacing_a_saved_model_never_breaks_the_one_on_disk(data, tmp_path, monkeypatch):
    """A kill between writing new weights and switching the card leaves the old model loadable."""
    import image_classifier.card
    import image_classifier.saved_model as sm

    _, split = data
    train_model(split, TINY, tmp_path / "m", seed=0, progress=False, set={"phases.0.epochs": 1})
    images = [str(r.path) for r in split.subset("val")]
    before = load_model(tmp_path / "m").predict_proba(images)
    card = read_card(tmp_path / "m")
    other = train_helpers.tiny_cnn(3)  # different weights, same architecture

    def killed(*_args, **_kw):
        raise KeyboardInterrupt("killed while switching the card")

    for stable in (False, True):
        with monkeypatch.context() as m:
            m.setattr(image_classifier.card, "atomic_write_json", killed)
            with pytest.raises(KeyboardInterrupt):
                sm.save_model(other, card, tmp_path / "m", stable_name=stable)
        np.testing.assert_array_equal(load_model(tmp_path / "m").predict_proba(images), before)
    sm.save_model(other, card, tmp_path / "m", stable_name=False)  # interim checkpoint name
    assert read_card(tmp_path / "m").weights_file == "weights.next.safetensors"
    after = load_model(tmp_path / "m").predict_proba(images)
    assert not np.allclose(after, before)
    sm.save_model(other, card, tmp_path / "m")  # final save: back to the stable name, same weights
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "weights.safetensors"]
    np.testing.assert_array_equal(load_model(tmp_path / "m").predict_proba(images), after)
