"""Reward functions by name: built-ins, and ``module:callable`` for a user's own."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from cohort.rewards.base import NamedReward
from cohort.rewards.builtin import ExactMatch, FormatReward


def _code_reward(**options: Any):
    from cohort.rewards.code import CodeExecutionReward

    return CodeExecutionReward(**options)


BUILTIN_REWARDS: dict[str, Callable[..., Any]] = {
    "exact_match": ExactMatch,
    "format": FormatReward,
    "code": _code_reward,
}
"""Factories of the built-in rewards, called with the spec's options."""


def register_reward(name: str, factory: Callable[..., Any]) -> None:
    """Make ``factory(**options)`` available as reward ``name`` in configs."""
    if name in BUILTIN_REWARDS:
        raise ValueError(f"reward {name!r} is already registered")
    BUILTIN_REWARDS[name] = factory


def _import_callable(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"reward {target!r}: cannot import module {module_name!r} ({err})") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"reward {target!r}: module {module_name!r} has no attribute {attribute!r}") from None


def _construct(name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> Any:
    try:
        inspect.signature(factory).bind(**options)
    except TypeError:
        allowed = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
        raise ValueError(
            f"reward {name!r} does not take options {sorted(options)}; allowed: {', '.join(allowed) or 'none'}"
        ) from None
    return factory(**options)


def build_reward(spec: Mapping[str, Any]) -> NamedReward:
    """A NamedReward from ``{"name": ..., "weight": 1.0, "label": ..., **options}``.

    ``name`` is a built-in reward or ``module:callable``. A class (or any factory in the built-ins)
    is called with the options; a plain function is used as is and takes no options.
    """
    spec = dict(spec)
    name = spec.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"a reward spec needs a 'name', got {spec!r}")
    weight = float(spec.pop("weight", 1.0))
    label = spec.pop("label", None)
    if ":" in name:
        target = _import_callable(name)
        if inspect.isclass(target):
            fn = _construct(name, target, spec)
        elif spec:
            raise ValueError(f"reward {name!r} is a function; it takes no options, got {sorted(spec)}")
        else:
            fn = target
        default_label = name.rsplit(":", 1)[1]
    elif name in BUILTIN_REWARDS:
        fn = _construct(name, BUILTIN_REWARDS[name], spec)
        default_label = name
    else:
        raise ValueError(
            f"unknown reward {name!r}; built-in rewards: {', '.join(sorted(BUILTIN_REWARDS))} "
            "(or 'module:callable' for your own)"
        )
    if not callable(fn):
        raise ValueError(f"reward {name!r} is not callable")
    return NamedReward(name=str(label or default_label), fn=fn, weight=weight)


def correctness_reward(rewards: list[NamedReward]) -> NamedReward | None:
    """The first reward that measures correctness (reported as ``accuracy``), if any."""
    return next((r for r in rewards if getattr(r.fn, "is_correctness", False)), None)
