"""Reward functions by name: built-ins, and ``module:callable`` for a user's own."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from cohort.rewards.base import NamedReward

BUILTIN_REWARDS: dict[str, str | Callable[..., Any]] = {
    "exact_match": "cohort.rewards.builtin:ExactMatch",
    "format": "cohort.rewards.builtin:FormatReward",
    "final_answer": "cohort.rewards.multistep:FinalAnswerReward",
    "math": "cohort.rewards.math:MathAnswerReward",
    "code": "cohort.rewards.code:CodeExecutionReward",
    "reward_model": "cohort.rewards.reward_model:RewardModelReward",
}
"""Built-in rewards: a factory called with the spec's options, or its ``module:attribute`` path
(imported on first use, so heavy ones cost nothing until configured)."""


def register_reward(name: str, factory: str | Callable[..., Any]) -> None:
    """Make ``factory(**options)`` (or the factory at ``module:attribute``) available as reward ``name``."""
    if name in BUILTIN_REWARDS:
        raise ValueError(f"reward {name!r} is already registered")
    BUILTIN_REWARDS[name] = factory


def import_callable(target: str) -> Any:
    """The object at ``module:attribute``. A module in the current directory is found as ``python -m``
    would find it (the ``cohort`` command's own path does not hold it); a module that fails to import
    (a syntax error, an exception at import) is one line naming the file and line, not a traceback."""
    module_name, _, attribute = target.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"reward {target!r}: cannot import module {module_name!r} ({err}; the module must be "
                         "importable: in the current directory, on PYTHONPATH, or installed)") from None
    except SyntaxError as err:
        raise ValueError(f"reward {target!r}: module {module_name!r} has a syntax error at {err.filename}:{err.lineno}: "
                         f"{err.msg}") from None
    except Exception as err:  # the module's own code raised while importing
        raise ValueError(f"reward {target!r}: importing module {module_name!r} raised {type(err).__name__}: {err}"
                         f"{_where(err, module_name)}") from None
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"reward {target!r}: module {module_name!r} has no attribute {attribute!r}") from None


def _where(err: BaseException, module_name: str) -> str:
    """' (at file:line)' of the module's own line the error came from (else the innermost frame), or ''."""
    frames = traceback.extract_tb(err.__traceback__)
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    own = [f for f in frames if spec is not None and f.filename == spec.origin]
    frame = (own or frames or [None])[-1]
    return f" (at {frame.filename}:{frame.lineno})" if frame else ""


def construct(name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> Any:
    """``factory(**options)``, with a ValueError naming the allowed options when they don't fit."""
    try:
        inspect.signature(factory).bind(**options)
    except TypeError:
        allowed = [p for p in inspect.signature(factory).parameters if p not in ("self", "args", "kwargs")]
        raise ValueError(
            f"reward {name!r} does not take options {sorted(options)}; allowed: {', '.join(allowed) or 'none'}"
        ) from None
    return factory(**options)


def reward_label(spec: Mapping[str, Any]) -> str:
    """The name a reward spec is logged under: its alias, else the built-in name or the callable's name."""
    name = str(spec.get("name"))
    return str(spec.get("alias") or (name.rsplit(":", 1)[1] if ":" in name and name not in BUILTIN_REWARDS else name))


def build_reward(spec: Mapping[str, Any], *, timeout_s: float = 60.0) -> NamedReward:
    """A NamedReward from ``{"name": ..., "weight": 1.0, "alias": ..., "correctness": ..., "hard_deadline":
    false, **options}``.

    ``name`` is a built-in reward or ``module:callable``; ``alias`` (optional) is the name it is
    logged under; ``correctness: true`` says a score of 1 means a right answer (held-out evaluation,
    ``accuracy``, RFT's filter), ``false`` that it does not (the built-in rules say true themselves). A class (and every built-in) is called with the options; a plain function is
    used as is and takes no options. ``hard_deadline: true`` builds and runs the reward in a
    killable worker process (:class:`cohort.rewards.isolated.ProcessReward`), so that a call ends at
    its deadline (the scorer's, else ``timeout_s``) even inside one long C call.
    """
    spec = dict(spec)
    name = spec.pop("name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"a reward spec needs a 'name', got {spec!r}")
    weight = float(spec.pop("weight", 1.0))
    alias = spec.pop("alias", None)
    correctness = spec_correctness(name, spec.pop("correctness", None))
    hard_deadline = spec.pop("hard_deadline", False)
    if not isinstance(hard_deadline, bool):
        raise ValueError(f"reward {name!r}: hard_deadline must be true or false, got {hard_deadline!r}")
    if hard_deadline:
        from cohort.rewards.isolated import ProcessReward

        fn: Any = ProcessReward({"name": name, **spec}, build_reward, timeout_s=timeout_s)
        default_label = name if name in BUILTIN_REWARDS or ":" not in name else name.rsplit(":", 1)[1]
    else:
        fn, default_label = _build_in_process(name, spec)
    if not callable(fn):
        raise ValueError(f"reward {name!r} is not callable")
    return NamedReward(name=str(alias or default_label), fn=fn, weight=weight, correctness=correctness)


def spec_correctness(name: str, value: Any) -> bool | None:
    """A reward spec's ``correctness`` key: true, false, or absent (None: the function decides)."""
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"reward {name!r}: correctness must be true or false, got {value!r}")
    return value


def _build_in_process(name: str, options: dict[str, Any]) -> tuple[Any, str]:
    """The reward function ``name`` with ``options``, and the name it is logged under by default."""
    if name in BUILTIN_REWARDS:
        factory = BUILTIN_REWARDS[name]
        return construct(name, import_callable(factory) if isinstance(factory, str) else factory, options), name
    if ":" in name:
        target = import_callable(name)
        if inspect.isclass(target):
            return construct(name, target, options), name.rsplit(":", 1)[1]
        if options:
            raise ValueError(f"reward {name!r} is a function; it takes no options, got {sorted(options)}")
        return target, name.rsplit(":", 1)[1]
    raise ValueError(
        f"unknown reward {name!r}; built-in rewards: {', '.join(sorted(BUILTIN_REWARDS))} "
        "(or 'module:callable' for your own)"
    )


def correctness_reward(rewards: list[NamedReward]) -> NamedReward | None:
    """The first reward that measures correctness (reported as ``accuracy``), if any."""
    return next((r for r in rewards if r.decides_correctness), None)
