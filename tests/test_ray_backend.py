"""reward.backend: ray, on a real local Ray cluster (ray.init with this machine's CPUs).

Ray workers score exactly what the local backend scores; a worker that dies costs only its chunk
(None) and the next call works again; the trainer runs end to end with Ray scoring.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="reward.backend=ray needs Ray: pip install 'cohort[ray]'")

from system_deps import requires_bubblewrap  # noqa: E402

from cohort.rewards import build_reward  # noqa: E402
from cohort.rewards.ray_backend import RayReward, connect  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

TESTS = Path(__file__).parent


@pytest.fixture(scope="module", autouse=True)
def cluster():
    os.environ["PYTHONPATH"] = f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"  # workers import reward_fixtures
    connect(None, num_cpus=2)
    yield
    ray.shutdown()


COMPLETIONS = ["12", "no digits", "3", "x7", "", "forty", "99", "a1b2", "z"]
ANSWERS = ["12", "1", "3", "7", "0", "40", "99", "12", "z"]


@pytest.mark.parametrize("spec", [{"name": "exact_match"}, {"name": "reward_fixtures:digit_count"}, {"name": "format", "pattern": r"\d+"}])
def test_ray_workers_score_what_the_local_backend_scores(spec):
    local = build_reward(spec).fn(prompts=["p"] * len(COMPLETIONS), completions=COMPLETIONS, answer=ANSWERS)
    remote = RayReward(spec, workers=2, chunk_size=2)(["p"] * len(COMPLETIONS), COMPLETIONS, answer=ANSWERS)
    assert remote == local


@requires_bubblewrap
def test_the_code_sandbox_runs_on_ray_workers():
    tests = [json.dumps([{"input": "2 3\n", "output": "5\n"}])] * 3
    programs = ["a, b = map(int, input().split())\nprint(a + b)", "print(6)", "import os\nos._exit(0)"]
    spec = {"name": "code", "timeout_s": 5.0}
    local = build_reward(spec).fn(prompts=["p"] * 3, completions=programs, tests=tests)
    assert RayReward(spec, workers=2, chunk_size=1)(["p"] * 3, programs, tests=tests) == local == [1.0, 0.0, 0.0]


def test_a_lost_worker_scores_none_for_its_chunk_and_the_next_call_works():
    reward = RayReward({"name": "reward_fixtures:dies_on_marker"}, workers=2, chunk_size=2)
    completions = ["1", "a", "DIE", "2", "3", "b"]
    scores = reward(["p"] * 6, completions)
    assert scores[2:4] == [None, None]  # the chunk whose worker died
    assert scores[:2] == [1.0, 0.0] and scores[4:] == [1.0, 0.0]
    assert reward(["p"] * 4, ["5", "c", "6", "d"]) == [1.0, 0.0, 1.0, 0.0]  # Ray restarted the actor


def test_training_with_ray_scoring(tmp_path, tiny_llama_dir):
    from cohort.config import load_config
    from cohort.monitoring.console import RunConsole
    from cohort.training.trainer import Trainer

    task = tmp_path / "sums.jsonl"
    task.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a in range(5) for b in range(5)))
    config = load_config(None, [
        f"model.path={tiny_llama_dir}", f"data.task={task}", "data.test_fraction=0.2", "rollout.group_size=4",
        "rollout.prompts_per_step=2", "rollout.max_new_tokens=3", "train.steps=2", "train.eval_samples=2",
        f"train.out_dir={tmp_path / 'run'}", "log.console=quiet", "log.report=false", "reward.backend=ray",
        "reward.functions=[{name: 'reward_fixtures:has_digit'}, {name: exact_match, weight: 0.5}]",
    ])
    summary = Trainer(config, RunConsole("quiet", 2)).train()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all("reward/has_digit/mean" in m and m["accuracy"] is not None for m in metrics)
    assert "after" in summary
