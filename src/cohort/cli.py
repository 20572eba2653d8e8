"""The ``cohort`` command: ``train``, ``config`` (print the resolved config) and ``presets``.

``cohort train`` with no config file trains the bundled demo (a small model on arithmetic);
``cohort train run.yaml rollout.group_size=16`` takes a YAML file and dotted overrides.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from cohort.assets import DEMO_CONFIG


def _split_config_and_overrides(items: list[str]) -> tuple[Path | None, list[str]]:
    """The first argument is a config file unless it looks like ``key=value``."""
    if items and "=" not in items[0]:
        return Path(items[0]), items[1:]
    return None, items


def _load(items: list[str]):
    from cohort.config import load_config

    path, overrides = _split_config_and_overrides(items)
    if path is None:  # no file: the bundled demo, with any overrides on top
        return load_config(None, overrides, base=yaml.safe_load(DEMO_CONFIG.read_text()))
    return load_config(path, overrides)


def _train(args: argparse.Namespace) -> int:
    from cohort.monitor import RunConsole
    from cohort.trainer import Trainer

    config = _load(args.items)
    console = RunConsole(config.log.console, config.train.steps)
    Trainer(config, console).train()
    return 0


def _show_config(args: argparse.Namespace) -> int:
    config = _load(args.items)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from cohort.algo import PRESETS

    for name in sorted(PRESETS):
        preset = PRESETS[name]
        print(f"{name:14s} {preset.summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cohort", description="GRPO training for Hugging Face causal LMs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = commands.add_parser("train", help="train a model (no config file: the bundled demo)")
    train.add_argument("items", nargs="*", metavar="[CONFIG.yaml] [key=value ...]")
    train.set_defaults(run=_train)
    show = commands.add_parser("config", help="print the fully resolved config and exit (validates it)")
    show.add_argument("items", nargs="*", metavar="[CONFIG.yaml] [key=value ...]")
    show.set_defaults(run=_show_config)
    presets = commands.add_parser("presets", help="list the algorithm presets")
    presets.set_defaults(run=_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from cohort.checkpoint import RunDirectoryError
    from cohort.config import ConfigError
    from cohort.data.files import DatasetError
    from cohort.models import ModelNotFoundError

    try:
        return args.run(args)
    except (ConfigError, DatasetError, ModelNotFoundError, RunDirectoryError) as err:
        print(f"cohort: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cohort: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
