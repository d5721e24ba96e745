"""Start one model's training on N processes of this machine through ``torchrun``.

``compare --nproc N`` trains each model with ``torchrun --standalone --nproc_per_node=N -m
image_classifier train ...``: exactly the command a user would type, so a compare run and a
hand-started run train the same way, and torchrun (not this tool) starts, watches and stops the
processes. The child's output goes to this process's stderr, where compare's progress goes.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from image_classifier.errors import ImageClassifierError
from image_classifier.training.options import TrainOptions

log = logging.getLogger(__name__)


def torchrun_command(data: str | os.PathLike, options: TrainOptions, nproc: int) -> list[str]:
    """The ``torchrun`` command line (as ``python -m torch.distributed.run``) that trains ``options``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "image_classifier", "train", os.fspath(data), "--arch", options.arch, "--out", os.fspath(options.out_dir),
           "--seed", str(options.effective_seed()), "--device", options.device, "--keep", str(options.keep),
           "--checkpoint-every", str(options.checkpoint_every)]
    if options.split is not None:
        cmd += ["--split", os.fspath(options.split)]
    if options.weights is not None:
        cmd += ["--weights", os.fspath(options.weights)]
    for key, value in (options.set or {}).items():
        cmd += ["--set", f"{key}={_text(value)}"]
    if options.epochs is not None:
        cmd += ["--epochs", str(options.epochs)]
    if options.batch_size is not None:
        cmd += ["--batch-size", str(options.batch_size)]
    if options.threads:
        cmd += ["--threads", str(options.threads)]
    if options.cache_dir is not None:
        cmd += ["--cache-dir", os.fspath(options.cache_dir)]
    if not options.cache:
        cmd.append("--no-cache")
    if not options.progress:
        cmd.append("--no-progress")
    if not options.amp:
        cmd.append("--no-amp")
    if options.resume:
        cmd.append("--resume")
    elif options.force:
        cmd.append("--force")
    return cmd


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def train_on_processes(data: str | os.PathLike, options: TrainOptions, nproc: int) -> Path:
    """Train ``options`` on ``nproc`` processes; the model directory it wrote. A failed job is an
    :class:`~image_classifier.errors.ImageClassifierError` naming torchrun's exit status."""
    cmd = torchrun_command(data, options, nproc)
    log.info("%s: training on %d processes: %s", options.arch, nproc, " ".join(cmd[2:]))
    done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, check=False)
    if done.returncode != 0:
        raise ImageClassifierError(
            f"training {options.arch} on {nproc} processes failed (torchrun exited with status {done.returncode}; "
            f"its messages are above). Re-run with --resume to continue from its last checkpoint")
    return options.out_dir
