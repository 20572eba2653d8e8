"""Files that ship with cohort: the demo and multi-step models, the multi-step task's reward models
(a PRM and an ORM, built by scripts/build_reward_models.py) and the demo run configuration."""

from __future__ import annotations

from pathlib import Path

ASSETS_DIR = Path(__file__).parent
BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = {
    "demo": ASSETS_DIR / "demo_model",
    "multistep": ASSETS_DIR / "multistep_model",
    "multistep_prm": ASSETS_DIR / "multistep_prm",
    "multistep_orm": ASSETS_DIR / "multistep_orm",
}
DEMO_CONFIG = ASSETS_DIR / "demo.yaml"
BUILTIN_CONFIGS = {"demo": DEMO_CONFIG}
"""Run configurations that ship with cohort: ``cohort train builtin:demo`` (or ``demo``) names the demo's."""


def resolve_config(name_or_path: str) -> Path:
    """``builtin:demo`` or ``demo`` -> the bundled demo config; anything else is a path."""
    name = name_or_path[len(BUILTIN_PREFIX) :] if name_or_path.startswith(BUILTIN_PREFIX) else name_or_path
    if name in BUILTIN_CONFIGS and not Path(name_or_path).exists():
        return BUILTIN_CONFIGS[name]
    if name_or_path.startswith(BUILTIN_PREFIX):
        raise ValueError(f"unknown built-in config {name_or_path!r}; available: {', '.join(BUILTIN_PREFIX + n for n in BUILTIN_CONFIGS)}")
    return Path(name_or_path)


def resolve_builtin(name_or_path: str) -> str:
    """``builtin:demo`` -> the bundled model's directory; anything else unchanged."""
    if not name_or_path.startswith(BUILTIN_PREFIX):
        return name_or_path
    name = name_or_path[len(BUILTIN_PREFIX) :]
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown built-in model {name_or_path!r}; available: {', '.join(BUILTIN_PREFIX + n for n in BUILTIN_MODELS)}")
    return str(BUILTIN_MODELS[name])
