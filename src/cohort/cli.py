"""The ``cohort`` command: ``train``, ``eval``, ``train-rm``, ``report``, ``config`` (print the resolved config), ``presets``, ``methods``.

``cohort train`` with no argument at all trains the bundled demo (a small model on arithmetic);
``cohort train run.yaml rollout.group_size=16`` takes a YAML file and dotted overrides on top;
``cohort train model.path=... data.task=...`` (overrides alone) starts from the library's
documented defaults (docs/config.md), and ``cohort train builtin:demo key=value`` from the demo's.
``cohort eval MODEL [MODEL ...]`` evaluates models (directories, ``builtin:demo`` or run
directories) on a task's held-out split and prints pass@k / maj@k, side by side for several.
``cohort train-rm outcome|process DATA.jsonl --base MODEL --out DIR`` trains an outcome or a
process reward model from labelled completions (``cohort.reward_training``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

from cohort.assets import BUILTIN_CONFIGS, DEMO_CONFIG, resolve_config
from cohort.models import quiet_transformers


def _split_config_and_overrides(items: list[str]) -> tuple[Path | None, list[str]]:
    """The first argument is a config file (or ``builtin:demo``) unless it looks like ``key=value``;
    no argument at all means the demo's config."""
    if not items:
        return DEMO_CONFIG, []
    if "=" not in items[0]:
        return resolve_config(items[0]), items[1:]
    return None, items


def _load(items: list[str]):
    from cohort.config import load_config

    path, overrides = _split_config_and_overrides(items)
    if path in BUILTIN_CONFIGS.values():  # a bundled config is a base layer: it holds settings of every method
        return load_config(None, overrides, base=yaml.safe_load(path.read_text()))
    return load_config(path, overrides)


def _train(args: argparse.Namespace) -> int:
    """Check everything that needs no weights first (a mistake is answered in about a second), then
    load the training machinery and train."""
    from cohort.run_directory import RunDirectory
    from cohort.training.preflight import preflight

    config = _load(args.items)
    resume_from = RunDirectory(Path(config.train.out_dir)).latest_checkpoint() if config.train.resume else None
    checked = preflight(config, resume_from=resume_from, distributed=int(os.environ.get("WORLD_SIZE", "1")) > 1)
    quiet_transformers()
    from cohort.distributed import leave_process, stop_world
    from cohort.monitoring.console import RunConsole
    from cohort.training.trainer import Trainer

    console = RunConsole(config.log.console, config.train.steps)
    trainer = Trainer(config, console, checked)
    try:
        summary = trainer.train()
    except BaseException:
        stop_world(trainer.world, finished=False)
        raise
    stop_world(trainer.world)  # under torchrun: every rank leaves the process group together
    code = 128 + summary["stopped_by"] if "stopped_by" in summary else 0  # the shell's convention for a signal
    if trainer.world.distributed:
        leave_process(code)  # gloo's threads outlive the group: no interpreter finalization beside them
    return code


def _eval(args: argparse.Namespace) -> int:
    models = [item for item in args.items if "=" not in item]
    overrides = [item for item in args.items if "=" in item]
    try:
        ks = [int(k) for k in args.k.split(",")] if args.k else None
    except ValueError:
        raise ValueError(f"--k {args.k!r}: expected comma-separated whole numbers, e.g. --k 1,2,4") from None
    if ks and args.samples and max(ks) > args.samples:
        raise ValueError(f"--k {args.k}: every k must lie in 1..{args.samples}, the samples per problem "
                         f"(raise --samples to {max(ks)}, or drop the larger k)")
    from cohort.evaluation.cli import run_eval

    return run_eval(models, overrides, config_path=args.config, samples=args.samples, ks=ks, limit=args.limit, out=args.out)


def _train_rm(args: argparse.Namespace) -> int:
    from cohort.reward_training import (
        read_outcome_examples,
        read_process_examples,
        train_outcome_model,
        train_process_model,
    )

    def unescape(text: str) -> str:  # a shell passes "\\n" for a typed \n
        return text.replace("\\n", "\n").replace("\\t", "\t")

    def read(path: str):
        return read_outcome_examples(path) if args.kind == "outcome" else read_process_examples(path, unescape(args.step_marker))

    init = args.init or args.base
    if init is None:
        raise ValueError("train-rm needs --base MODEL (a causal LM: a new head) or --init RM_DIR (continue training it)")
    try:
        fraction, held_out = float(args.held_out), None
    except ValueError:  # not a number: a file of held-out rows
        fraction, held_out = 0.0, read(args.held_out)
    train = train_outcome_model if args.kind == "outcome" else train_process_model
    report = train(read(args.data), init, args.out, held_out=held_out, held_out_fraction=fraction, lr=args.lr,
                   epochs=args.epochs, batch_size=args.batch_size, weight_decay=args.weight_decay, seed=args.seed,
                   max_length=args.max_length, device=args.device, threads=args.threads, separator=unescape(args.separator),
                   patience=args.patience)
    print(report.summary())
    return 0


def _report(args: argparse.Namespace) -> int:
    from cohort.report import write_report

    path = write_report(Path(args.run_dir), Path(args.out) if args.out else None)
    print(path)
    return 0


def _show_config(args: argparse.Namespace) -> int:
    """Print the resolved config after every check that needs no weights (training.preflight)."""
    config = _load(args.items)
    from cohort.training.preflight import preflight

    preflight(config)
    print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
    return 0


def _presets(args: argparse.Namespace) -> int:
    from cohort.config import PRESETS

    for name in sorted(PRESETS):
        preset = PRESETS[name]
        print(f"{name:14s} {preset.summary}")
    return 0


def _export(args: argparse.Namespace) -> int:
    """A LoRA run's adapters merged into a plain HF model that AutoModelForCausalLM loads."""
    from cohort.models.loading import load_policy, load_tokenizer
    from cohort.models.lora import base_model_path, merged_model
    from cohort.run_directory import RunDirectory
    from cohort.training.checkpoint import save_pretrained_atomic

    source = Path(args.source)
    run = RunDirectory(source)
    adapters = run.final if run.final.is_dir() else source
    if base_model_path(adapters) is None:
        raise ValueError(f"{adapters} holds no LoRA adapters (no adapter_config.json): nothing to merge")
    out = Path(args.out) if args.out else (run.final / "merged" if run.final.is_dir() else source / "merged")
    save_pretrained_atomic(out, merged_model(load_policy(adapters)), load_tokenizer(adapters))
    print(out)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cohort.reproduce import reproduce

    console = Console(stderr=True)
    results = reproduce(Path(args.out), quick=args.quick, seeds=args.seeds, workers=args.workers, arms=args.arms,
                        steps=args.steps, rm_gate=args.rm_gate,
                        progress=lambda message: console.print(f"reproduce: {message}", highlight=False))
    for name, arm in results["arms"].items():
        print(f"{name:18s} pass@1 {arm['final_pass1']['mean']:.3f} [{arm['final_pass1']['low']:.3f}, "
              f"{arm['final_pass1']['high']:.3f}] over {arm['seeds']} seeds (initial {arm['initial_pass1']:.3f})")
    for claim in results["claims"]:
        print(f"{claim['verdict']:27s} {claim['text']}: {claim['ours']}")
    return 0


def _methods(args: argparse.Namespace) -> int:
    from cohort.methods import METHODS

    for name in METHODS.names():
        print(f"{name:11s} {METHODS.get(name).summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cohort", description="GRPO training for Hugging Face causal LMs")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = commands.add_parser("train", help="train a model (no config file: the bundled demo)")
    train.add_argument("items", nargs="*", metavar="[CONFIG.yaml] [key=value ...]")
    train.set_defaults(run=_train)
    evaluate = commands.add_parser("eval", help="evaluate models on a task's held-out split (pass@k, maj@k)")
    evaluate.add_argument("items", nargs="+", metavar="MODEL [MODEL ...] [key=value ...]",
                          help="model directories, builtin:demo, or run directories (their final/ model)")
    evaluate.add_argument("--config", help="run config for task, rewards and sampling (default: the first run directory's, else the demo's)")
    evaluate.add_argument("--samples", type=int, help="samples per problem (default: train.eval_samples)")
    evaluate.add_argument("--k", help="comma-separated k values for pass@k and maj@k (default: 1, 2, 4, ... n)")
    evaluate.add_argument("--limit", type=int, help="evaluate at most this many problems")
    evaluate.add_argument("--out", help="directory for summary.json and per-problem JSONL files")
    evaluate.set_defaults(run=_eval)
    train_rm = commands.add_parser("train-rm", help="train an outcome or process reward model from labelled completions")
    train_rm.add_argument("kind", choices=("outcome", "process"),
                          help="outcome: rows prompt/completion/label; process: prompt/steps/labels or prompt/completion/labels")
    train_rm.add_argument("data", metavar="DATA.jsonl")
    train_rm.add_argument("--base", help="causal LM to put a new single-logit head on")
    train_rm.add_argument("--init", metavar="RM_DIR", help="reward model to continue training (instead of --base)")
    train_rm.add_argument("--out", required=True, metavar="DIR", help="where to write the HF model, tokenizer and training.json")
    train_rm.add_argument("--held-out", default="0.1", help="fraction of DATA to hold out, or a JSONL file of held-out rows (default 0.1)")
    train_rm.add_argument("--epochs", type=int, default=1, help="passes over the training rows (default 1; at most, with --patience)")
    train_rm.add_argument("--patience", type=int, help="early stopping: epochs without a better held-out within-group AUC")
    train_rm.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (default 1e-5)")
    train_rm.add_argument("--batch-size", type=int, default=8, help="examples per optimizer step (default 8)")
    train_rm.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    train_rm.add_argument("--max-length", type=int, help="token limit per input (default: the model's positions)")
    train_rm.add_argument("--seed", type=int, default=0, help="seeds a new head, the held-out split and the batch order (default 0)")
    train_rm.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda:N")
    train_rm.add_argument("--threads", type=int, help="torch CPU threads")
    train_rm.add_argument("--step-marker", default="\n", help="process: splits a 'completion' column into steps (default newline)")
    train_rm.add_argument("--separator", default="\n", help="process: the PRM separator after each step (default newline)")
    train_rm.set_defaults(run=_train_rm)
    report = commands.add_parser("report", help="write RUN_DIR/report.html: curves, evaluation, config, completions")
    report.add_argument("run_dir", metavar="RUN_DIR")
    report.add_argument("--out", help="where to write the HTML (default: RUN_DIR/report.html)")
    report.set_defaults(run=_report)
    show = commands.add_parser("config", help="print the fully resolved config and exit (validates it)")
    show.add_argument("items", nargs="*", metavar="[CONFIG.yaml] [key=value ...]")
    show.set_defaults(run=_show_config)
    presets = commands.add_parser("presets", help="list the algorithm presets (GRPO family)")
    presets.set_defaults(run=_presets)
    methods = commands.add_parser("methods", help="list the training methods (algorithm.method)")
    methods.set_defaults(run=_methods)
    repro = commands.add_parser("reproduce", help="DeepSeekMath's comparisons in miniature (results.json, report.html)")
    repro.add_argument("--quick", action="store_true", help="fewer steps and seeds, the same code path (a few minutes)")
    repro.add_argument("--out", default="runs/reproduce", help="output directory (an interrupted run continues there)")
    repro.add_argument("--seeds", type=int, help="seeds of the process-supervision arms (default: 5, quick: 2; others at most 3)")
    repro.add_argument("--workers", type=int, help="runs at a time (default: one per CPU core, at most 4)")
    repro.add_argument("--arms", help="comma-separated arms to run (default: all), e.g. grpo_os,grpo_ps,grpo_ps_min,grpo_ps_gold")
    repro.add_argument("--steps", type=int, help="training steps per run (default: 60, quick: 6)")
    repro.add_argument("--rm-gate", type=float, help="minimum held-out within-group AUC of the shipped PRM (default 0.55; 0: off)")
    repro.set_defaults(run=_reproduce)
    export = commands.add_parser("export", help="merge a LoRA run's adapters into a plain HF model (RUN_DIR/final/merged)")
    export.add_argument("source", metavar="RUN_DIR|ADAPTER_DIR")
    export.add_argument("--out", help="where to write the merged model (default: <final>/merged)")
    export.set_defaults(run=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command in ("train-rm", "export", "reproduce"):
        quiet_transformers()
    try:
        return args.run(args)
    except ValueError as err:  # bad input (config, data, model, run directory): one line, no traceback
        return _fail(str(err), 2)
    except OSError as err:  # the disk: full, read-only, gone
        where = f" ({err.filename})" if err.filename else ""
        return _fail(f"{err.strerror or err}{where}", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130, prefix="cohort: ")


def _fail(message: str, code: int, prefix: str = "cohort: error: ") -> int:
    """One line on stderr (and in the run's run.log when one is open); COHORT_DEBUG=1 shows the traceback."""
    if os.environ.get("COHORT_DEBUG"):
        raise
    print(f"{prefix}{message}", file=sys.stderr)
    if "cohort.monitoring.console" in sys.modules:
        from cohort.monitoring.console import record_fatal

        record_fatal(f"{prefix}{message}")
    return code


if __name__ == "__main__":
    sys.exit(main())
