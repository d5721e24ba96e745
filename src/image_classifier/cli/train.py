"""``image-classifier train DATA --arch NAME``: train one model and save it as a self-contained directory."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train one architecture and save the model (weights + JSON card)",
        description=(
            "Train one architecture on the train subset of DATA, choosing when to stop on the "
            "validation subset (the test subset is never used), and save the best model (lowest "
            "validation loss) in --out: weights.safetensors + model.json (classes, preprocessing, "
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
            "  image-classifier train photos --arch resnet50 --out m --resume  # continue an interrupted run"
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
    p.add_argument("--no-progress", action="store_true", help="no progress bars (the per-epoch lines remain)")
    p.set_defaults(func=run)
    return p


def _overrides(args: argparse.Namespace) -> dict:
    from image_classifier.models.registry import list_archs
    from image_classifier.recipe import load_config, parse_set_options

    overrides: dict = {}
    if args.config is not None:
        overrides.update(load_config(args.config, args.arch, known_archs=list_archs()))
    overrides.update(parse_set_options(args.set_))
    return overrides


def run(args: argparse.Namespace) -> int:
    from image_classifier.errors import ImageClassifierError
    from image_classifier.models.registry import get_arch

    try:
        get_arch(args.arch)
    except KeyError as err:
        raise ImageClassifierError(err.args[0]) from None
    out = args.out or Path("models") / args.arch
    resumed: dict = {}
    if args.resume and not args.force:
        from image_classifier.train.checkpoint import RESUME_NAME, peek_resume_state

        if (out / RESUME_NAME).is_file():
            resumed = peek_resume_state(out / RESUME_NAME)
    if args.seed is None:
        args.seed = resumed.get("seed", 0)
    try:
        overrides = _overrides(args)
        from image_classifier.recipe import Recipe
        from image_classifier.train import resolve_recipe

        base = Recipe.from_dict(resumed["recipe"]) if resumed.get("recipe") and not overrides else None
        recipe = resolve_recipe(args.arch, overrides, base)
    except ValueError as err:
        raise ImageClassifierError(f"bad recipe option: {err}") from None
    if args.recipe:
        from image_classifier.recipe import recipe_to_toml

        print(f"# effective recipe of {args.arch} (load it back with --config FILE)")
        print(recipe_to_toml(recipe), end="")
        return 0
    if args.checkpoint_every < 0:
        raise ImageClassifierError("--checkpoint-every must be 0 or more seconds")
    if args.resume and args.force:
        raise ImageClassifierError("--resume and --force contradict each other: choose one")
    if args.weights is not None:
        name, sep, path = args.weights.partition("=")
        if sep and not Path(args.weights).exists():  # ARCH=PATH
            if name != args.arch:
                raise ImageClassifierError(f"--weights {args.weights} names {name!r}, but --arch is {args.arch!r}")
            args.weights = path
        args.weights = Path(args.weights)
        if not args.weights.is_file():
            raise ImageClassifierError(f"--weights {args.weights}: no such file")
    if not Path(args.data).is_dir():
        raise ImageClassifierError(f"{args.data} is not a folder (expected one sub-folder of images per class)")

    from tqdm.contrib.logging import logging_redirect_tqdm

    from image_classifier.data.split import resolve_split
    from image_classifier.runtime import configure
    from image_classifier.train import ImageCache, default_cache_dir, train_model

    configure(args.threads)
    split_csv = args.split
    if split_csv is None and args.resume and (out / "split.csv").is_file():
        split_csv = out / "split.csv"  # a resumed run continues on its own split
    from image_classifier.train.checkpoint import RESUME_NAME

    if not args.resume and not args.force and any((out / n).exists() for n in ("model.json", RESUME_NAME)):
        raise ImageClassifierError(
            f"{out} already holds a model or an interrupted run; pass --resume to continue it, "
            "--force to replace it, or choose another --out"
        )
    split = resolve_split(args.data, split_csv, seed=args.seed, val=args.val, test=args.test)
    if not args.resume:
        split.save(out / "split.csv")  # next to the model: `evaluate` and --resume find it there
    cache = ImageCache(None if args.no_cache else (args.cache_dir or default_cache_dir()))
    card_args = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    card_args["argv"] = sys.argv[1:]
    progress = not args.no_progress and sys.stderr.isatty()
    with logging_redirect_tqdm():
        result = train_model(
            split, args.arch, out, recipe_overrides=overrides or None, recipe=base, weights=args.weights, seed=args.seed,
            cache=cache, progress=progress, resume=args.resume, overwrite=args.force, args=card_args,
            checkpoint_interval=args.checkpoint_every,
        )
    best = result.card.get("best") or {}
    print(
        f"{args.arch}: best epoch {result.best_epoch} ({best.get('phase', '?')}), val accuracy "
        f"{result.best_val_accuracy:.3f} (val loss {result.best_val_loss:.4f}), trained in "
        f"{result.train_seconds:.0f} s, peak memory {result.peak_rss_mb:.0f} MB; model saved to {out}"
    )
    return 0
