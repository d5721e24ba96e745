"""A study as ``compare`` records it, built from real metrics on real (tiny) images through the
typed results (:mod:`image_classifier.results`): ``make_study`` is the :class:`Study`,
``make_study_json`` its ``metrics.json`` (``Study.to_json``), so the file's schema is written
once, in the library, and a test that edits the JSON starts from what the library writes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from image_classifier.evaluate.metrics import compute_metrics, pairwise_mcnemar
from image_classifier.results import (
    DataSummary, DuplicateGroup, Duplicates, Environment, Misclassified, ModelResult, PairwiseTest, Selection, Speed,
    SplitInfo, Study, TestMetrics, Training, Validation,
)

#: Class names with HTML and Markdown in them: class folders may be named anything.
CLASSES = ["<script>alert(1)</script>", "Kobe & Co", "cost $5 | cheap"]


def _history(phases: list[tuple[str, int]]) -> list[dict]:
    rows, epoch = [], 0
    for phase, n in phases:
        for _ in range(n):
            epoch += 1
            rows.append({"epoch": epoch, "phase": phase, "train_loss": 1.0 / epoch, "train_accuracy": 1 - 0.5 / epoch,
                         "val_loss": 1.2 / epoch, "val_accuracy": 1 - 0.6 / epoch, "lr": 1e-3, "seconds": 0.1})
    return rows


def make_study(tmp_path: Path, n: int = 30, classes: list[str] = CLASSES) -> Study:
    """Two models scored on ``n`` images written under ``tmp_path/imgs``: ``tiny_a`` (skilled, two
    training phases, selected) and ``tiny_b`` (nearly guessing); their metrics and the McNemar
    test are computed by the library from seeded probabilities."""
    rng = np.random.default_rng(0)
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    y = np.arange(n) % 3
    paths = []
    for i in range(n):
        p = img_dir / f"{i}.jpg"
        Image.new("RGB", (60, 40), tuple(int(v) for v in rng.integers(0, 255, 3))).save(p)
        paths.append(p)
    models, correct = [], {}
    for k, (name, skill) in enumerate((("tiny_a", 2.5), ("tiny_b", 0.3))):
        logits = rng.normal(size=(n, 3))
        logits[np.arange(n), y] += skill
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        pred = probs.argmax(1)
        correct[name] = pred == y
        errors = [Misclassified(str(paths[i]), f"x/{i}.jpg", classes[y[i]], classes[pred[i]], float(probs[i].max()))
                  for i in np.flatnonzero(pred != y)]
        models.append(ModelResult(
            name=name, model_dir=f"models/{name}",
            validation=Validation(accuracy=0.9 - 0.2 * k, loss=0.3 + k, best_epoch=3),
            test=TestMetrics.from_json(compute_metrics(y, probs, classes)),
            speed=Speed(params=1234 * (k + 1), trainable_params=1000, size_mb=0.5 + k, flops_per_image=10**7,
                        latency_ms_p50=1.5 + 10 * k, latency_ms_p95=2.0 + 10 * k, e2e_latency_ms_p50=3.0,
                        e2e_latency_ms_p95=4.0, throughput_ips=500.0, throughput_batch=32, forward_is_whole=True),
            training=Training(seconds=12.5, peak_rss_mb=300.0,
                              history=_history([("frozen", 2), ("finetune", 3)] if k == 0 else [("scratch", 4)])),
            errors=errors,
        ))
    split = SplitInfo(path="split.csv", seed=0, manifest_sha256="ab" * 32,
                      sizes={"train": {c: 5 for c in classes}, "val": {c: 2 for c in classes},
                             "test": {c: n // 3 for c in classes}})
    duplicates = Duplicates(summary="1 group", policy="kept in one subset",
                            groups=[DuplicateGroup(kind="exact", files=["a.jpg", "b.jpg"], subset="train")])
    return Study(
        title="Test <b>study</b>", created_utc="2024-01-01T00:00:00Z",
        command="image-classifier compare data --models tiny_a,tiny_b --out 'runs/<x>'",
        data=DataSummary(root="data", classes=list(classes), num_images=n, split=split,
                         warnings=["2 exact duplicates <kept together>", "classes 5 -> 3"], duplicates=duplicates),
        environment=Environment(machine={"cpu": "test cpu", "cores": 2}, versions={"torch": "x"}),
        selection=Selection(best="tiny_a", criterion="validation accuracy"),
        models=models,
        pairwise=[PairwiseTest.from_json(p) for p in pairwise_mcnemar(correct)],
        timings={"evaluation_seconds": 1.0},
    )


def make_study_json(tmp_path: Path, n: int = 30, classes: list[str] = CLASSES) -> dict:
    """``make_study``'s ``metrics.json`` content (``Study.to_json``)."""
    return make_study(tmp_path, n, classes).to_json()
