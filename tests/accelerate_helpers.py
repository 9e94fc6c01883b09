"""Accelerate helpers for the tracking tests: a tracker that records every ``accelerator.log``
call, and a fixture that resets Accelerate's process-wide state around a test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from accelerate.state import AcceleratorState, GradientState
from accelerate.tracking import GeneralTracker


class RecordingTracker(GeneralTracker):
    """Keeps every ``log`` call as ``(values, step)`` and the stored configuration."""

    name = "recorder"
    requires_logging_directory = False

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[dict, int | None]] = []
        self.config: dict | None = None

    @property
    def tracker(self) -> RecordingTracker:
        return self

    def store_init_configuration(self, values: dict) -> None:
        self.config = dict(values)

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.calls.append((dict(values), step))


@pytest.fixture
def fresh_accelerate_state() -> Iterator[None]:
    """Accelerate keeps its state in process-wide singletons: start and leave each test clean."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
