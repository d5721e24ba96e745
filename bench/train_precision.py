"""Does bf16 autocast keep accuracy? Train each architecture in bf16 and in fp32 on the same split and seeds.

    .venv/bin/python bench/train_precision.py [--archs mobilenet_v2,resnet50] [--seeds 0,1]
        [--set phases.0.epochs=5 ...] [--out precision.json]

For every (architecture, seed) the tool trains twice, ``precision=bf16`` and ``precision=fp32``,
everything else equal, and prints best validation accuracy, test accuracy (the saved model, which
predicts in fp32), validation loss, epochs and training time side by side. The recipes' default
precision is bf16; an architecture whose bf16 accuracy falls short of fp32 beyond seed noise
should get ``precision = "fp32"`` in its default recipe.
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WEIGHTS = {"mobilenet_v2": SHARED / "weights" / "mobilenet_v2-b0353104.pth",
           "resnet50": SHARED / "weights" / "resnet50-keras-imagenet.pth"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SHARED / "datasets" / "athletes")
    ap.add_argument("--split", type=Path, help="split manifest (default: a new seed-0 split)")
    ap.add_argument("--archs", default="mobilenet_v2,resnet50,alexnet_like,simple_cnn")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_",
                    help="recipe override for all runs (e.g. to shorten them); prefix ARCH: for one architecture")
    ap.add_argument("--out", type=Path, default=Path("train_precision.json"))
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")

    from image_classifier import load_model
    from image_classifier.data.split import load_split, make_split
    from image_classifier.runtime import configure
    from image_classifier.training import ImageCache, train_model

    configure()
    split = load_split(args.split, args.data) if args.split else make_split(args.data, seed=0)
    cache = ImageCache()
    test = split.subset("test")
    labels = np.array([r.label for r in test])
    rows = []
    for arch in [a for a in args.archs.split(",") if a]:
        overrides = {}
        for item in args.set_:
            key, _, value = item.partition("=")
            scope, colon, rest = key.partition(":")
            if colon and scope != arch:
                continue
            overrides[rest if colon else key] = value
        for seed in [int(s) for s in args.seeds.split(",")]:
            for precision in ("bf16", "fp32"):
                with tempfile.TemporaryDirectory() as tmp:
                    r = train_model(split, arch, Path(tmp) / "m", weights=WEIGHTS.get(arch), seed=seed, cache=cache,
                                    progress=False, checkpoint_every=1e9,
                                    set={**overrides, "precision": precision})
                    probs = load_model(Path(tmp) / "m").predict_proba([str(x.path) for x in test])
                row = {"arch": arch, "seed": seed, "precision": precision, "val_accuracy": r.best_val_accuracy,
                       "val_loss": r.best_val_loss, "test_accuracy": float(np.mean(probs.argmax(1) == labels)),
                       # the saved model evaluated on val in fp32, as it predicts (same for both runs)
                       "inference_val_loss": r.card["best"]["inference_val_loss"],
                       "inference_val_accuracy": r.card["best"]["inference_val_accuracy"],
                       "epochs": len(r.history), "best_epoch": r.best_epoch, "seconds": r.train_seconds,
                       "overrides": overrides}
                rows.append(row)
                print(f"{arch:<13} seed {seed} {precision}: val acc {row['val_accuracy']:.3f} (loss {row['val_loss']:.4f}; "
                      f"fp32 inference {row['inference_val_accuracy']:.3f} / {row['inference_val_loss']:.4f}) "
                      f"test acc {row['test_accuracy']:.3f}  epochs {row['epochs']} (best {row['best_epoch']})  "
                      f"{row['seconds']:.0f} s", flush=True)
                args.out.write_text(json.dumps(rows, indent=2))
    print(f"\nresults: {args.out} (split: {len(split.subset('train'))} train / {len(split.subset('val'))} val / "
          f"{len(test)} test; the test accuracy of one model on {len(test)} images has about +/-"
          f"{200 * (0.25 / max(len(test), 1)) ** 0.5:.0f} points of 95% uncertainty)")


if __name__ == "__main__":
    main()
