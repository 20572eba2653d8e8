"""The registry of training methods (``algorithm.method``), and the rules that follow from what each
method declares: a setting another method reads is an error for this one, before anything loads."""

from __future__ import annotations

from typing import TypeVar

from cohort.algo.registry import Registry
from cohort.config import Config, ConfigError, field_types, register_section

M = TypeVar("M", bound=type)

METHODS: Registry = Registry("training method")


def register_method(cls: M) -> M:
    """Class decorator: file a Method subclass under its ``name`` and register its config section."""
    if cls.config_section is not None:
        register_section(*cls.config_section)
    METHODS.register(cls.name)(cls)
    return cls


def method_class(config: Config) -> type:
    """The Method class that ``algorithm.method`` names."""
    name = config.algorithm.method
    if name not in METHODS:
        raise ConfigError(f"algorithm.method={name!r} is not allowed: expected one of {', '.join(METHODS.names())}")
    return METHODS.get(name)


def method_keys(cls: type) -> frozenset[str]:
    """Every dotted key ``cls`` reads of the sections that not every method reads."""
    return frozenset(key for key in field_types() if cls.reads_key(key))


def method_scoped_keys() -> frozenset[str]:
    """The keys some method reads and another does not (setting one for a method that ignores it is an error)."""
    each = [method_keys(METHODS.get(name)) for name in METHODS.names()]
    return frozenset().union(*each) - frozenset.intersection(*each)


def _owners(key: str) -> list[str]:
    return [name for name in METHODS.names() if METHODS.get(name).reads_key(key)]


def _describe_reads(cls: type) -> str:
    keys = sorted(method_keys(cls) & method_scoped_keys())
    sections: dict[str, list[str]] = {}
    for key in keys:
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(name)
    return "; ".join(f"{section}.{{{', '.join(names)}}}" for section, names in sections.items()) or "no method-specific keys"


def check_config(config: Config) -> type:
    """Reject settings of another method and apply the method's own rules; returns its class."""
    cls = method_class(config)
    scoped = method_scoped_keys()
    for key in sorted(config.user_keys):
        if key in scoped and not cls.reads_key(key):
            raise ConfigError(f"{key} belongs to method {' / '.join(_owners(key)) or '(none)'}, not {cls.name}; "
                              f"method {cls.name} reads {_describe_reads(cls)}")
    cls.check(config)
    return cls
