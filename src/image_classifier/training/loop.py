"""The training loop: phases of epochs, early stopping, LR on plateau, checkpoints, resume.

Semantics (Keras' callbacks, as the study used them):

* Each phase gets a fresh Adam optimizer at the phase's learning rate, a
  ``ReduceLROnPlateau`` on validation loss and an early stop on validation loss (patience counted
  within the phase, ``min_delta`` 0).
* The model kept is the one with the lowest validation loss over the whole run: at the end of a
  phase the best weights so far are restored (Keras' ``restore_best_weights``), and the next phase
  starts from them.
* Only the train and validation subsets are ever seen: the test subset plays no part in any
  decision.

Speed (see ``bench/train_speed.py``): images are decoded once and augmented as uint8 tensors;
phases that train only the top of the network train it on cached activations of the frozen bottom
(:mod:`image_classifier.training.features`); the network runs in ``channels_last`` with bf16
autocast where the recipe asks for it and the CPU supports it; Adam is PyTorch's fused kernel.

The loop keeps its state in the :class:`Trainer` object (no module-level state) and writes files
only through its ``writer`` (``None`` on all but one process), so a DistributedDataParallel
version needs no rewrite of this structure.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from image_classifier.models.net import ClassifierNet
from image_classifier.preprocessing import Preprocessing
from image_classifier.recipe import Phase, Recipe
from image_classifier.training.augment import Augmenter
from image_classifier.training.cache import DecodedSet
from image_classifier.training.checkpoint import RunWriter
from image_classifier.training.features import FeatureStore
from image_classifier.training.seeding import generator, seed_global

log = logging.getLogger(__name__)

EVAL_BATCH = 64


@dataclass(frozen=True)
class PhasePlan:
    index: int
    phase: Phase
    cut: int  # first trainable backbone block; len(backbone) = head only, 0 = everything
    store_cuts: tuple[int, ...]  # activations to keep while computing a view (this and later phases)

    @property
    def cached(self) -> bool:
        return self.cut > 0


def plan_phases(recipe: Recipe, n_blocks: int) -> list[PhasePlan]:
    cuts = []
    for p in recipe.phases:
        cut = n_blocks if p.trainable_from is None else p.trainable_from
        if cut > n_blocks:
            raise ValueError(
                f"phases.{p.name}.trainable_from = {cut} is past the end of the backbone ({n_blocks} blocks); "
                "use none to train the head only"
            )
        cuts.append(cut)
    plans = []
    for i, p in enumerate(recipe.phases):
        # A later phase q can reuse activations computed now at its cut if no phase in between
        # trains anything below that cut.
        keep = {cuts[i]} | {cuts[q] for q in range(i + 1, len(cuts)) if 0 < cuts[q] <= min(cuts[i:q])}
        plans.append(PhasePlan(i, p, cuts[i], tuple(sorted(c for c in keep if c > 0))))
    return plans


@dataclass
class EarlyStopping:
    patience: int
    best: float = math.inf
    bad_epochs: int = 0

    def step(self, value: float) -> bool:
        """Record one epoch's validation loss; True when the phase should stop."""
        if value < self.best:
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience


@dataclass
class TrainState:
    """Where a run is; everything here is a primitive so it goes into the resume file as is."""

    phase_index: int = 0
    epoch_in_phase: int = 0  # epochs completed in the current phase
    global_epoch: int = 0  # epochs completed in all
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None  # {"epoch", "phase", "val_loss", "val_accuracy"}
    seconds: float = 0.0  # training time so far, across resumes


def make_adam(params: list[nn.Parameter], recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    kwargs = dict(lr=lr, eps=recipe.optimizer_eps, weight_decay=recipe.weight_decay)
    try:
        # One pass over memory per step instead of several: ~5-10x faster for the simple CNN's 244 M
        # parameters, where the optimizer step otherwise costs as much as the backward pass.
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, foreach=True, **kwargs)


def _match_param_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give restored optimizer state the memory layout of its parameter.

    A resume file stores tensors contiguous, while channels_last parameters have NHWC strides. The
    fused Adam kernel walks parameter and moments as flat memory, so a moment in another layout
    would silently pair each weight with another weight's moment.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def _channels_last_grad_hooks(net: nn.Module) -> list[Any]:
    """Keep gradients channels_last through ``nn.Flatten``.

    Flattening a channels_last map copies it to NCHW order (so the dense layer's weights mean the
    same as in the saved model); its backward then hands an NCHW gradient to the ReLU/pool before,
    whose output is channels_last, and that mixed-layout backward ran ~9x slower (measured on the
    simple CNN). Converting the gradient once is a cheap copy.
    """
    def pre_hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        if x.requires_grad and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            x.register_hook(lambda g: g.contiguous(memory_format=torch.channels_last))

    return [m.register_forward_pre_hook(pre_hook) for m in net.modules() if isinstance(m, nn.Flatten)]


def _copy_state(net: nn.Module, into: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """A copy of ``net``'s state, written into ``into``'s tensors when given.

    Reusing the buffers matters for big models: glibc (with the allocator settings of
    :mod:`image_classifier.runtime`) cannot reuse a freed block for a new tensor of the same size,
    so cloning the simple CNN's 1 GB of weights at every improvement would grow the heap.
    """
    state = net.state_dict()
    if into is None or into.keys() != state.keys():
        return {k: v.detach().clone() for k, v in state.items()}
    for k, v in state.items():
        into[k].copy_(v)
    return into


class Trainer:
    """Trains ``net`` through the phases of ``recipe`` on decoded train/val images."""

    def __init__(
        self,
        net: ClassifierNet,
        recipe: Recipe,
        preprocessing: Preprocessing,
        train: DecodedSet,
        val: DecodedSet,
        *,
        seed: int = 0,
        name: str = "",
        bf16: bool = False,
        channels_last: bool = True,
        progress: bool = True,
        writer: RunWriter | None = None,
        make_card: Callable[[TrainState, str], dict[str, Any]] | None = None,
    ) -> None:
        self.net = net
        self.recipe = recipe
        self.prep = preprocessing
        self.train_set = train
        self.val_set = val
        self.seed = seed
        self.name = name
        self.bf16 = bf16
        self.channels_last = channels_last
        self.progress = progress
        self.writer = writer
        self.make_card = make_card or (lambda state, status: {})
        self.plans = plan_phases(recipe, len(net.backbone))
        self.state = TrainState()
        self.augmenter = Augmenter(recipe.augmentation)
        self.best_state: dict[str, torch.Tensor] | None = None
        self._best_dirty = False
        self._phase_resume: dict[str, Any] | None = None
        self.phase_stats: dict[str, dict[str, float]] = {}
        self.features = FeatureStore(
            net.backbone, preprocessing, self.augmenter, train.images, val.images,
            seed=seed, views=recipe.feature_views, bf16=bf16, channels_last=channels_last,
            progress=progress, desc=name,
        )
        self._val_full: torch.Tensor | None = None
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    # -- resume ------------------------------------------------------------------------------
    def resume_payload(self, optimizer: torch.optim.Optimizer | None, scheduler: Any, stopper: EarlyStopping | None) -> dict[str, Any]:
        return {
            "state": asdict(self.state),
            "model": self.net.state_dict(),
            "optimizer": optimizer.state_dict() if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "stopper": asdict(stopper) if stopper is not None else None,
            "phase_stats": self.phase_stats,
        }

    def load_resume(self, payload: dict[str, Any], best_state: dict[str, torch.Tensor] | None) -> None:
        self.state = TrainState(**payload["state"])
        self.net.load_state_dict(payload["model"])
        self.best_state = best_state
        self.phase_stats = dict(payload.get("phase_stats") or {})
        if payload.get("optimizer") is not None:
            self._phase_resume = payload

    # -- one epoch -----------------------------------------------------------------------------
    def _forward_from(self, x: torch.Tensor, cut: int) -> torch.Tensor:
        for block in self.net.backbone[cut:]:
            x = block(x)
        return self.net.head(x)

    def _prepare(self, x: torch.Tensor, cut: int, gen: torch.Generator | None) -> torch.Tensor:
        if cut == 0:
            if gen is not None:
                x = self.augmenter(x, gen)
            x = self.prep.normalize(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _train_epoch(self, inputs: torch.Tensor, labels: torch.Tensor, cut: int, optimizer: torch.optim.Optimizer,
                     gen: torch.Generator, desc: str) -> tuple[float, float]:
        self.net.train()
        n, bs = len(labels), self.recipe.batch_size
        order = torch.randperm(n, generator=gen)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(total=n, unit="img", desc=desc, leave=False, disable=not self.progress, dynamic_ncols=True)
        try:
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                x = self._prepare(inputs[idx], cut, gen)
                y = labels[idx]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                    logits = self._forward_from(x, cut)
                loss = F.cross_entropy(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                bar.update(len(y))
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}", refresh=False)
        finally:
            bar.close()
        return loss_sum / max(seen, 1), correct / max(seen, 1)

    @torch.no_grad()
    def evaluate(self, inputs: torch.Tensor, labels: torch.Tensor, cut: int, *, bf16: bool | None = None) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of ``backbone[cut:]`` + head on ``inputs``, eval mode."""
        self.net.eval()
        bf16 = self.bf16 if bf16 is None else bf16
        loss_sum, correct = 0.0, 0
        for start in range(0, len(labels), EVAL_BATCH):
            x = self._prepare(inputs[start:start + EVAL_BATCH], cut, None)
            y = labels[start:start + EVAL_BATCH]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = self._forward_from(x, cut).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
        n = max(len(labels), 1)
        return loss_sum / n, correct / n

    # -- checkpoints -----------------------------------------------------------------------------
    def _checkpoint(self, optimizer: Any, scheduler: Any, stopper: EarlyStopping | None, *, force: bool) -> None:
        if self.writer is None or not (force or self.writer.due()):
            return
        if self._best_dirty and self.best_state is not None:
            self.writer.save_best(self.best_state, self.make_card(self.state, "training"))
            self._best_dirty = False
        self.writer.save_resume(self.resume_payload(optimizer, scheduler, stopper))

    # -- the run -------------------------------------------------------------------------------
    def fit(self) -> TrainState:
        hooks = _channels_last_grad_hooks(self.net) if self.channels_last else []
        try:
            for plan in self.plans[self.state.phase_index:]:
                self._run_phase(plan)
        finally:
            for h in hooks:
                h.remove()
        return self.state

    def _run_phase(self, plan: PhasePlan) -> None:
        st, recipe, phase = self.state, self.recipe, plan.phase
        self.net.set_trainable_from(phase.trainable_from)
        params = [p for p in self.net.parameters() if p.requires_grad]
        optimizer = make_adam(params, recipe, phase.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=recipe.plateau_factor, patience=recipe.plateau_patience, min_lr=recipe.min_lr,
        )
        stopper = EarlyStopping(recipe.early_stopping_patience)
        if self._phase_resume is not None:
            optimizer.load_state_dict(self._phase_resume["optimizer"])
            _match_param_layout(optimizer)
            scheduler.load_state_dict(self._phase_resume["scheduler"])
            stopper = EarlyStopping(**self._phase_resume["stopper"])
            self._phase_resume = None
        needed = {c for p in self.plans[plan.index:] for c in p.store_cuts}
        self.features.keep_only(needed)
        stats = self.phase_stats.setdefault(phase.name, {"epochs": 0, "seconds": 0.0, "images": 0, "feature_seconds": 0.0})
        n_train = len(self.train_set)
        log.info("%s: phase %r: %s, lr %g, up to %d epochs on %d images (%s)", self.name, phase.name,
                 "head only" if plan.cut >= len(self.net.backbone) else f"backbone[{plan.cut}:] + head",
                 phase.lr, phase.epochs, n_train,
                 "cached frozen-part activations" if plan.cached else "augmented images")
        if plan.cached:
            val_inputs = self.features.val(plan.cut, plan.store_cuts)
        else:
            val_inputs = self.val_set.images

        stop = False
        while st.epoch_in_phase < phase.epochs and not stop:
            t0 = time.perf_counter()
            feat0 = self.features.seconds
            e = st.epoch_in_phase
            seed_global(self.seed, "epoch", st.global_epoch)  # dropout masks
            gen = generator(self.seed, "epoch", st.global_epoch)  # shuffling, augmentation, view choice
            lr = optimizer.param_groups[0]["lr"]
            if plan.cached:
                inputs = self.features.train_inputs(plan.cut, e, gen, plan.store_cuts)
            else:
                inputs = self.train_set.images
            desc = f"{self.name} {phase.name} {e + 1}/{phase.epochs}"
            train_loss, train_acc = self._train_epoch(inputs, self.train_set.labels, plan.cut, optimizer, gen, desc)
            val_loss, val_acc = self.evaluate(val_inputs, self.val_set.labels, plan.cut)
            if not math.isfinite(val_loss):
                val_loss = math.inf
            scheduler.step(val_loss)
            stop = stopper.step(val_loss)
            seconds = time.perf_counter() - t0
            st.epoch_in_phase += 1
            st.global_epoch += 1
            st.seconds += seconds
            record = {
                "epoch": st.global_epoch, "phase": phase.name, "phase_epoch": e + 1,
                "train_loss": train_loss, "train_accuracy": train_acc,
                "val_loss": val_loss, "val_accuracy": val_acc,
                "lr": lr, "seconds": seconds, "images_per_s": n_train / seconds if seconds > 0 else 0.0,
            }
            st.history.append(record)
            stats["epochs"] += 1
            stats["seconds"] += seconds
            stats["images"] += n_train
            stats["feature_seconds"] += self.features.seconds - feat0
            improved = st.best is None or val_loss < st.best["val_loss"]
            if improved:
                st.best = {"epoch": st.global_epoch, "phase": phase.name, "val_loss": val_loss, "val_accuracy": val_acc}
                self.best_state = _copy_state(self.net, self.best_state)
                self._best_dirty = True
            log.info(
                "%s %s epoch %d/%d: loss %.4f acc %.3f | val loss %.4f acc %.3f | lr %.2g | %.1f s, %.0f img/s%s",
                self.name, phase.name, e + 1, phase.epochs, train_loss, train_acc, val_loss, val_acc, lr,
                seconds, record["images_per_s"], " *" if improved else "",
            )
            if not math.isfinite(train_loss):
                log.warning("%s: training loss is not finite; ending phase %r (lower its lr)", self.name, phase.name)
                stop = True
            if stop and st.epoch_in_phase < phase.epochs:
                log.info("%s: early stop in phase %r after %d epochs (no val loss improvement in %d)",
                         self.name, phase.name, st.epoch_in_phase, recipe.early_stopping_patience)
            if st.epoch_in_phase < phase.epochs and not stop:
                self._checkpoint(optimizer, scheduler, stopper, force=False)

        # Phase over: continue from (and in the end keep) the best weights seen so far.
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        st.phase_index = plan.index + 1
        st.epoch_in_phase = 0
        if plan.index + 1 < len(self.plans):  # after the last phase the final save follows at once
            self._checkpoint(None, None, None, force=True)
