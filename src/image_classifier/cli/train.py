"""``image-classifier train DATA --arch NAME``: train one model and save it as a self-contained directory."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from image_classifier.cli.options import add_device_argument, parse_arch_path
from image_classifier.errors import OptionError
from image_classifier.runs import CARD_NAME, WEIGHTS_NAME


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
    p.add_argument("--arch", required=True, metavar="NAME",
                   help="architecture: simple_cnn, alexnet_like, mobilenet_v2, resnet50 (or any registered one)")
    p.add_argument("--split", type=Path, metavar="CSV",
                   help="split manifest from `image-classifier split` (default: make one with --seed/--val/--test)")
    p.add_argument("--val", type=float, default=0.15, help="validation fraction of a new split (default: %(default)s)")
    p.add_argument("--test", type=float, default=0.15, help="test fraction of a new split (default: %(default)s)")
    p.add_argument("--out", type=Path, metavar="DIR", help="model directory to write (default: models/ARCH)")
    p.add_argument("--weights", metavar="PATH",
                   help="ImageNet weights file for a pretrained architecture (ARCH=PATH, as `compare` takes it, "
                        "works too; default: torchvision's cache, $TORCH_HOME/hub/checkpoints)")
    p.add_argument("--seed", type=int, help="seed of the split, initialisation and augmentation (default: 0; "
                                              "with --resume: the interrupted run's)")
    p.add_argument("--config", type=Path, metavar="FILE.toml", help="recipe overrides from a TOML file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="set_",
                   help="override one recipe value, e.g. phases.0.epochs=3, batch_size=16, "
                        "augmentation.zoom=0.1, precision=fp32 (repeatable; wins over --config)")
    p.add_argument("--epochs", type=int, metavar="N", help="epochs of every phase of the recipe (a quick try: --epochs 2)")
    p.add_argument("--batch-size", type=int, metavar="N",
                   help="images per training step, over all processes of a torchrun job (default: the recipe's)")
    p.add_argument("--recipe", action="store_true", help="print the effective recipe (TOML) and exit")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--force", action="store_true", help="replace a model already in --out")
    p.add_argument("--cache-dir", type=Path, metavar="DIR",
                   help="where decoded images are cached between runs (default: $IMAGE_CLASSIFIER_CACHE_DIR "
                        "or ~/.cache/image-classifier/decoded)")
    p.add_argument("--no-cache", action="store_true", help="decode in memory only, write no cache files")
    p.add_argument("--checkpoint-every", type=float, default=30.0, metavar="SECONDS",
                   help="write the best model and the resume state at most this often (default: %(default)s; "
                        "0 = every epoch)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: one per core)")
    add_device_argument(p)
    p.add_argument("--no-amp", action="store_true",
                   help="on a GPU, train in fp32 instead of mixed precision (bf16, or fp16 with a gradient scaler)")
    p.add_argument("--keep", type=float, default=0.95, metavar="FRACTION",
                   help="\"none of these\": the fraction of the known validation images the rejection rule "
                        "keeps; a photo less like the classes than the rest is answered \"unknown\" "
                        "(default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the per-epoch lines remain)")
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

    from image_classifier.recipe import parse_set_options, recipe_to_toml
    from image_classifier.training import TrainOptions
    from image_classifier.trust.fit import train_and_fit

    try:
        overrides = parse_set_options(args.set_)
    except ValueError as err:
        raise OptionError(f"bad recipe option: {err}") from None
    options = TrainOptions(
        arch=args.arch, out=args.out, seed=args.seed, split=args.split, val=args.val, test=args.test,
        weights=_weights(args.weights, args.arch), set=overrides, config=args.config, resume=args.resume,
        epochs=args.epochs, batch_size=args.batch_size,
        force=args.force, threads=args.threads, checkpoint_every=args.checkpoint_every, cache_dir=args.cache_dir,
        cache=not args.no_cache, progress=not args.no_progress and sys.stderr.isatty(), keep=args.keep,
        device=args.device, amp=not args.no_amp,
    ).validate()
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
