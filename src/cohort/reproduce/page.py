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
figure { display: inline-block; margin: 0.5rem; }
</style>
</head>
<body>
<h1>DeepSeekMath's findings in miniature</h1>
<p class="muted">{{ setup }}</p>
<h2 id="claims">The paper's claims</h2>
<table id="claims-table">
<tr><th>claim</th><th>paper</th><th>what is compared</th><th>here (mean [95% CI] over seeds)</th><th>verdict</th></tr>
{%- for c in claims %}
<tr class="{{ c.verdict.split(' ')[0] if c.verdict != 'not reproduced' else 'not-reproduced' }}" data-claim="{{ c.claim }}">
<td>{{ c.text }}</td><td>{{ c.paper }}</td><td>{{ c.measure }}</td><td class="num">{{ c.ours }}</td><td>{{ c.verdict }}</td></tr>
{%- endfor %}
</table>
<h2 id="paradigm">The unified paradigm: one loop, every method</h2>
<table id="arms-table">
<tr><th>arm</th><th>final held-out pass@1</th><th>final greedy accuracy</th><th>pass@1 before</th><th>wall time (all seeds)</th></tr>
{%- for a in arms %}
<tr data-arm="{{ a.name }}"><td>{{ a.label }}</td><td class="num">{{ a.pass1 }}</td><td class="num">{{ a.greedy }}</td>
<td class="num">{{ a.before }}</td><td class="num">{{ a.wall }}</td></tr>
{%- endfor %}
</table>
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
    arms = [
        {"name": name, "label": arm["label"], "pass1": _ci(arm["final_pass1"]), "greedy": _ci(arm["final_greedy"]),
         "before": f"{arm['curve'][0]['mean']:.3f}" if arm["curve"] else "—", "wall": f"{arm['wall_seconds']:.0f} s"}
        for name, arm in results["arms"].items()
    ]
    rm = results.get("reward_models") or {}
    reward_models = (
        f"Trained once on {rm.get('samples')} samples of the initial policy ({rm.get('correct_fraction', 0):.2f} correct): "
        f"ORM held-out accuracy {_metric(rm.get('orm'), 'accuracy')}, AUC {_metric(rm.get('orm'), 'auc')}; "
        f"PRM (Monte-Carlo step labels) held-out step accuracy {_metric(rm.get('prm'), 'accuracy')}, AUC {_metric(rm.get('prm'), 'auc')}."
    )
    s = results["scale"]
    setup = (f"{results['mode']} run: {s['seeds']} seeds per arm, {s['steps']} steps of {s['prompts']} prompts x {s['group']} samples "
             f"(the same sample budget for every arm), lr {s['lr']}, held-out pass@1 on {s['eval_problems']} problems x "
             f"{s['eval_samples']} samples; {results['wall_seconds'] / 60:.1f} min for this invocation "
             f"({results['run_seconds'] / 60:.1f} min of training runs in all, {s.get('workers', 1)} at a time).")
    environment = jinja2.Environment(autoescape=True)
    return environment.from_string(TEMPLATE).render(setup=setup, claims=results["claims"], arms=arms,
                                                    reward_models=reward_models, plots=plots)


def _ci(estimate: dict[str, Any]) -> str:
    low, high = estimate["low"], estimate["high"]
    if low is None or low != low:
        return f"{estimate['mean']:.3f}"
    return f"{estimate['mean']:.3f} [{low:.3f}, {high:.3f}]"


def _metric(held: dict[str, Any] | None, key: str) -> str:
    value = (held or {}).get(key)
    return "—" if value is None else f"{value:.3f}"
