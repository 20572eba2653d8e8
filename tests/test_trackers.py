"""log.trackers for real: a short run logs to W&B (offline), MLflow (a local file store) and trackio
(its local store), is resumed, and each tracker's own storage is read back through its own format or
API and compared with metrics.jsonl. No mocks: a missing library is simulated by blocking its import
in a subprocess, and a failing tracker by deleting its store under it."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from cohort.cli import main
from cohort.config import load_config
from cohort.monitoring.metrics_writer import MetricsWriter
from cohort.monitoring.trackers import import_library, mlflow_key, tracker_names
from cohort.run_directory import RunDirectory

TESTS = Path(__file__).resolve().parent
RUN_NAME = "tiny-sums"
COMPARED = ("loss", "reward/mean", "reward/std", "completion_len/mean", "lr", "grad_norm")
READS_TRACKED = pytest.mark.shares("trackers-run")  # one worker builds the tracked runs (tests/xdist_order.py)


def tracker_env(home: Path) -> dict[str, str]:
    """The test's environment without the user's tracker settings; every tracker store under ``home``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("WANDB_", "MLFLOW_", "TRACKIO_"))}
    env.update(
        TRACKIO_DIR=str(home / "trackio"), WANDB_CONFIG_DIR=str(home / "wandb-config"),
        WANDB_CACHE_DIR=str(home / "wandb-cache"), WANDB_DATA_DIR=str(home / "wandb-data"),
        HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")])),
    )
    return env


def train_args(out: Path, model_dir: Path, task_file: Path, *overrides: str) -> list[str]:
    """A few-second run (tests/test_trainer.py's run_config, without evaluation) as CLI arguments."""
    return [
        "train", f"model.path={model_dir}", f"data.task={task_file}", "data.test_fraction=0.25", "rollout.group_size=4",
        "rollout.prompts_per_step=3", "rollout.max_new_tokens=5", "algorithm.beta=0.0", "optim.lr=1e-3",
        "optim.micro_batch_size=5", "train.save_every=2", "train.eval_before=false", "train.eval_after=false",
        "train.threads=1", f"train.out_dir={out}", "log.console=json", "log.report=false", f"log.run_name={RUN_NAME}",
        "reward.functions=[{name: 'reward_fixtures:digit_count'}, {name: exact_match, weight: 0.5}]", *overrides,
    ]


def cohort(args: list[str], env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess:
    """``cohort ARGS`` in a fresh interpreter (``prelude`` runs first), output captured."""
    code = f"import sys\n{prelude}\nfrom cohort.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("task") / "sums.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a in range(6) for b in range(6)))
    return path


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, tiny_llama_dir, task_file) -> SimpleNamespace:
    """Steps 1-2 with wandb, mlflow and trackio (and TensorBoard), then a resume to step 3."""
    home = tmp_path_factory.mktemp("trackers")
    out, env = home / "run", tracker_env(home)
    trackers = "log.trackers=[wandb, mlflow, trackio]"
    first = cohort(train_args(out, tiny_llama_dir, task_file, "train.steps=2", trackers), env)
    assert first.returncode == 0, first.stderr
    ids_after_first = json.loads((out / "trackers.json").read_text())
    second = cohort(train_args(out, tiny_llama_dir, task_file, "train.steps=3", "train.resume=true", trackers), env)
    assert second.returncode == 0, second.stderr
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    return SimpleNamespace(home=home, out=out, env=env, runs=(first, second), metrics=metrics, ids_after_first=ids_after_first,
                           ids=json.loads((out / "trackers.json").read_text()))


def finite(record: dict) -> dict:
    """What a tracker should hold for one metrics.jsonl line: its finite numbers, without ``step``."""
    return {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


# --- W&B: the offline run's transaction log ----------------------------------------------------------


def wandb_records(path: Path):
    """The records of a .wandb file, decoded with wandb's own protobuf definitions.

    The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB
    blocks of chunks, each with a 7-byte header (CRC32C, length, type 1 full / 2 first / 3 middle / 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)
    position, pending = 7, b""
    while position + 7 <= len(data):
        left_in_block = 32768 - position % 32768
        if left_in_block < 7:  # a block's tail too short for a header is padding
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def read_wandb_offline_run(path: Path) -> SimpleNamespace:
    """An offline run's id, name, config and history ({step: {key: value}}) from its .wandb file."""
    run = SimpleNamespace(id=None, name=None, config={}, history={})
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.id, run.name = record.run.run_id, record.run.display_name
            run.config.update({item.key: json.loads(item.value_json) for item in record.run.config.update})
        elif kind == "config":
            run.config.update({item.key: json.loads(item.value_json) for item in record.config.update})
        elif kind == "history":
            row = {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item}
            run.history[record.history.step.num] = {k: v for k, v in row.items() if not k.startswith("_")}
    return run


@READS_TRACKED
@pytest.mark.slow(seconds=25)  # the first of its unit: makes the tracked runs
def test_wandb_offline_run_has_every_metric_the_config_and_the_name(tracked):
    files = sorted((tracked.out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2  # the first session and the resumed one, both offline in the run directory
    runs = [read_wandb_offline_run(path) for path in files]
    assert {run.id for run in runs} == {tracked.ids["wandb"]["id"]}  # the resume continued the same run
    assert {run.name for run in runs} == {RUN_NAME}
    history = {**runs[0].history, **runs[1].history}
    assert sorted(history) == [1, 2, 3]
    for record in tracked.metrics:
        assert history[record["step"]] == finite(record)  # every finite metric, under metrics.jsonl's name
    config = runs[0].config
    assert config["algorithm"]["method"] == "grpo" and config["rollout"]["group_size"] == 4
    assert config["run_dir"] == str(tracked.out) and config["log"]["run_name"] == RUN_NAME


# --- MLflow: its client on the local file store ------------------------------------------------------


@READS_TRACKED
@pytest.mark.slow(seconds=1)
def test_mlflow_file_store_has_every_metric_the_params_and_the_name(tracked, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to read a file store
    import_library("mlflow")  # imported as cohort does: telemetry off
    from mlflow.tracking import MlflowClient

    uri = f"file:{tracked.out / 'mlruns'}"
    assert tracked.ids["mlflow"]["tracking_uri"] == uri
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("cohort")
    (run,) = client.search_runs([experiment.experiment_id])  # one run: the resume continued it
    assert run.info.run_id == tracked.ids["mlflow"]["run_id"] and run.info.run_name == RUN_NAME
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["algorithm.method"] == "grpo" and params["rollout.group_size"] == "4"
    assert params["run_dir"] == str(tracked.out) and params["log.run_name"] == RUN_NAME
    assert json.loads(params["reward.functions"])[1] == {"name": "exact_match", "weight": 0.5}
    keys = set().union(*(finite(record) for record in tracked.metrics))
    assert set(run.data.metrics) == {mlflow_key(key) for key in keys} and "reward/mean" in run.data.metrics
    for key in keys:
        history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, mlflow_key(key))]
        assert history == [(r["step"], float(r[key])) for r in tracked.metrics if key in finite(r)], key


# --- trackio: its command line on its local store ----------------------------------------------------


def trackio_cli(tracked, *args: str) -> dict:
    code = "import sys\nfrom trackio.cli import main\nsys.argv[0] = 'trackio'\nsys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code, *args, "--json"], env=tracked.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@READS_TRACKED
@pytest.mark.slow(seconds=1)
def test_trackio_local_store_has_the_metrics_the_config_and_the_name(tracked):
    assert tracked.ids["trackio"]["where"] == str(tracked.home / "trackio")  # TRACKIO_DIR: nowhere else
    assert trackio_cli(tracked, "list", "runs", "--project", "cohort")["runs"] == [RUN_NAME]  # resumed, not a second run
    run = trackio_cli(tracked, "get", "run", "--project", "cohort", "--run", RUN_NAME)
    assert run["config"]["algorithm.method"] == "grpo" and run["config"]["rollout.group_size"] == 4
    assert run["config"]["run_dir"] == str(tracked.out) and run["last_step"] == 3
    assert set(run["metrics"]) == set().union(*(finite(record) for record in tracked.metrics))
    for key in ("loss", "reward/mean"):
        values = trackio_cli(tracked, "get", "metric", "--project", "cohort", "--run", RUN_NAME, "--metric", key)["values"]
        assert [(v["step"], v["value"]) for v in values] == [(r["step"], r[key]) for r in tracked.metrics], key


# --- TensorBoard, resume, console --------------------------------------------------------------------


@READS_TRACKED
@pytest.mark.slow(seconds=1)
def test_tensorboard_has_the_same_scalars(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked.out), size_guidance={"scalars": 0}).Reload()
    for key in COMPARED:
        assert [(e.step, e.value) for e in events.Scalars(key)] == [(r["step"], pytest.approx(r[key])) for r in tracked.metrics]
    assert any(tag.startswith("config") for tag in events.Tags()["tensors"])  # the resolved config, as text


@READS_TRACKED
@pytest.mark.slow(seconds=1)
def test_resume_continues_every_tracker_run_and_output_stays_quiet(tracked):
    assert tracked.ids == tracked.ids_after_first  # same W&B id, MLflow run, trackio run
    log = (tracked.out / "run.log").read_text().splitlines()
    resumed = [line.split("cohort.monitoring.trackers: ")[1].split(":")[0] for line in log if "cohort.monitoring.trackers: " in line and " resumed " in line]
    assert resumed == ["wandb", "mlflow", "trackio"]
    for run in tracked.runs:
        lines = run.stdout.splitlines()
        assert all(json.loads(line)["event"] in ("step", "summary") for line in lines)  # json mode: nothing else on stdout
        assert "Trackio" not in run.stderr and "wandb:" not in run.stderr and len(run.stderr.splitlines()) <= 3, run.stderr


# --- errors before anything loads, failures during training ------------------------------------------


@pytest.mark.slow
def test_a_missing_tracker_is_named_with_its_install_command_before_any_model_loads(tmp_path, task_file):
    out = tmp_path / "run"
    args = train_args(out, Path("/nonexistent/model"), task_file, "log.trackers=[mlflow, trackio]")
    result = cohort(args, tracker_env(tmp_path), prelude="sys.modules['trackio'] = None  # as if not installed")
    assert result.returncode == 2
    assert "log.trackers: trackio is not installed: pip install 'cohort[trackio]' (or pip install trackio)" in result.stderr
    assert "not found locally" not in result.stderr and not out.exists()  # no model looked for, nothing written


def test_an_unknown_tracker_lists_the_allowed_ones(tmp_path, task_file, capsys):
    base = train_args(tmp_path / "run", Path("/nonexistent/model"), task_file)
    assert main([*base, "log.trackers=[wandb, neptune]"]) == 2
    assert "log.trackers: unknown tracker 'neptune': allowed are tensorboard, wandb, mlflow, trackio" in capsys.readouterr().err
    assert main([*base, "log.trackers=[wanb]"]) == 2
    assert "did you mean 'wandb'?" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_tensorboard_is_on_by_default_or_when_listed_and_mlflow_names_are_sanitised_alone():
    def names(tensorboard, trackers):
        return tracker_names(SimpleNamespace(tensorboard=tensorboard, trackers=trackers))

    assert names(True, []) == ("tensorboard",) and names(False, []) == ()
    assert names(False, ["tensorboard"]) == ("tensorboard",) and names(True, ["mlflow", "tensorboard"]) == ("tensorboard", "mlflow")
    assert mlflow_key("reward/mean") == "reward/mean" and mlflow_key("clip_frac/low") == "clip_frac/low"
    assert mlflow_key("pass@4") == "pass_4" and mlflow_key("reward/a//b/") == "reward/a/_/b/_"


def mlflow_history(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """Metric ``key`` of the MLflow run recorded in ``run_dir``/trackers.json, through MLflow's client."""
    import_library("mlflow")
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    return [(m.step, m.value) for m in client.get_metric_history(state["run_id"], key)]


def test_a_failing_tracker_is_reported_once_and_training_goes_on(tmp_path, monkeypatch):
    """MLflow's store vanishes under a run: every step still reaches metrics.jsonl, one warning says so."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    config = load_config(None, ["model.path=/unused", f"train.out_dir={tmp_path}", "log.tensorboard=false", "log.trackers=[mlflow]"])
    run_dir = RunDirectory(tmp_path)
    warnings: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warnings.append
    logging.getLogger("cohort").addHandler(handler)
    try:
        writer = MetricsWriter(run_dir, config)
        writer.write_step({"step": 1, "loss": 0.5, "kl": float("nan"), "label": "text"})
        assert mlflow_history(tmp_path, "loss") == [(1, 0.5)]
        assert mlflow_history(tmp_path, "kl") == []  # NaN (null in metrics.jsonl) is not logged
        shutil.rmtree(tmp_path / "mlruns")
        writer.write_step({"step": 2, "loss": 0.25})
        writer.write_step({"step": 3, "loss": 0.125})
        writer.close()
    finally:
        logging.getLogger("cohort").removeHandler(handler)
    assert [json.loads(line)["step"] for line in run_dir.metrics.read_text().splitlines()] == [1, 2, 3]
    (warning,) = [record.getMessage() for record in warnings]
    assert warning.startswith("log.trackers: mlflow could not log step 2") and "metrics.jsonl has every step" in warning
