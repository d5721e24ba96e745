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

Devices: the network, the decoded images and the cached activations live on the trainer's
device (a GPU when they fit there, else pinned CPU memory copied batch by batch without blocking);
on a GPU the forward pass runs in mixed precision (bf16, or fp16 with a gradient scaler).

Several processes (``torchrun``, :mod:`image_classifier.training.distributed`): the trainable part
is wrapped in DistributedDataParallel; every epoch a ``DistributedSampler`` (``set_epoch``) deals
one seeded permutation of the training set out to the processes, so step s of every process
together covers the same ``batch_size`` images that step s of one process would; the loss is
scaled so the averaged gradient is that batch's mean; augmentation and dropout draw per sample
(from seed, epoch and index), so the trained weights do not depend on the number of processes
(up to float rounding; BatchNorm layers that train normalise per process). Losses and accuracies
are summed over processes; early stopping and the learning rate follow rank 0's decisions,
broadcast; only rank 0 has a ``writer``.
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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from image_classifier.device import amp_dtype, autocast
from image_classifier.models.net import ClassifierNet
from image_classifier.preprocessing import Preprocessing
from image_classifier.recipe import Phase, Recipe
from image_classifier.training.augment import Augmenter
from image_classifier.training.cache import DecodedSet
from image_classifier.training.checkpoint import RunWriter
from image_classifier.training.distributed import SINGLE, Dist, all_reduce_sum, broadcast_object, shard
from image_classifier.training.dropout import SampleDropout, per_sample_dropout
from image_classifier.training.features import FeatureStore, place_on_device
from image_classifier.training.seeding import derive_seed, seed_global

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
    """A CPU copy of ``net``'s state (what is saved, whatever device trains), written into
    ``into``'s tensors when given.

    Reusing the buffers matters for big models: glibc (with the allocator settings of
    :mod:`image_classifier.runtime`) cannot reuse a freed block for a new tensor of the same size,
    so cloning the simple CNN's 1 GB of weights at every improvement would grow the heap.
    """
    state = net.state_dict()
    if into is None or into.keys() != state.keys():
        return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
    for k, v in state.items():
        into[k].copy_(v)
    return into


def _to_cpu(tree: Any) -> Any:
    """``tree`` with every tensor on the CPU (a resume state written from a GPU run loads anywhere)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: _to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_cpu(v) for v in tree)
    return tree


class _Tail(nn.Module):
    """``backbone[cut:]`` + head as one module: what DistributedDataParallel wraps in a phase."""

    def __init__(self, net: ClassifierNet, cut: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(list(net.backbone[cut:]))
        self.head = net.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


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
        device: torch.device | None = None,
        amp: bool = True,
        dist: Dist = SINGLE,
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
        self.device = device if device is not None else torch.device("cpu")
        self.dist = dist
        # Mixed precision: on a GPU its autocast dtype (unless amp=False), on a CPU the recipe's bf16.
        cuda_amp = amp_dtype(self.device) if amp else None
        self.autocast_dtype = cuda_amp if self.device.type == "cuda" else (torch.bfloat16 if bf16 else None)
        # fp16's narrow range needs the loss scaled; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast_dtype == torch.float16 else None
        self.progress = progress and dist.is_main
        self.writer = writer
        self.make_card = make_card or (lambda state, status: {})
        self.plans = plan_phases(recipe, len(net.backbone))
        self.state = TrainState()
        self.augmenter = Augmenter(recipe.augmentation)
        self.best_state: dict[str, torch.Tensor] | None = None
        self._best_dirty = False
        self._phase_resume: dict[str, Any] | None = None
        self.phase_stats: dict[str, dict[str, float]] = {}
        self.net.to(self.device)
        if channels_last:
            self.net.to(memory_format=torch.channels_last)
        # Decoded images on the GPU when they fit, else in pinned memory (non-blocking copies).
        self.train_images = place_on_device(train.images, self.device)
        self.val_images = place_on_device(val.images, self.device)
        self.train_labels = train.labels.to(self.device)
        self.val_labels = val.labels.to(self.device)
        self.features = FeatureStore(
            net.backbone, preprocessing, self.augmenter, self.train_images, self.val_images,
            seed=seed, views=recipe.feature_views, bf16=bf16, channels_last=channels_last,
            progress=self.progress, desc=name, device=self.device, autocast_dtype=self.autocast_dtype, dist=dist,
        )
        self._dropouts: list[SampleDropout] = []

    # -- resume ------------------------------------------------------------------------------
    def resume_payload(self, optimizer: torch.optim.Optimizer | None, scheduler: Any, stopper: EarlyStopping | None) -> dict[str, Any]:
        return {
            "state": asdict(self.state),
            "model": _to_cpu(self.net.state_dict()),
            "optimizer": _to_cpu(optimizer.state_dict()) if optimizer is not None else None,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "stopper": asdict(stopper) if stopper is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
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
    def _prepare(self, x: torch.Tensor, cut: int, indices: torch.Tensor | None, epoch: int) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if cut == 0:
            if indices is not None:  # each image's transform: from (seed, epoch, its index)
                x = self.augmenter(x, self.seed, indices, "epoch", epoch)
            x = self.prep.normalize(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _order(self, n: int, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's training indices for ``epoch`` and which of them are real.

        One seeded permutation per epoch, dealt out by ``DistributedSampler`` (process r takes
        positions r, r + W, ...): step s of the W processes together covers positions
        [s * batch, (s + 1) * batch) of the permutation, what one process's step s covers. The
        sampler pads the permutation to a multiple of W by repeating its start; those repeats are
        marked not real and weigh nothing.
        """
        world, rank = self.dist.world_size, self.dist.rank
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,  # type: ignore[arg-type]
                                     seed=derive_seed(self.seed, "shuffle") >> 2, drop_last=False)
        sampler.set_epoch(epoch)
        local = torch.tensor(list(sampler), dtype=torch.long)
        real = torch.arange(len(local)) * world + rank < n
        return local, real

    def _train_epoch(self, model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, cut: int,
                     optimizer: torch.optim.Optimizer, epoch: int, desc: str) -> tuple[float, float]:
        self.net.train()
        n, world = len(labels), self.dist.world_size
        per_process = self.recipe.batch_size // world  # divisibility is checked before training
        order, real = self._order(n, epoch)
        # Sums stay on the device: reading them every step would wait for the GPU every step.
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        bar = tqdm(total=n, unit="img", desc=desc, leave=False, disable=not self.progress, dynamic_ncols=True)
        try:
            for step, start in enumerate(range(0, len(order), per_process)):
                idx = order[start:start + per_process]
                weight = real[start:start + per_process].to(self.device, non_blocking=True).float()
                in_step = min(self.recipe.batch_size, n - step * self.recipe.batch_size)  # real images, all processes
                x = self._prepare(inputs[idx.to(inputs.device)], cut, idx if cut == 0 else None, epoch)
                y = labels[idx.to(labels.device)]
                for d in self._dropouts:
                    d.keys = (self.seed, epoch, idx)
                with autocast(self.device, self.autocast_dtype):
                    logits = model(x)
                losses = F.cross_entropy(logits.float(), y, reduction="none") * weight
                # DDP averages the processes' gradients; scaled so, the average is the step's mean.
                loss = losses.sum() * (world / in_step)
                optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    self.scaler.step(optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                loss_sum += losses.detach().sum()
                correct += ((logits.argmax(1) == y) & (weight > 0)).sum()
                seen += int(real[start:start + per_process].sum())
                bar.update(in_step)
                # Reading the sums waits for the device: every step on a CPU, now and then on a GPU.
                if self.progress and (self.device.type == "cpu" or step % 20 == 0):
                    bar.set_postfix(loss=f"{float(loss_sum) / max(seen, 1):.4f}", acc=f"{int(correct) / max(seen, 1):.3f}",
                                    refresh=False)
        finally:
            bar.close()
            for d in self._dropouts:
                d.keys = None
        total_loss, total_correct = all_reduce_sum(self.dist, [float(loss_sum), float(correct)], self.device)
        return total_loss / max(n, 1), total_correct / max(n, 1)

    @torch.no_grad()
    def evaluate(self, inputs: torch.Tensor, labels: torch.Tensor, cut: int, *, bf16: bool | None = None,
                 across_processes: bool = False) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) of ``backbone[cut:]`` + head on ``inputs``, eval mode;
        ``across_processes``: each process scores its share and the sums are added up."""
        self.net.eval()
        dtype = self.autocast_dtype if bf16 is None else (torch.bfloat16 if bf16 else None)
        rows = shard(len(labels), self.dist) if across_processes else range(len(labels))
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        tail = _Tail(self.net, cut)
        for start in range(rows.start, rows.stop, EVAL_BATCH):
            stop = min(start + EVAL_BATCH, rows.stop)
            x = self._prepare(inputs[start:stop], cut, None, 0)
            y = labels[start:stop].to(self.device, non_blocking=True)
            with autocast(self.device, dtype):
                logits = tail(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        sums = [float(loss_sum), float(correct)]
        if across_processes:
            sums = all_reduce_sum(self.dist, sums, self.device)
        n = max(len(labels), 1)
        return sums[0] / n, sums[1] / n

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
            with per_sample_dropout(self.net) as dropouts:
                self._dropouts = dropouts
                for plan in self.plans[self.state.phase_index:]:
                    self._run_phase(plan)
        finally:
            self._dropouts = []
            for h in hooks:
                h.remove()
        return self.state

    def _wrap(self, cut: int) -> nn.Module:
        """What a training step calls: ``backbone[cut:]`` + head, in DistributedDataParallel when
        several processes train (it averages their gradients during the backward pass)."""
        tail = _Tail(self.net, cut)
        if not self.dist.enabled:
            return tail
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(tail, device_ids=ids)

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
            if self.scaler is not None and self._phase_resume.get("scaler"):
                self.scaler.load_state_dict(self._phase_resume["scaler"])
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
            val_inputs = self.val_images
        model = self._wrap(plan.cut)

        stop = False
        while st.epoch_in_phase < phase.epochs and not stop:
            t0 = time.perf_counter()
            feat0 = self.features.seconds
            e = st.epoch_in_phase
            # Per-sample draws (augmentation, dropout, view choice) come from (seed, epoch, index);
            # the global RNG is seeded too, for any other random layer a user's network has.
            seed_global(self.seed, "epoch", st.global_epoch)
            lr = optimizer.param_groups[0]["lr"]
            if plan.cached:
                inputs = self.features.train_inputs(plan.cut, e, st.global_epoch, plan.store_cuts)
            else:
                inputs = self.train_images
            desc = f"{self.name} {phase.name} {e + 1}/{phase.epochs}"
            train_loss, train_acc = self._train_epoch(model, inputs, self.train_labels, plan.cut, optimizer,
                                                      st.global_epoch, desc)
            val_loss, val_acc = self.evaluate(val_inputs, self.val_labels, plan.cut, across_processes=True)
            if not math.isfinite(val_loss):
                val_loss = math.inf
            scheduler.step(val_loss)
            stop = stopper.step(val_loss)
            if self.dist.enabled:
                # Rank 0 decides (stop, learning rate); every process follows, so none can drift.
                stop, new_lr = broadcast_object(self.dist, (stop, optimizer.param_groups[0]["lr"]))
                for group in optimizer.param_groups:
                    group["lr"] = new_lr
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
        del model
        if self.best_state is not None:
            self.net.load_state_dict(self.best_state)
        st.phase_index = plan.index + 1
        st.epoch_in_phase = 0
        if plan.index + 1 < len(self.plans):  # after the last phase the final save follows at once
            self._checkpoint(None, None, None, force=True)
