"""Train an emotion classifier on in-memory faces, in one process or data-parallel under torchrun.

Recipe (EmoNeXt paper, Sec. IV): AdamW, linear warm-up then cosine decay to ``min_lr`` (the
configured ``lr`` is the peak actually used), label-smoothed cross-entropy plus
``sa_lambda`` x self-attention regularisation, stochastic depth, EMA of the weights (evaluated
and saved as the best model), mixed precision, gradient clipping, early stopping on val accuracy
and optional class balancing (FER2013's disgust class is 1.5% of the data).

Each epoch's randomness (shuffling, augmentation, stochastic depth) is seeded from
``(seed, epoch)``, so a run resumed from ``last.pt`` reproduces an uninterrupted run.

Launched by ``torchrun --nproc-per-node N -m emonext.train`` (``WORLD_SIZE`` > 1), every process
runs :func:`train`: the model is wrapped in ``DistributedDataParallel``, each epoch's global sample
order (identical on every rank) is sharded with ``DistributedSampler``, and ``train.batch_size``
is per process, so the global batch is ``batch_size x N`` and an epoch has ``N`` times fewer
steps. Augmentation and stochastic depth draw from per-rank seeds (rank 0 keeps the one-process
seeds). Rank 0 alone logs, validates, decides early stopping and the time budget (broadcast to
the others, so all ranks stop together) and writes ``metrics.json``, ``summary.json``,
``best.safetensors`` and ``last.pt``; train loss and accuracy are summed over all ranks.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch import nn
from tqdm import tqdm

from emonext.checkpoint import (
    BEST_CHECKPOINT,
    CHECKPOINT_FORMAT,
    LAST_CHECKPOINT,
    load_training_state,
    save_model_checkpoint,
    save_training_state,
)
from emonext.config import Params
from emonext.data.dataset import FaceDataset, load_splits
from emonext.data.transforms import train_transform
from emonext.evaluation.evaluate import predict_probabilities
from emonext.evaluation.metrics import classification_report
from emonext.fileio import write_json
from emonext.models import EmotionModel, attention_regularization, create_model
from emonext.runtime import ResolvedPrecision, autocast, configure_threads, resolve_precision, seed_everything
from emonext.training.distributed import (
    DistributedContext,
    distributed_session,
    main_rank_logging,
    rank_seed,
    training_module,
)

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class EpochMetrics:
    """What one epoch measured (val metrics are NaN without a val split)."""

    epoch: int
    lr: float
    train_loss: float
    train_ce: float
    train_sa: float
    train_accuracy: float
    val_accuracy: float
    val_macro_f1: float
    seconds: float
    minutes_total: float
    images_per_second: float


@dataclass
class TrainResult:
    """Outcome of :func:`train`."""

    history: list[EpochMetrics]
    best_epoch: int
    best_val_accuracy: float
    output_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics_file: Path
    stopped_early: bool = False
    stop_reason: str = ""

    def summary(self) -> dict[str, object]:
        last = self.history[-1]
        return {
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "epochs_run": last.epoch,
            "final_train_loss": last.train_loss,
            "train_minutes": last.minutes_total,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
        }


@dataclass(frozen=True)
class _EpochDecision:
    """What rank 0 concluded after an epoch, broadcast so every rank keeps the same state."""

    metrics: EpochMetrics
    best_accuracy: float
    best_epoch: int
    patience_left: int
    stop_reason: str


EpochCallback = Callable[[EpochMetrics], None]

#: Order of the per-epoch sums that :func:`_train_one_epoch` returns and the ranks all-reduce.
_TOTALS = ("loss", "ce", "sa", "correct", "seen")


def train(
    params: Params,
    datasets: dict[str, FaceDataset] | None = None,
    on_epoch_end: EpochCallback | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``params.model`` on ``params.data`` with ``params.train``.

    Under torchrun every process calls this and gets the same result; ``train.batch_size`` is
    per process (global batch ``batch_size x WORLD_SIZE``). The process group is set up here and
    torn down on return, also when training fails.

    Args:
        params: Full configuration.
        datasets: Pre-loaded ``{train_split: ..., val_split: ...}``; loaded from ``params.data``
            when None.
        on_epoch_end: Called after every epoch, once its checkpoints are written (on rank 0 only
            when distributed).
        progress: Show a progress bar per epoch (rank 0 only).

    Returns:
        Per-epoch metrics and where the checkpoints are.
    """
    with distributed_session(params.train.device) as context, main_rank_logging(context):
        return _train(params, datasets, on_epoch_end, progress, context)


def _train(
    params: Params,
    datasets: dict[str, FaceDataset] | None,
    on_epoch_end: EpochCallback | None,
    progress: bool,
    context: DistributedContext,
) -> TrainResult:
    config = params.train
    configure_threads(config.num_threads)
    device = context.device
    precision = resolve_precision(config.precision, device)
    output_dir = config.output_dir
    if context.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)

    if datasets is None:
        splits = [params.data.train_split] + ([params.data.val_split] if params.data.val_fraction > 0 else [])
        datasets, _ = load_splits(params.data, splits, seed=config.seed)
    train_set = datasets[params.data.train_split]
    val_set = datasets.get(params.data.val_split)
    classes = train_set.classes
    logger.info(
        "training %s on %d faces (%s), validating on %d; device %s, precision %s",
        params.model.architecture,
        len(train_set),
        dict(zip(classes, train_set.class_counts().tolist(), strict=True)),
        len(val_set) if val_set is not None else 0,
        device,
        precision,
    )
    shard_size = context.shard_size(len(train_set))
    if context.distributed:
        logger.info(
            "data-parallel over %d processes: %d faces each per epoch, global batch %d (%d per process)",
            context.world_size,
            shard_size,
            config.batch_size * context.world_size,
            config.batch_size,
        )

    seed_everything(config.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's too)
    # channels_last: about 20% faster ConvNeXt training steps on CPU (bench/train_throughput.py).
    model = create_model(params.model, num_classes=len(classes)).to(device, memory_format=torch.channels_last)
    optimizer = create_optimizer_v2(
        model, opt=config.optimizer, lr=config.lr, weight_decay=config.weight_decay, momentum=0.9
    )
    # Steps of one rank: the schedule advances once per (synchronised) step on every rank.
    steps_per_epoch = max(1, math.ceil(shard_size / config.batch_size))
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps - 1)
    scheduler = CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_steps - warmup_steps),
        lr_min=config.min_lr,
        warmup_t=warmup_steps,
        warmup_lr_init=config.lr * 0.01,
        warmup_prefix=True,
        t_in_epochs=False,
    )
    # Every rank updates an EMA of the weights DDP keeps identical, so the copies agree (but for the
    # STN's BatchNorm statistics, which each rank updates from its own batch); rank 0's is the one
    # evaluated and saved, and a resume gives it to every rank.
    ema = ModelEmaV3(model, decay=config.ema_decay, use_warmup=True) if config.ema else None
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    class_weights = _class_weights(train_set, config.class_balance).to(device)

    history: list[EpochMetrics] = []
    best_accuracy, best_epoch, patience_left = -1.0, 0, config.early_stopping_patience
    start_epoch, minutes_before = 1, 0.0
    last_path, best_path = output_dir / LAST_CHECKPOINT, output_dir / BEST_CHECKPOINT
    # Rank 0 wrote last.pt (atomically) in an earlier run; nobody looks before everyone is here.
    context.barrier()
    if config.resume and last_path.is_file():
        state = load_training_state(last_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema"):
            ema.module.load_state_dict(state["ema"])
        history = [EpochMetrics(**row) for row in json.loads(state["history"])]
        best_accuracy, best_epoch = state["best_accuracy"], state["best_epoch"]
        patience_left = state["patience_left"]
        start_epoch = state["epoch"] + 1
        minutes_before = history[-1].minutes_total if history else 0.0
        logger.info("resumed from %s after epoch %d", last_path, state["epoch"])
    if context.broadcast(start_epoch) != start_epoch:
        # Ranks that disagree on the epoch would wait for each other's collectives forever.
        raise RuntimeError(
            f"rank {context.rank} would start at epoch {start_epoch}, unlike rank 0: {last_path} differs "
            "between ranks (train.output_dir must be one folder that every rank sees)"
        )
    step_module = training_module(model, context)

    stop_reason = ""
    started = time.monotonic()
    for epoch in range(start_epoch, config.epochs + 1):
        epoch_start = time.monotonic()
        # Stochastic depth and dropout: per (seed, epoch) and different on every rank.
        torch.manual_seed(rank_seed(config.seed * 1_000_003 + epoch, context.rank))
        generator = torch.Generator().manual_seed(config.seed * 7_919 + epoch)
        order = _epoch_order(train_set, config.class_balance, generator)  # the same on every rank
        if not context.is_main:
            # Rank 0 augments with the rest of the order's stream, exactly as one process does.
            generator = torch.Generator().manual_seed(rank_seed(config.seed * 7_919 + epoch, context.rank))
        shard = context.shard(order)
        totals = _train_one_epoch(
            step_module,
            model,
            ema,
            optimizer,
            scheduler,
            scaler,
            train_set,
            shard,
            params,
            generator,
            class_weights,
            context,
            precision,
            epoch,
            steps_per_epoch,
            progress and context.is_main,
        )
        stats = _epoch_means(context.all_reduce_sum(totals))

        decision: _EpochDecision | None = None
        if context.is_main:
            evaluated = ema.module if ema is not None else model
            val_accuracy = val_macro_f1 = float("nan")
            if val_set is not None and len(val_set):
                # fp32, as `emonext evaluate`: the saved val accuracy is what evaluation reproduces.
                probabilities = predict_probabilities(
                    evaluated,
                    val_set.images,
                    params.model,
                    batch_size=max(config.batch_size, 256),
                    device=device,
                    precision="fp32",
                )
                report = classification_report(val_set.labels.numpy(), probabilities.argmax(1), classes)
                val_accuracy, val_macro_f1 = report.accuracy, report.macro_f1
            seconds = time.monotonic() - epoch_start
            metrics = EpochMetrics(
                epoch=epoch,
                lr=optimizer.param_groups[0]["lr"],
                train_loss=stats["loss"],
                train_ce=stats["ce"],
                train_sa=stats["sa"],
                train_accuracy=stats["accuracy"],
                val_accuracy=val_accuracy,
                val_macro_f1=val_macro_f1,
                seconds=seconds,
                minutes_total=minutes_before + (time.monotonic() - started) / 60.0,
                # All ranks' images (the shards, padding included; the dataset with one process).
                images_per_second=len(shard) * context.world_size / seconds,
            )
            history.append(metrics)
            logger.info(
                "epoch %d/%d  loss %.4f  train acc %.4f  val acc %.4f  val macro-F1 %.4f  (%.1fs)",
                epoch,
                config.epochs,
                metrics.train_loss,
                metrics.train_accuracy,
                val_accuracy,
                val_macro_f1,
                seconds,
            )

            score = val_accuracy if not math.isnan(val_accuracy) else metrics.train_accuracy
            if score > best_accuracy:
                best_accuracy, best_epoch = score, epoch
                patience_left = config.early_stopping_patience
                save_model_checkpoint(
                    best_path,
                    evaluated.state_dict(),
                    params,
                    classes,
                    {"epoch": epoch, "val_accuracy": val_accuracy, "val_macro_f1": val_macro_f1},
                )
            else:
                patience_left -= 1
            if config.early_stopping_patience and patience_left <= 0 and epoch < config.epochs:
                stop_reason = f"no val accuracy gain for {config.early_stopping_patience} epochs"
            if (
                config.max_minutes is not None
                and metrics.minutes_total >= config.max_minutes
                and epoch < config.epochs
            ):
                stop_reason = f"time budget of {config.max_minutes} minutes reached"

            save_training_state(
                last_path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "params": params.model_dump_json(),
                    "classes": list(classes),
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "ema": ema.module.state_dict() if ema is not None else {},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "history": json.dumps([asdict(row) for row in history]),
                    "best_accuracy": best_accuracy,
                    "best_epoch": best_epoch,
                    "patience_left": patience_left,
                },
            )
            write_metrics(output_dir, history)
            if on_epoch_end is not None:
                on_epoch_end(metrics)
            decision = _EpochDecision(metrics, best_accuracy, best_epoch, patience_left, stop_reason)

        # The other ranks wait here while rank 0 validates and writes, then adopt its decisions.
        decision = context.broadcast(decision)
        assert decision is not None  # rank 0 always sends one
        if not context.is_main:
            history.append(decision.metrics)
        best_accuracy, best_epoch = decision.best_accuracy, decision.best_epoch
        patience_left, stop_reason = decision.patience_left, decision.stop_reason
        if stop_reason:
            logger.info("stopping after epoch %d: %s", epoch, stop_reason)
            break

    result = TrainResult(
        history=history,
        best_epoch=best_epoch,
        best_val_accuracy=best_accuracy,
        output_dir=output_dir,
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        metrics_file=output_dir / METRICS_FILE,
        stopped_early=bool(stop_reason),
        stop_reason=stop_reason,
    )
    if context.is_main:
        write_json(output_dir / SUMMARY_FILE, result.summary())
    context.barrier()  # every rank returns only once summary.json is complete
    return result


def write_metrics(output_dir: Path, history: list[EpochMetrics]) -> Path:
    """Write per-epoch metrics as a JSON list (a DVC plots file)."""
    return write_json(output_dir / METRICS_FILE, [asdict(row) for row in history])


def _class_weights(dataset: FaceDataset, class_balance: str) -> torch.Tensor:
    counts = dataset.class_counts().float()
    if class_balance != "loss":
        return torch.ones_like(counts)
    weights = counts.sum() / (len(counts) * counts.clamp(min=1))
    return weights / (weights * counts).sum() * counts.sum()  # keeps the mean per-sample weight at 1


def _epoch_order(dataset: FaceDataset, class_balance: str, generator: torch.Generator) -> torch.Tensor:
    if class_balance == "sampler":
        per_sample = 1.0 / dataset.class_counts().float().clamp(min=1)[dataset.labels]
        return torch.multinomial(per_sample, len(dataset), replacement=True, generator=generator)
    return torch.randperm(len(dataset), generator=generator)


def _batches(order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        # A batch of one would break BatchNorm in the STN. Shards have equal lengths, so every
        # rank skips the same step and DDP's collectives stay matched.
        if len(batch) > 1 or start == 0:
            yield batch


def _epoch_means(totals: list[float]) -> dict[str, float]:
    sums = dict(zip(_TOTALS, totals, strict=True))
    seen = max(sums["seen"], 1.0)
    return {
        "loss": sums["loss"] / seen,
        "ce": sums["ce"] / seen,
        "sa": sums["sa"] / seen,
        "accuracy": sums["correct"] / seen,
    }


def _train_one_epoch(
    step_module: nn.Module,
    model: EmotionModel,
    ema: ModelEmaV3 | None,
    optimizer: torch.optim.Optimizer,
    scheduler: CosineLRScheduler,
    scaler: torch.amp.GradScaler,
    dataset: FaceDataset,
    shard: torch.Tensor,
    params: Params,
    generator: torch.Generator,
    class_weights: torch.Tensor,
    context: DistributedContext,
    precision: ResolvedPrecision,
    epoch: int,
    steps_per_epoch: int,
    progress: bool,
) -> list[float]:
    """One pass over this rank's ``shard``; returns this rank's sums in :data:`_TOTALS` order."""
    config = params.train
    device = context.device
    step_module.train()
    totals = dict.fromkeys(_TOTALS, 0.0)
    bar = tqdm(
        _batches(shard, config.batch_size),
        total=steps_per_epoch,
        desc=f"epoch {epoch}/{config.epochs}",
        unit="batch",
        disable=not progress,
        leave=False,
    )
    for step, indices in enumerate(bar):
        images = train_transform(dataset.images[indices], params.augment, params.model, generator)
        images = images.to(device, memory_format=torch.channels_last)
        labels = dataset.labels[indices].to(device)
        with autocast(device, precision):
            # Through step_module (DDP's forward when distributed), never the model directly:
            # DDP only all-reduces the gradients of forwards it ran.
            output = step_module(images)
        logits = output.logits.float()
        ce = F.cross_entropy(logits, labels, weight=class_weights, label_smoothing=config.label_smoothing)
        sa = (
            attention_regularization(output.attention)
            if output.attention is not None
            else logits.new_zeros(())
        )
        loss = ce + config.sa_lambda * sa
        finite = bool(torch.isfinite(loss))
        # Agreed by all ranks: one rank raising alone would leave the others waiting in backward.
        if not context.all_true(finite):
            value = loss.item() if not finite else "finite here but not on another rank"
            raise FloatingPointError(f"epoch {epoch} step {step}: loss is {value}; lower train.lr")

        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        global_step = (epoch - 1) * steps_per_epoch + step + 1
        scheduler.step_update(global_step)
        if ema is not None:
            ema.update(model, step=global_step)

        count = len(labels)
        totals["loss"] += loss.item() * count
        totals["ce"] += ce.item() * count
        totals["sa"] += sa.item() * count
        totals["correct"] += (logits.argmax(1) == labels).sum().item()
        totals["seen"] += count
        bar.set_postfix(
            loss=f"{totals['loss'] / totals['seen']:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}"
        )
    return [totals[key] for key in _TOTALS]
