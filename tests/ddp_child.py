"""What the distributed tests start under ``torchrun``: train one tiny architecture on a folder.

``python -m torch.distributed.run --nproc_per_node=N tests/ddp_child.py DATA OUT ARCH [--resume]
[--epochs K] [--batch B] [--device D] [--die-after-epoch E]`` (or plain ``python tests/ddp_child.py ...`` for
one process). Two test-only architectures, registered here because a fresh process knows only the
built-in ones, both without BatchNorm layers that train (those normalise per process):

* ``ddp_scratch``: a small CNN trained whole from random weights, with dropout in its head;
* ``ddp_transfer``: the same shape, trained as a transfer model is: the head alone, then the top
  convolution too, both on cached activations of the frozen part (two augmented views).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from image_classifier.models.net import ClassifierNet  # noqa: E402
from image_classifier.models.registry import ArchSpec, get_arch, register_arch  # noqa: E402
from image_classifier.preprocessing import Preprocessing  # noqa: E402
from image_classifier.recipe import Phase, Recipe  # noqa: E402
from image_classifier.training import TrainOptions, train_folder  # noqa: E402


def net(num_classes: int, **_: object) -> ClassifierNet:
    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 0-2
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2), nn.Flatten(),  # 3-6
    )
    head = nn.Sequential(nn.Linear(16 * 8 * 8, 32), nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(32, num_classes))
    return ClassifierNet(backbone, head, 16 * 8 * 8)


def scratch_recipe() -> Recipe:
    return Recipe(phases=[Phase("scratch", epochs=3, lr=3e-3, trainable_from=0)], batch_size=8,
                  early_stopping_patience=10, plateau_patience=1, precision="fp32")


def transfer_recipe() -> Recipe:
    return Recipe(phases=[Phase("frozen", epochs=3, lr=1e-2, trainable_from=None),
                          Phase("finetune", epochs=3, lr=1e-3, trainable_from=3)],
                  batch_size=8, early_stopping_patience=10, plateau_patience=1, feature_views=2, precision="fp32")


def register() -> None:
    for name, recipe in (("ddp_scratch", scratch_recipe), ("ddp_transfer", transfer_recipe)):
        try:
            get_arch(name)
        except KeyError:
            register_arch(ArchSpec(name, net, Preprocessing(32), recipe, description="test-only"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("arch")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--die-after-epoch", type=int, help="rank 1 kills itself (SIGKILL) when this epoch starts")
    args = ap.parse_args()
    register()
    if args.die_after_epoch is not None and os.environ.get("RANK") == "1":
        from image_classifier.training import loop

        original = loop.Trainer._train_epoch

        def dying(self, *a, **k):
            if self.state.global_epoch >= args.die_after_epoch:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, *a, **k)

        loop.Trainer._train_epoch = dying
    options = TrainOptions(args.arch, out=args.out, seed=3, epochs=args.epochs, batch_size=args.batch,
                           resume=args.resume, force=not args.resume, cache=False, progress=False,
                           checkpoint_every=0.0, threads=1, device=args.device)
    result = train_folder(args.data, options)
    if result.is_main:
        print(f"trained {args.arch}: best epoch {result.best_epoch}, val loss {result.best_val_loss:.6f}")


if __name__ == "__main__":
    main()
