"""The sink interface: deliver a batch of outputs, every one of them or raise, and count what arrived.

A sink implements :meth:`Sink.send`. Callers (the commit loop, ``selectd score``) call
:meth:`Sink.deliver`, which counts what ``send`` reports delivered in the metrics, so
``selectd_documents_out_total`` and its companions mean the same whatever the destination.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

from selectd.metrics import Metrics
from selectd.records import Output, RetriableBatchError


class DeliveryError(RetriableBatchError):
    """Some outputs of the batch could not be delivered; the batch must not be committed."""


class Sink(ABC):
    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def deliver(self, outputs: Sequence[Output]) -> None:
        """Deliver every output of a batch, or raise :class:`DeliveryError` (then nothing of the batch is
        counted: it is not committed, and its retry counts it)."""
        self.metrics.count_delivered(self.send(outputs))

    @abstractmethod
    def send(self, outputs: Sequence[Output]) -> Sequence[Output]:
        """Send ``outputs`` and return what the destination confirmed: the outputs, less those that had
        to be replaced by a dead letter, plus those dead letters. Raises :class:`DeliveryError` when
        some output could neither be sent nor dead-lettered."""

    def close(self) -> None:
        """Release the destination (flush, close connections); the sink is not used afterwards."""
