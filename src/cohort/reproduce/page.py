"""The reproduction's report.html: claims with verdicts, the unified-paradigm table, the figures.

Self-contained like a run's report: inline CSS, PNG data URIs, no scripts, a strict CSP.
"""

from __future__ import annotations

from typing import Any

import jinja2

from cohort.report import Plot

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>cohort reproduce: DeepSeekMath in miniature</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1400px; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; } th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } .muted { color: #666; }
.reproduced { background: #e6f4ea; } .not-reproduced { background: #fce8e6; } .inconclusive { background: #fef7e0; }
.not-testable, .not-judged, .not-run { background: #eef1f6; }
figure { display: inline-block; margin: 0.5rem; }
</style>
</head>
<body>
<h1>DeepSeekMath's findings in miniature</h1>
<p class="muted">{{ setup }}</p>
<h2 id="claims">The paper's claims</h2>
<table id="claims-table">
<tr><th>claim</th><th>paper</th><th>what is compared</th><th>here (mean [95% CI] over seeds; paired difference)</th>
<th>paper's effect</th><th>minimum detectable effect (before / observed)</th><th>verdict</th></tr>
{%- for c in claims %}
<tr class="{{ c.css }}" data-claim="{{ c.claim }}">
<td>{{ c.text }}</td><td>{{ c.paper }}</td><td>{{ c.measure }}</td><td class="num">{{ c.ours }}</td>
<td class="num">{{ c.effect }}</td><td class="num">{{ c.mde }}</td><td>{{ c.verdict }}</td></tr>
{%- endfor %}
</table>
<p class="muted">Verdicts come from the paired per-seed differences (seed s of every arm shares data order, sampling seeds and
held-out problems): reproduced / not reproduced when the difference's 95% interval excludes 0 (or rules out the paper's
effect), not testable at this scale when both arms fell below the initial policy or the minimum detectable effect (80% power)
exceeds the paper's effect, inconclusive otherwise.</p>
<h2 id="paradigm">The unified paradigm: one loop, every method</h2>
<table id="arms-table">
<tr><th>arm</th><th>seeds</th><th>final held-out pass@1</th><th>greedy</th><th>gold step accuracy</th><th>right answer, wrong step</th>
<th>malformed lines</th><th>steps per completion</th><th>RM within-group AUC (start → end)</th><th>wall time (all seeds)</th></tr>
{%- for a in arms %}
<tr data-arm="{{ a.name }}"><td>{{ a.label }}</td><td class="num">{{ a.seeds }}</td><td class="num">{{ a.pass1 }}</td><td class="num">{{ a.greedy }}</td>
<td class="num">{{ a.gold }}</td><td class="num">{{ a.unsound }}</td><td class="num">{{ a.malformed }}</td><td class="num">{{ a.steps }}</td>
<td class="num">{{ a.rm }}</td><td class="num">{{ a.wall }}</td></tr>
{%- endfor %}
</table>
<p class="muted">Measured on the final policy's held-out completions (the initial policy: {{ initial }}).</p>
<h2 id="reward-models">Reward models</h2>
<p>{{ reward_models }}</p>
<h2 id="figures">Figures</h2>
{%- for plot in plots %}
<figure><img id="plot-{{ plot.id }}" width="{{ plot.width }}" height="{{ plot.height }}" alt="{{ plot.alt }}" src="{{ plot.data_uri }}"></figure>
{%- endfor %}
</body>
</html>
"""


def render(results: dict[str, Any], plots: list[Plot]) -> str:
    """The HTML of a reproduction from its results and figures (all text escaped)."""
    arms = [_arm_row(name, arm) for name, arm in results["arms"].items()]
    claims = [{**c, "css": c["verdict"].split(" (")[0].replace(" at this scale", "").replace(" ", "-"),
               "effect": _number(c.get("paper_effect")), "mde": f"{_number(c.get('mde_before'))} / {_number(c.get('mde_observed'))}"}
              for c in results["claims"]]
    first = next(iter(results["arms"].values()), None)
    initial = "—" if first is None else (f"pass@1 {first['initial_pass1']:.3f}, " + ", ".join(
        f"{label} {_number(first['measures'][key]['start']['mean'])}" for key, label in MEASURE_LABELS))
    s = results["scale"]
    setup = (f"{results['mode']} run on {s['task']}: {s['seeds']} seeds for the process-supervision arms, {s['other_seeds']} for the "
             f"others, {s['steps']} steps of {s['prompts']} prompts x {s['group']} samples (the same sample budget for every arm), "
             f"lr {s['lr']}, held-out pass@1 on {s['eval_problems']} problems x {s['eval_samples']} samples; "
             f"{results['wall_seconds'] / 60:.1f} min for this invocation ({results['run_seconds'] / 60:.1f} min of training runs "
             f"in all, {s.get('workers', 1)} at a time).")
    environment = jinja2.Environment(autoescape=True)
    return environment.from_string(TEMPLATE).render(setup=setup, claims=claims, arms=arms, initial=initial,
                                                    reward_models=_reward_models(results.get("reward_models") or {}), plots=plots)


MEASURE_LABELS = (("gold_step_accuracy", "gold step accuracy"), ("right_with_wrong_step", "right answers with a wrong step"),
                  ("malformed_lines", "malformed lines"), ("steps", "steps per completion"))


def _arm_row(name: str, arm: dict[str, Any]) -> dict[str, Any]:
    end = {key: value["end"] for key, value in arm["measures"].items()}
    rm = arm["measures"].get("rm_within_group_auc")
    return {"name": name, "label": arm["label"], "seeds": arm["seeds"], "pass1": _ci(arm["final_pass1"]),
            "greedy": _ci(arm["final_greedy"]), "gold": _ci(end["gold_step_accuracy"]), "unsound": _ci(end["right_with_wrong_step"]),
            "malformed": _ci(end["malformed_lines"]), "steps": _ci(end["steps"]),
            "rm": "—" if rm is None else f"{_number(rm['start']['mean'])} → {_number(rm['end']['mean'])}",
            "wall": f"{arm['wall_seconds']:.0f} s"}


def _reward_models(rm: dict[str, Any]) -> str:
    def held(model: str, key: str) -> str:
        return _number(((rm.get(model) or {}).get("held_out") or {}).get(key))

    return (f"Shipped (scripts/build_reward_models.py): PRM held-out within-group AUC {held('prm', 'within_group_auc')} "
            f"(pooled step accuracy {held('prm', 'accuracy')} against a majority class of {held('prm', 'majority_accuracy')}, "
            f"pooled AUC {held('prm', 'auc')}); ORM within-group AUC {held('orm', 'within_group_auc')} (pooled accuracy "
            f"{held('orm', 'accuracy')}, majority class {held('orm', 'majority_accuracy')}, AUC {held('orm', 'auc')}); "
            f"gate: {rm.get('gate')}.")


def _number(value: Any) -> str:
    return "—" if value is None or value != value or value in (float("inf"), float("-inf")) else f"{value:.3f}"


def _ci(estimate: dict[str, Any]) -> str:
    low, high = estimate["low"], estimate["high"]
    if estimate["mean"] != estimate["mean"]:
        return "—"
    if low is None or low != low:
        return f"{estimate['mean']:.3f}"
    return f"{estimate['mean']:.3f} [{low:.3f}, {high:.3f}]"
