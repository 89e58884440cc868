"""Early stopping as a pure rule: what to do after an epoch, given the state so far.

The state itself (best value, its epoch, epochs waited) lives in the
checkpointed `trainer.checkpoint.TrainState`, so a resumed run decides as an
uninterrupted one would; this module only decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """The outcome of one epoch.

    Attributes:
        improved: The monitored value is the best so far (keep these weights).
        wait: Epochs since the last improvement, after this one.
        stop: Training should end after this epoch.
    """

    improved: bool
    wait: int
    stop: bool


@dataclass(frozen=True)
class EarlyStopping:
    """``keras.callbacks.EarlyStopping(restore_best_weights=True)``'s rule.

    Args:
        monitor: The validation metric, e.g. ``val_pr_auc`` or ``val_loss``.
        patience: Epochs without improvement before stopping.
        enabled: False: every epoch counts as the best and none stops
            training, so all epochs run and the last weights are kept (a
            refit that learns from the validation split too).
    """

    monitor: str
    patience: int
    enabled: bool = True

    @property
    def mode(self) -> str:
        """``min`` for losses, ``max`` for AUCs."""
        return "min" if self.monitor.endswith("loss") else "max"

    @property
    def initial_best(self) -> float:
        """The value every first epoch improves on."""
        return math.inf if self.mode == "min" else -math.inf

    def is_improvement(self, current: float, best: float) -> bool:
        return current < best if self.mode == "min" else current > best

    def decide(self, epoch: int, current: float, best: float, wait: int) -> Decision:
        """What the epoch ``epoch`` (0-based) with value ``current`` means.

        As in Keras, the first epoch never stops training, and ``patience``
        epochs without improvement do.
        """
        if not self.enabled or self.is_improvement(current, best):
            return Decision(improved=True, wait=0, stop=False)
        wait += 1
        return Decision(improved=False, wait=wait, stop=wait >= self.patience and epoch > 0)
