"""The registry of training methods: ``algorithm.method`` names one of these."""

from __future__ import annotations

from typing import TypeVar

from cohort.algo.registry import Registry

M = TypeVar("M", bound=type)

METHODS: Registry = Registry("training method")


def register_method(cls: M) -> M:
    """Class decorator: file a Method subclass under its ``name``."""
    METHODS.register(cls.name)(cls)
    return cls
