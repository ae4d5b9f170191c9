"""Training loop, schedule, EMA and checkpoints."""

from emonext.training.trainer import EpochMetrics, TrainResult, train

__all__ = ["EpochMetrics", "TrainResult", "train"]
