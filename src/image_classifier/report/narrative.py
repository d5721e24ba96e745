"""The report's sentences: the headline, what is significant, the honesty notes.

Shared by the Markdown and HTML renderers so both say the same thing. Returns plain text; the
HTML renderer escapes it.
"""
from __future__ import annotations

import math

from image_classifier.report.tables import fmt_mb, fmt_ms, fmt_params
from image_classifier.results import TEST_IMAGES, Study

#: The study's published accuracies, measured on all 437 images of which it had trained on 351.
PUBLISHED = {"alexnet_like": 0.90, "mobilenet_v2": 0.94, "resnet50": 0.94}
PUBLISHED_NAMES = {"alexnet_like": "AlexNet-like", "mobilenet_v2": "MobileNetV2", "resnet50": "ResNet-50"}
ALPHA = 0.05


def _describe(r: dict, noun: str = TEST_IMAGES) -> str:
    acc_word = "test accuracy" if noun == TEST_IMAGES else "accuracy"
    text = (f"{acc_word} {r['test_accuracy']:.1%} (95 % CI {r['test_accuracy_ci_low']:.0%}–"
            f"{r['test_accuracy_ci_high']:.0%} on {r['test_n']} {noun}), macro-F1 {r['macro_f1']:.3f}")
    if r.get("family") == "face" and r["e2e_latency_ms_p50"] is not None:
        text += (f", {fmt_ms(r['e2e_latency_ms_p50'])} ms per image from file to label (finding faces and "
                 f"their descriptors in dlib; the no-face fallback network alone {fmt_ms(r['latency_ms_p50'])} ms)")
    elif r["latency_ms_p50"] is not None:
        text += f", {fmt_ms(r['latency_ms_p50'])} ms per image at batch 1"
    if r["size_mb"] is not None:
        text += f", {fmt_mb(r['size_mb'])} MB on disk ({fmt_params(r['params'])} parameters)"
    return text


def headline(study: Study) -> str:
    """One sentence: which model, how accurate, how fast, how big."""
    rows = study.rows()
    best = next((r for r in rows if r["selected"]), None)
    if best is not None:
        return f"Best model (by validation accuracy): {best['model']} — {_describe(best, study.scored_set)}."
    if len(rows) == 1:
        return f"{rows[0]['model']}: {_describe(rows[0], study.scored_set)}."
    return "No model was selected."


def significance_lines(study: Study) -> list[str]:
    """Plain-language verdict on every pair of models from the exact McNemar test."""
    pairs = study.pairwise
    if not pairs:
        return []
    acc = {m.name: m.test.accuracy for m in study.models}
    lines = []
    significant, noise = [], []
    for p in pairs:
        a, b = p.model_a, p.model_b
        if acc[b] > acc[a]:
            a, b = b, a
            a_only, b_only = p.b_only_correct, p.a_only_correct
        else:
            a_only, b_only = p.a_only_correct, p.b_only_correct
        detail = (f"{a} {acc[a]:.1%} vs {b} {acc[b]:.1%}; {a} alone right on {a_only} images, "
                  f"{b} alone on {b_only}; p = {p.p_value:.3g}")
        if p.p_value < ALPHA:
            holm = p.p_holm
            extra = ""
            if holm is not None and len(pairs) > 1:
                extra = (" (still significant after Holm correction for "
                         f"{len(pairs)} comparisons)" if holm < ALPHA else
                         f" (but not after Holm correction for {len(pairs)} comparisons, p = {holm:.3g})")
            significant.append(f"{a} is more accurate than {b}: {detail}{extra}.")
        else:
            noise.append(f"{a} vs {b}: the difference is noise ({detail}).")
    lines += significant + noise
    return lines


def significance_summary(study: Study) -> str:
    pairs = study.pairwise
    if not pairs:
        return ""
    n_sig = sum(1 for p in pairs if p.p_value < ALPHA)
    n = study.models[0].test.n
    head = f"Exact McNemar tests on the same {n} test images: "
    if n_sig == 0:
        return head + (f"none of the {len(pairs)} pairwise accuracy difference{'s' if len(pairs) > 1 else ''} "
                       f"is significant at p < {ALPHA}; with this few test images, "
                       f"{'they are all' if len(pairs) > 1 else 'it is'} within what chance alone produces.")
    rest = len(pairs) - n_sig
    text = head + f"{n_sig} of {len(pairs)} pairwise accuracy differences {'is' if n_sig == 1 else 'are'} significant at p < {ALPHA}"
    if rest:
        text += f"; the other {rest} {'is' if rest == 1 else 'are'} within what chance alone produces on a test set this small"
    return text + "."


def uncertainty_note(study: Study) -> str:
    rows = study.rows()
    if not rows:
        return ""
    n = rows[0]["test_n"]
    widths = [r["test_accuracy_ci_high"] - r["test_accuracy_ci_low"] for r in rows]
    half = max(widths) / 2
    lead = (f"The test split has only {n} images, so each test accuracy" if study.scored_set == TEST_IMAGES
            else f"With {n} images scored, the accuracy")
    multi = len(rows) > 1
    return (f"{lead} is uncertain by up to about ±{half * 100:.0f} points (95 % bootstrap interval)"
            + ("; read differences smaller than that as noise unless McNemar's test says otherwise." if multi else ".")
            + (" The best model was chosen on the validation split, never on the test split, so its test "
               "accuracy is an unbiased estimate." if study.selection is not None else ""))


def published_note(study: Study) -> str:
    """One sentence on the study's published accuracies; only where held-out test numbers are shown."""
    if study.scored_set != TEST_IMAGES:
        return ""
    rows = {r["model"]: r for r in study.rows()}
    here = [f"{PUBLISHED_NAMES[k]} {rows[k]['test_accuracy']:.2f}" for k in PUBLISHED if k in rows]
    published = " / ".join(f"{v:.2f} {PUBLISHED_NAMES[k]}" for k, v in PUBLISHED.items())
    sentence = (f"The original study published {published}, but measured them on all 437 images, 351 of "
                "which it had trained on, so its numbers are inflated and not comparable with held-out "
                "test accuracy")
    if here:
        sentence += f" (this run, held-out test split: {', '.join(here)})"
    return sentence + "."


def calibration_note(study: Study) -> str:
    eces = {m.name: m.test.ece for m in study.models if m.test.ece is not None and math.isfinite(m.test.ece)}
    if not eces:
        return ""
    worst = max(eces, key=eces.__getitem__)
    best = min(eces, key=eces.__getitem__)
    meaning = "0 means a reported confidence of 90 % is right 90 % of the time."
    if len(eces) == 1:
        return f"Calibration: expected calibration error (ECE, 15 bins) is {eces[best]:.3f}; {meaning}"
    return (f"Calibration: expected calibration error (ECE, 15 bins) ranges from {eces[best]:.3f} "
            f"({best}) to {eces[worst]:.3f} ({worst}); {meaning}")


def timing_note(study: Study) -> str:
    """A warning when the machine was busy while latencies were measured (they are then pessimistic)."""
    cores = study.environment.machine.get("logical cores")
    loads = [(m.name, m.speed.load_avg_1m if m.speed is not None else None) for m in study.models]
    loads = [(n, v) for n, v in loads if v is not None]
    if not cores or not loads:
        return ""
    busy = [(n, v) for n, v in loads if v > cores]
    if not busy:
        return ""
    listed = ", ".join(f"{n} {v:.1f}" for n, v in busy)
    return (f"Other work was running while speed was measured (1-minute load average above the {cores} "
            f"cores: {listed}), so those latency and throughput numbers are pessimistic; re-run on an idle "
            "machine for clean timings.")
