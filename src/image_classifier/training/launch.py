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
from dataclasses import replace
from pathlib import Path

from image_classifier.errors import ImageClassifierError
from image_classifier.optionspec import command_line
from image_classifier.training.options import TrainOptions

log = logging.getLogger(__name__)


def torchrun_command(data: str | os.PathLike, options: TrainOptions, nproc: int) -> list[str]:
    """The ``torchrun`` command line (as ``python -m torch.distributed.run``) that trains ``options``
    (derived from their declarations: :func:`~image_classifier.optionspec.command_line`)."""
    options = replace(options, out=options.out_dir, seed=options.effective_seed())
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "image_classifier", "train", os.fspath(data), *command_line(options)]


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
