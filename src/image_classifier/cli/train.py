"""``image-classifier train DATA --arch NAME``: train one model and save it as a self-contained directory."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from image_classifier.errors import OptionError
from image_classifier.optionspec import add_arguments, from_args, parse_arch_path
from image_classifier.runs import CARD_NAME, WEIGHTS_NAME
from image_classifier.training.options import TrainOptions


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train one architecture and save the model (weights + JSON card)",
        description=(
            "Train one architecture on the train subset of DATA, choosing when to stop on the "
            "validation subset (the test subset is never used), and save the best model (lowest "
            f"validation loss) in --out: {WEIGHTS_NAME} + {CARD_NAME} (classes, preprocessing, "
            "recipe, history, versions). The directory predicts on its own: `image-classifier "
            "predict DIR IMAGE...` or image_classifier.load_model(DIR). The recipe is the "
            "architecture's default (print it with --recipe); change it with --set KEY=VALUE or "
            "--config FILE.toml."
        ),
        epilog=(
            "examples:\n"
            "  image-classifier train photos --arch mobilenet_v2 --out models/mnv2\n"
            "  image-classifier train photos --arch resnet50 --weights ../shared/weights/resnet50-keras-imagenet.pth\n"
            "  image-classifier train photos --arch simple_cnn --set phases.scratch.epochs=20 --set batch_size=16\n"
            "  image-classifier train photos --arch resnet50 --recipe          # print the effective recipe\n"
            "  image-classifier train photos --arch resnet50 --out m --resume  # continue an interrupted run\n"
            "  image-classifier train photos --arch alexnet_like --device cuda  # on the GPU (auto: if there is one)\n"
            "  torchrun --standalone --nproc_per_node=2 -m image_classifier train photos --arch resnet50  # 2 processes"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help="folder with one sub-folder of images per class")
    add_arguments(p, TrainOptions)
    p.add_argument("--recipe", action="store_true", help="print the effective recipe (TOML) and exit")
    p.set_defaults(func=run)
    return p


def _weights(value: str | None, arch: str) -> Path | None:
    """``--weights`` is a PATH or, as ``compare`` takes it, ARCH=PATH (a file whose name holds "=" is a PATH)."""
    if value is None:
        return None
    name, path = parse_arch_path(value)
    if name is not None and name != arch:
        raise OptionError(f"--weights {value} names {name!r}, but --arch is {arch!r}")
    return path


def run(args: argparse.Namespace) -> int:
    # Lazy (see image_classifier.cli): the training library brings in torch, which --help never needs.
    from tqdm.contrib.logging import logging_redirect_tqdm

    from image_classifier.recipe import recipe_to_toml
    from image_classifier.trust.fit import train_and_fit

    options = from_args(TrainOptions, args, weights=_weights(args.weights, args.arch),
                        progress=not args.no_progress and sys.stderr.isatty()).validate()
    if args.recipe:
        print(f"# effective recipe of {args.arch} (load it back with --config FILE)")
        print(recipe_to_toml(options.effective_recipe()), end="")
        return 0
    card_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    card_args.update(seed=options.effective_seed(), weights=None if options.weights is None else str(options.weights),
                     argv=sys.argv[1:])
    with logging_redirect_tqdm():
        result, trust = train_and_fit(args.data, options, args=card_args)
    if not result.is_main or trust is None:  # another process of a torchrun job: rank 0 reports
        return 0
    best = result.card.best or {}
    print(
        f"{args.arch}: best epoch {result.best_epoch} ({best.get('phase', '?')}), val accuracy "
        f"{result.best_val_accuracy:.3f} (val loss {result.best_val_loss:.4f}), trained in "
        f"{result.train_seconds:.0f} s, peak memory {result.peak_rss_mb:.0f} MB; model saved to {options.out_dir}"
    )
    print(f"{args.arch}: {trust.line()}")
    return 0
