"""Experiment trackers: the per-step metrics of metrics.jsonl, sent to TensorBoard, W&B, MLflow, trackio.

``log.trackers`` names any of them (``log.tensorboard: true``, the default, adds TensorBoard); each
goes through its own library, which is an optional extra (``pip install 'cohort[wandb]'`` and so on).
:func:`tracker_names` checks the names and imports the libraries when the trainer is built, before
any model loads, so a typo or a missing package costs nothing. Every tracker gets:

- the metrics under metrics.jsonl's own names (``reward/mean``, ``clip_frac/low``, ...), finite
  numbers only (a NaN, written as null in the JSON, is left out). MLflow alone restricts names: the
  characters it rejects become ``_`` (:func:`mlflow_key`);
- the resolved config (what config.yaml holds) plus ``run_dir`` as its parameters;
- the run's name (``log.run_name``, else the run directory's name) in project ``cohort``.

Each tracker writes locally unless its own environment variable says otherwise: W&B offline into
RUN_DIR/wandb (``WANDB_MODE``), MLflow into the file store RUN_DIR/mlruns (``MLFLOW_TRACKING_URI``),
trackio into its local store (``TRACKIO_DIR``, default ~/.cache/huggingface/trackio). A resumed run
continues the same tracker runs: their ids are kept in RUN_DIR/trackers.json. metrics.jsonl stays the
record: a tracker that fails during training is reported once and training goes on.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import io
import json
import logging
import math
import numbers
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

logger = logging.getLogger(__name__)

DEFAULT_PROJECT = "cohort"
STATE_FILE = "trackers.json"


@dataclass(frozen=True)
class Library:
    """What a tracker needs installed: the module to import and the way to install it."""

    module: str
    extra: str | None
    package: str

    def install_hint(self) -> str:
        if self.extra is None:
            return f"pip install {self.package}"
        return f"pip install 'cohort[{self.extra}]' (or pip install {self.package})"


LIBRARIES = {
    "tensorboard": Library("torch.utils.tensorboard", None, "tensorboard"),
    "wandb": Library("wandb", "wandb", "wandb"),
    "mlflow": Library("mlflow", "mlflow", "mlflow-skinny"),
    "trackio": Library("trackio", "trackio", "trackio"),
}
TRACKER_NAMES = tuple(LIBRARIES)


class TrackerError(ValueError):
    """``log.trackers`` cannot be served: an unknown name, a library that is not installed, a tracker that fails to start."""


@contextlib.contextmanager
def environ_defaults(**values: str) -> Iterator[None]:
    """Set environment variables the user has not set, for the duration of the block only."""
    added = [name for name in values if name not in os.environ]
    for name in added:
        os.environ[name] = values[name]
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def import_library(name: str) -> Any:
    """Import tracker ``name``'s library, or raise a TrackerError with its install command.

    MLflow is imported with its usage telemetry off (it starts a network thread at import
    otherwise) unless the user set ``MLFLOW_DISABLE_TELEMETRY`` themselves.
    """
    library = LIBRARIES[name]
    try:
        with environ_defaults(MLFLOW_DISABLE_TELEMETRY="true"):
            return importlib.import_module(library.module)
    except ImportError as err:
        raise TrackerError(f"log.trackers: {name} is not installed: {library.install_hint()} ({err})") from err


def tracker_names(log: Any) -> tuple[str, ...]:
    """The trackers a run's ``log`` config asks for, in order, each library imported.

    TensorBoard comes first when ``log.tensorboard`` is true or ``log.trackers`` lists it. Raises a
    TrackerError for an unknown name (listing the allowed ones) or a library that is not installed.
    """
    requested = [str(name) for name in log.trackers]
    for name in requested:
        if name not in LIBRARIES:
            close = difflib.get_close_matches(name, TRACKER_NAMES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TrackerError(f"log.trackers: unknown tracker {name!r}: allowed are {', '.join(TRACKER_NAMES)}{hint}")
    names = (["tensorboard"] if log.tensorboard else []) + requested
    names = list(dict.fromkeys(names))  # each once, in order
    for name in names:
        import_library(name)
    return tuple(names)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections as dotted keys: ``{"algorithm": {"method": "grpo"}}`` -> ``{"algorithm.method": "grpo"}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, name + "."))
        else:
            flat[name] = value
    return flat


def finite_scalars(metrics: Mapping[str, Any]) -> dict[str, float | int]:
    """The metrics a tracker can plot: finite real numbers (no bools, no NaN or inf, no strings), without ``step``."""
    return {
        key: value
        for key, value in metrics.items()
        if key != "step" and isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    }


class TrackerState:
    """RUN_DIR/trackers.json: each tracker's run id (and where it lives), so that a resumed run continues it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.read().get(name) or {})

    def set(self, name: str, record: Mapping[str, Any]) -> None:
        state = self.read()
        state[name] = dict(record)
        temporary = self.path.with_name(f".tmp-{self.path.name}")
        temporary.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, self.path)


@dataclass(frozen=True)
class TrackedRun:
    """What every tracker is told about the run: where it is, its name, the config, where it starts."""

    run_dir: Path
    name: str
    project: str
    config: Mapping[str, Any]
    start_step: int = 0

    @classmethod
    def from_config(cls, config: Any, run_dir: Path, start_step: int = 0) -> "TrackedRun":
        run_dir = Path(run_dir).resolve()
        resolved = {"run_dir": str(run_dir), **config.to_dict()}
        return cls(run_dir, config.log.run_name or run_dir.name, DEFAULT_PROJECT, resolved, start_step)

    @property
    def resuming(self) -> bool:
        """Continuing from a checkpoint: the trackers continue the runs recorded in trackers.json."""
        return self.start_step > 0

    @property
    def state(self) -> TrackerState:
        return TrackerState(self.run_dir / STATE_FILE)

    def stored(self, name: str) -> dict[str, Any]:
        """Tracker ``name``'s record in trackers.json when resuming ({} for a fresh run)."""
        return self.state.get(name) if self.resuming else {}


class Tracker(Protocol):
    """One experiment tracker. Opening it (its constructor, given a TrackedRun) starts or resumes its run."""

    def log_metrics(self, metrics: Mapping[str, float | int], step: int) -> None:
        """Record finite scalars under metrics.jsonl's names at training step ``step``."""

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Record the resolved config (nested sections) as the run's parameters."""

    def close(self) -> None:
        """Flush and finish the run."""


class TensorBoardTracker:
    """TensorBoard event files in the run directory (torch's SummaryWriter)."""

    def __init__(self, run: TrackedRun) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step hides events a crashed run wrote after the checkpoint we resume from
        self.writer = SummaryWriter(log_dir=str(run.run_dir), purge_step=run.start_step + 1 if run.start_step else None)
        self.start_step = run.start_step

    def log_metrics(self, metrics: Mapping[str, float | int], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        lines = "\n".join(f"    {key}: {json.dumps(value, default=str)}" for key, value in flatten_config(config).items())
        self.writer.add_text("config", lines, self.start_step)  # indented: TensorBoard's markdown shows it as code

    def log_text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


def _wandb_settings(wandb: Any) -> Any:
    """No console output of W&B's own (banner, run URL, sync hints) and no capture of cohort's console,
    unless the user's WANDB_SILENT / WANDB_CONSOLE say otherwise."""
    options: dict[str, Any] = {}
    if "WANDB_SILENT" not in os.environ:
        options["silent"] = True
    if "WANDB_CONSOLE" not in os.environ:
        options["console"] = "off"
    return wandb.Settings(**options)


class WandbTracker:
    """Weights & Biases: offline into RUN_DIR/wandb unless WANDB_MODE says otherwise (``wandb sync`` uploads it)."""

    def __init__(self, run: TrackedRun) -> None:
        wandb = import_library("wandb")
        run_id = run.stored("wandb").get("id")
        mode = os.environ.get("WANDB_MODE") or "offline"
        # W&B's process-wide settings (they decide whether its own usage telemetry goes out) come from
        # the environment, not from init's mode=: offline must be there too, or it probes a server
        with environ_defaults(WANDB_MODE=mode):
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or run.project, name=run.name, dir=str(run.run_dir), mode=mode,
                id=run_id, resume="allow" if run_id else None, settings=_wandb_settings(wandb),
            )
        where = str(run.run_dir / "wandb") if mode in ("offline", "dryrun", "disabled") else self.run.url
        run.state.set("wandb", {"id": self.run.id, "project": self.run.project, "mode": mode, "where": where})
        logger.info("wandb: run %s (%s) %s in %s", self.run.id, run.name, "resumed" if run_id else "started", where)

    def log_metrics(self, metrics: Mapping[str, float | int], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self.run.config.update(dict(config), allow_val_change=True)

    def close(self) -> None:
        self.run.finish()


_MLFLOW_BAD_CHARACTERS = re.compile(r"[^\w\-. :/]")
MLFLOW_MAX_KEY = 250
MLFLOW_MAX_VALUE = 6000
MLFLOW_BATCH = 100  # params (and tags) per log_batch call, MLflow's limit


def mlflow_key(name: str) -> str:
    """A metric or param name MLflow accepts: characters outside ``[A-Za-z0-9_-. :/]`` become ``_``, and
    path parts it would normalise away (empty, ``.``, ``..``) become ``_``; at most 250 characters."""
    parts = [_MLFLOW_BAD_CHARACTERS.sub("_", part) for part in str(name).split("/")]
    parts = ["_" if part in ("", ".", "..") else part for part in parts]
    return "/".join(parts)[:MLFLOW_MAX_KEY]


def mlflow_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The flattened config as MLflow params: valid keys, values as text (JSON for non-strings), at most 6,000 characters."""
    params = {}
    for key, value in flatten_config(config).items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        params[mlflow_key(key)] = text if len(text) <= MLFLOW_MAX_VALUE else text[: MLFLOW_MAX_VALUE - 3] + "..."
    return params


class MlflowTracker:
    """MLflow: experiment = project, one run per cohort run; the file store RUN_DIR/mlruns unless MLFLOW_TRACKING_URI is set.

    It uses an ``MlflowClient`` of its own rather than the fluent ``mlflow.start_run``, so the
    process-wide tracking URI and active run (a user's own, say) are left alone.
    """

    def __init__(self, run: TrackedRun) -> None:
        import_library("mlflow")
        from mlflow.tracking import MlflowClient

        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or f"file:{run.run_dir / 'mlruns'}"
        default_store = "MLFLOW_TRACKING_URI" not in os.environ
        # MLflow 3 refuses a new file store unless told it is wanted; the client keeps its store
        with environ_defaults(**({"MLFLOW_ALLOW_FILE_STORE": "true"} if default_store else {})):
            self.client = MlflowClient(tracking_uri=self.uri)
        self.run_id = self._existing_run(run.stored("mlflow").get("run_id"))
        resumed = self.run_id is not None
        if self.run_id is None:
            self.run_id = self.client.create_run(self._experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or run.project),
                                                 run_name=run.name).info.run_id
        run.state.set("mlflow", {"run_id": self.run_id, "tracking_uri": self.uri})
        logger.info("mlflow: run %s (%s) %s at %s", self.run_id, run.name, "resumed" if resumed else "started", self.uri)

    def _experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment is not None else self.client.create_experiment(name)

    def _existing_run(self, run_id: str | None) -> str | None:
        """The stored run, reopened, if the store still has it."""
        if not run_id:
            return None
        try:
            self.client.update_run(run_id, status="RUNNING")
        except Exception:  # gone (another store, deleted): a new run it is
            logger.warning("mlflow: the stored run %s is not in %s; starting a new run", run_id, self.uri)
            return None
        return run_id

    def log_metrics(self, metrics: Mapping[str, float | int], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(mlflow_key(key), float(value), now, step) for key, value in metrics.items()]
        for start in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[start : start + 1000])

    def log_config(self, config: Mapping[str, Any]) -> None:
        """Params are write-once in MLflow: a resumed run adds the keys it lacks and keeps the first values."""
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        params = [Param(key, value) for key, value in mlflow_params(config).items() if key not in logged]
        for start in range(0, len(params), MLFLOW_BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + MLFLOW_BATCH])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


@contextlib.contextmanager
def _quiet_stdout(label: str) -> Iterator[None]:
    """Keep a library's prints off stdout (where json console mode writes JSON only); they go to the debug log."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        if captured.getvalue().strip():
            logger.debug("%s: %s", label, captured.getvalue().strip())


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """Hugging Face Hub requests refused for the block: trackio.init asks the Hub for the user's name
    (whoami) whenever the machine has a token, even for a local run."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _accepted(function: Callable[..., Any], **options: Any) -> dict[str, Any]:
    """The options ``function`` takes (older trackio releases lack some)."""
    parameters = inspect.signature(function).parameters
    return {key: value for key, value in options.items() if key in parameters}


class TrackioTracker:
    """trackio, locally: its SQLite store in TRACKIO_DIR (default ~/.cache/huggingface/trackio), seen with ``trackio show``.

    Local unless the user's TRACKIO_SPACE_ID / TRACKIO_SERVER_URL name a remote; a local run makes no
    network request. No CPU/GPU sampling threads: cohort logs its own timings.
    """

    def __init__(self, run: TrackedRun) -> None:
        self.trackio = import_library("trackio")
        from trackio import utils

        stored = run.stored("trackio")
        local = not (os.environ.get("TRACKIO_SPACE_ID") or os.environ.get("TRACKIO_SERVER_URL"))
        options = _accepted(self.trackio.init, auto_log_cpu=False, auto_log_gpu=False, embed=False)
        with _quiet_stdout("trackio"), (_hub_offline() if local else contextlib.nullcontext()):
            self.run = self.trackio.init(project=run.project, name=run.name, resume="allow" if stored else "never", **options)
        if stored and stored.get("id") not in (None, self.run.id):
            logger.warning("trackio: resumed run %s (the latest named %r), not the stored %s", self.run.id, run.name, stored["id"])
        where = str(utils.TRACKIO_DIR) if local else "remote"
        run.state.set("trackio", {"id": self.run.id, "project": run.project, "name": run.name, "where": where})
        logger.info("trackio: run %r %s in project %r (%s; trackio show --project %s)", run.name,
                    "resumed" if stored else "started", run.project, where, run.project)

    def log_metrics(self, metrics: Mapping[str, float | int], step: int) -> None:
        self.run.log(dict(metrics), step=step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        """trackio stores a run's config (flattened here, like MLflow's params) with its next logged step."""
        self.run.config.update(flatten_config(config))

    def close(self) -> None:
        with _quiet_stdout("trackio"):
            self.trackio.finish()


TRACKER_CLASSES: dict[str, Callable[[TrackedRun], Tracker]] = {
    "tensorboard": TensorBoardTracker,
    "wandb": WandbTracker,
    "mlflow": MlflowTracker,
    "trackio": TrackioTracker,
}


class GuardedTracker:
    """A tracker whose failures never stop training: the first one is logged as a warning, later ones
    only at debug level (metrics.jsonl, written before any tracker, has every step)."""

    def __init__(self, name: str, tracker: Tracker) -> None:
        self.name = name
        self.tracker = tracker
        self.failed = False

    def _call(self, action: str, function: Callable[..., Any], *args: Any) -> None:
        try:
            function(*args)
        except Exception as err:
            level = logging.DEBUG if self.failed else logging.WARNING
            logger.log(level, "log.trackers: %s could not %s (%s: %s); training goes on, metrics.jsonl has every step",
                       self.name, action, type(err).__name__, err)
            self.failed = True

    def log_metrics(self, metrics: Mapping[str, float | int], step: int) -> None:
        self._call(f"log step {step}", self.tracker.log_metrics, metrics, step)

    def log_config(self, config: Mapping[str, Any]) -> None:
        self._call("log the config", self.tracker.log_config, config)

    def log_text(self, tag: str, text: str, step: int) -> None:
        """Text goes to the trackers with a text panel (TensorBoard); the others skip it."""
        if hasattr(self.tracker, "log_text"):
            self._call(f"log text {tag!r}", self.tracker.log_text, tag, text, step)

    def close(self) -> None:
        self._call("finish", self.tracker.close)


def open_trackers(names: Sequence[str], run: TrackedRun) -> list[GuardedTracker]:
    """Start (or resume) each tracker and log the config to it; one that cannot start raises a TrackerError."""
    opened: list[GuardedTracker] = []
    for name in names:
        try:
            tracker = GuardedTracker(name, TRACKER_CLASSES[name](run))
        except TrackerError:
            close_trackers(opened)
            raise
        except Exception as err:
            close_trackers(opened)
            raise TrackerError(f"log.trackers: {name} could not start: {type(err).__name__}: {err}") from err
        tracker.log_config(run.config)
        opened.append(tracker)
    return opened


def close_trackers(trackers: Sequence[GuardedTracker]) -> None:
    for tracker in trackers:
        tracker.close()
