"""The HTML run report: built from a real tiny training run and checked as a person sees it, in
headless Chromium (plots rendered, the run's numbers in the tables, untrusted completions shown as
text), plus the error cases and runs that lack some metrics.

The browser is Debian's ``chromium`` driven by Selenium through ``/usr/bin/chromedriver`` (explicit
paths, so Selenium Manager never downloads anything). ``make setup`` installs them
(``scripts/install_chromium.sh``) where it can; elsewhere the browser test skips, naming the packages
and the install command (``system_deps.requires_chromium``), or fails under COHORT_REQUIRE_SYSTEM_DEPS=1.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
from system_deps import requires_chromium

from cohort.config import load_config
from cohort.monitoring.console import RunConsole
from cohort.report import (
    ReportError,
    format_number,
    load_run,
    render_html,
    write_report,
)
from cohort.report.page import prompt_text
from cohort.training.trainer import Trainer

STEPS = 6
HOSTILE_COMPLETION = (
    '<script>window.__cohort_pwned = "script";</script>'
    '<img src="x" onerror="window.__cohort_pwned = \'onerror\'">'
    "</td></tr></table><h1 id=\"injected\">not a heading</h1>"
)
ALL_PLOTS = {
    "plot-reward", "plot-reward-functions", "plot-accuracy", "plot-kl", "plot-entropy", "plot-clip-frac",
    "plot-completion-len", "plot-length-by-correctness", "plot-truncated-frac", "plot-frac-zero-std", "plot-step-time", "plot-tokens-per-s",
    "plot-loss", "plot-grad-norm", "plot-lr", "plot-eval-pass-maj",
}


def fmt(value: float) -> str:
    """How the page writes a number (4 significant digits), computed here independently."""
    return f"{value:.4g}"


# --- a real run directory -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Path:
    """A finished tiny GRPO run (KL on, two reward functions, eval before and after). Read-only."""
    root = tmp_path_factory.mktemp("report-run")
    task = root / "sums.jsonl"
    task.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n" for a in range(6) for b in range(6)))
    config = load_config(None, [
        f"model.path={tiny_llama_dir}",
        f"data.task={task}",
        "data.test_fraction=0.25",
        "data.eval_limit=6",
        "rollout.group_size=4",
        "rollout.prompts_per_step=3",
        "rollout.max_new_tokens=5",
        "algorithm.beta=0.04",
        "optim.lr=1e-3",
        "optim.micro_batch_size=12",
        f"train.steps={STEPS}",
        "train.save_every=0",
        "train.eval_samples=4",
        f"train.out_dir={root / 'run'}",
        "log.console=quiet",
        "log.completions_every=1",
        "log.completions_per_step=8",
        "reward.functions=[{name: 'reward_fixtures:digit_count'}, {name: exact_match, weight: 0.5}]",
    ])
    Trainer(config, RunConsole("quiet", STEPS)).train()
    return root / "run"


def copy_run(source: Path, destination: Path) -> Path:
    """A writable copy of a run directory's files (without the model weights)."""
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns("checkpoints", "final", "events.*"))
    return destination


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


@pytest.fixture(scope="module")
def hostile_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real run plus one sampled completion at the last step whose text is hostile HTML (and a
    chat-message prompt), as a model could emit."""
    run = copy_run(trained_run, tmp_path_factory.mktemp("hostile") / "run")
    with (run / "completions.jsonl").open("a") as handle:
        handle.write(json.dumps({
            "step": STEPS, "group": 0, "prompt": [{"role": "user", "content": "say <b>hi</b>"}],
            "completion": HOSTILE_COMPLETION, "reward": 0.5, "rewards": {"digit_count": 0.0, "exact_match": 1.0},
            "advantage": 1.25, "length": 5, "finish_reason": "stop",
        }) + "\n")
    return run


# --- the browser ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium via Selenium, offline, in a fresh profile (tests using it are marked
    ``requires_chromium``, so the binaries are there)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    profile = tempfile.mkdtemp(prefix="cohort-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        "--force-device-scale-factor=1", "--window-size=1400,1000", f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def show_whole_page(driver) -> None:
    """Make the viewport as tall as the page, so one screenshot holds it all with no relayout after."""
    width = driver.execute_script("return window.innerWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False,
    })


def screenshot(driver):
    """The viewport as an RGB PIL image, one CSS pixel per pixel."""
    from PIL import Image

    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")


@requires_chromium
def test_report_renders_in_chromium_with_the_runs_numbers(browser, hostile_run: Path) -> None:
    from PIL import Image, ImageChops, ImageStat
    from selenium.webdriver.common.by import By

    report = write_report(hostile_run)
    browser.get(report.as_uri())
    page = browser.execute_script(
        "return {ready: document.readyState, title: document.title,"
        " scripts: document.getElementsByTagName('script').length,"
        " resources: performance.getEntriesByType('resource').map(e => e.name),"
        " pwned: window.__cohort_pwned === undefined ? null : String(window.__cohort_pwned),"
        " injected: document.getElementById('injected') !== null}"
    )
    assert page["ready"] == "complete" and page["title"] == "cohort run: run"
    assert page["resources"] == [], "the report fetched something: it must be self-contained"

    # (a) every plot rendered: loaded, at the PNG's size, and its screen area is a picture
    show_whole_page(browser)
    images = browser.execute_script(
        "return Array.from(document.images).map(img => { const r = img.getBoundingClientRect(); return {"
        " id: img.id, alt: img.alt, src: img.src, complete: img.complete, naturalWidth: img.naturalWidth,"
        " naturalHeight: img.naturalHeight, x: r.left + window.scrollX + img.clientLeft,"
        " y: r.top + window.scrollY + img.clientTop, width: img.clientWidth, height: img.clientHeight}; })"
    )
    assert {image["id"] for image in images} == ALL_PLOTS
    page_image = screenshot(browser)
    for image in images:
        assert image["complete"] and image["alt"], image["id"]
        assert image["src"].startswith("data:image/png;base64,"), image["id"]
        data = base64.b64decode(image["src"].split(",", 1)[1])
        assert (image["naturalWidth"], image["naturalHeight"]) == png_size(data) != (0, 0), image["id"]
        assert (image["width"], image["height"]) == png_size(data), f"{image['id']} is scaled on the page"
        x, y = round(image["x"]), round(image["y"])
        shown = page_image.crop((x, y, x + image["width"], y + image["height"]))
        colours = shown.getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50, f"{image['id']}: its screen area is (nearly) one colour"
        original = Image.open(io.BytesIO(data)).convert("RGB")
        difference = ImageStat.Stat(ImageChops.difference(shown, original)).mean
        assert max(difference) < 2.0, f"{image['id']}: the screen differs from its PNG by {difference}"

    # (b) the numbers: headline, evaluation table, completions (latest step first)
    metrics = read_jsonl(hostile_run / "metrics.jsonl")
    before = json.loads((hostile_run / "eval_before.json").read_text())
    after = json.loads((hostile_run / "eval_after.json").read_text())
    text = lambda selector: browser.find_element(By.CSS_SELECTOR, selector).text
    assert text("#headline-reward") == fmt(metrics[-1]["reward/mean"])
    assert text("#headline-pass1") == f"{fmt(before['pass_at_k']['1'])} → {fmt(after['pass_at_k']['1'])}"
    assert f"{STEPS} / {STEPS} (all done)" in text("#run-info")
    for k in ("1", "2", "4"):
        for label, summary in (("before", before), ("after", after)):
            assert text(f'#eval-table tr[data-metric="pass@{k}"] td[data-col="{label}"]') == fmt(summary["pass_at_k"][k])
            assert text(f'#eval-table tr[data-metric="maj@{k}"] td[data-col="{label}"]') == fmt(summary["maj_at_k"][k])
    change = after["mean_reward"] - before["mean_reward"]
    assert text('#eval-table tr[data-metric="mean reward"] td[data-col="change"]') == f"{change:+.4g}"
    rows = browser.find_elements(By.CSS_SELECTOR, "#completions-table tr[data-step]")
    assert 0 < len(rows) <= 50
    steps = [int(row.get_attribute("data-step")) for row in rows]
    assert steps == sorted(steps, reverse=True) and steps[0] == STEPS
    latest = next(r for r in read_jsonl(hostile_run / "completions.jsonl") if r["step"] == STEPS)
    assert rows[0].find_element(By.CSS_SELECTOR, ".reward").text == fmt(latest["reward"])
    assert rows[0].find_element(By.CSS_SELECTOR, ".advantage").text == fmt(latest["advantage"])
    assert "preset: grpo" in text("#config-yaml") and "beta: 0.04" in text("#config-yaml")

    # (c) the hostile completion is text on the page, and nothing in it ran
    completions = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#completions-table .completion")]
    assert HOSTILE_COMPLETION in completions
    assert "user: say <b>hi</b>" in [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#completions-table .prompt")]
    assert page["pwned"] is None and page["scripts"] == 0 and not page["injected"]


# --- without a browser ----------------------------------------------------------------------------------


def plot_ids(html: str) -> set[str]:
    return set(re.findall(r'<img id="(plot-[\w-]+)"', html))


def test_write_report_is_atomic_and_honours_out_path(trained_run: Path, tmp_path: Path) -> None:
    run = copy_run(trained_run, tmp_path / "run")
    written = write_report(run)
    assert written == run / "report.html" and written.read_text().startswith("<!DOCTYPE html>")
    elsewhere = write_report(run, tmp_path / "out" / "r.html")
    assert elsewhere == tmp_path / "out" / "r.html" and elsewhere.is_file()
    leftovers = [p.name for p in [*run.iterdir(), *(tmp_path / "out").iterdir()] if p.name.endswith(".tmp")]
    assert leftovers == []
    assert plot_ids(written.read_text()) == ALL_PLOTS


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "does not exist"),
        (lambda d: d.mkdir(), "has no metrics.jsonl: not a cohort run directory, or no step has finished yet"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text("")), "metrics.jsonl is empty"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "loss": \n')),
         "metrics.jsonl line 2 is not valid JSON"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"step": 1}\n[1, 2]\n')),
         "metrics.jsonl line 2: expected a JSON object"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"loss": 1.0}\n')),
         "metrics.jsonl line 1: expected an integer 'step'"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"step": 1}\n'), (d / "eval_after.json").write_text("{oops")),
         "eval_after.json is not valid JSON"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"step": 1}\n'), (d / "config.yaml").write_text("a: [1\n")),
         "config.yaml line 2 is not valid YAML (expected ',' or ']', but got '<stream end>')"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_text('{"step": 1}\n'), (d / "completions.jsonl").write_text("{\n")),
         "completions.jsonl line 1 is not valid JSON"),
        (lambda d: (d.mkdir(), (d / "metrics.jsonl").write_bytes(b'{"step": 1, "note": "\xff"}\n')),
         "metrics.jsonl is not UTF-8 text (bad byte at offset 21)"),
    ],
    ids=["missing-dir", "no-metrics", "empty-metrics", "malformed-line", "not-an-object", "no-step", "bad-eval",
         "bad-config", "bad-completions", "not-utf8"],
)
def test_bad_run_directories_raise_one_clear_error(tmp_path: Path, setup, message: str) -> None:
    run = tmp_path / "runs" / "x"
    run.parent.mkdir()
    setup(run)
    with pytest.raises(ReportError, match="^" + re.escape(str(run))) as caught:
        write_report(run)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert not (run / "report.html").exists()


def test_a_run_without_kl_accuracy_or_eval_skips_them_and_says_so(trained_run: Path, tmp_path: Path) -> None:
    run = copy_run(trained_run, tmp_path / "run")
    metrics = read_jsonl(run / "metrics.jsonl")
    for record in metrics:
        record["kl"] = None  # no reference model: the trainer writes null
        del record["accuracy"], record["time/logprob_s"], record["tokens_per_s"]
        record.pop("completion_len/correct_mean", None), record.pop("completion_len/wrong_mean", None)
    write_jsonl(run / "metrics.jsonl", metrics)
    for name in ("eval_before.json", "eval_after.json", "completions.jsonl"):
        (run / name).unlink()
    html = write_report(run).read_text()
    assert plot_ids(html) == ALL_PLOTS - {
        "plot-kl", "plot-accuracy", "plot-length-by-correctness", "plot-tokens-per-s", "plot-eval-pass-maj"}
    assert '<code>kl</code> (recorded, but every value is null)' in html
    assert '<code>accuracy</code> (not recorded in this run)' in html
    assert 'id="no-eval"' in html and 'id="no-completions"' in html
    assert 'id="headline-pass1"' not in html
    assert 'data-series="time/rollout_s time/reward_s time/train_s time/step_s"' in html


def test_an_older_minimal_run_and_a_run_with_only_eval_after(tmp_path: Path) -> None:
    run = tmp_path / "old"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", [
        {"step": 1, "reward/mean": 0.25, "loss": None},
        {"step": 2, "reward/mean": None, "loss": float(3)},
        {"step": 3, "reward/mean": 0.75},
    ])
    (run / "eval_after.json").write_text(json.dumps({"pass_at_k": {"1": 0.5, "8": 0.875}, "greedy_accuracy": 0.5}))
    html = render_html(load_run(run))
    assert plot_ids(html) == {"plot-reward", "plot-loss", "plot-eval-pass-maj"}
    assert 'id="headline-reward">0.75<' in html and "<th>steps</th><td>3</td>" in html
    assert 'id="headline-pass1">— → 0.5<' in html
    assert '<tr data-metric="pass@8"><th>pass@8</th><td class="num" data-col="before">—</td>' in html
    assert 'data-col="after">0.875</td><td class="num" data-col="change">—</td>' in html
    assert 'id="no-config"' in html


def test_a_repeated_step_keeps_the_later_line(tmp_path: Path) -> None:
    run = tmp_path / "resumed"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", [{"step": 1, "reward/mean": 0.0}, {"step": 2, "reward/mean": 1.0},
                                         {"step": 2, "reward/mean": 2.0}])
    data = load_run(run)
    assert [m["step"] for m in data.metrics] == [1, 2] and data.metrics[-1]["reward/mean"] == 2.0


def test_completions_are_escaped_latest_first_and_capped(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_jsonl(run / "metrics.jsonl", [{"step": s, "reward/mean": 0.5} for s in (1, 2, 3)])
    records = [{"step": s, "group": g, "prompt": "p", "completion": f"s{s}g{g}", "reward": 1.0} for s in (1, 2, 3) for g in range(30)]
    records.append({"step": 3, "group": 30, "prompt": "p", "completion": "<script>alert(1)</script>&amp;"})
    write_jsonl(run / "completions.jsonl", records)
    data = load_run(run)
    assert len(data.completions) == 50
    assert [c["step"] for c in data.completions] == [3] * 31 + [2] * 19
    assert data.completions[0]["completion"] == "s3g0"  # file order within a step
    html = render_html(data)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;amp;" in html and "<script>" not in html


def test_prompt_text_and_number_format() -> None:
    assert prompt_text("2+2=") == "2+2="
    assert prompt_text([{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]) == (
        "system: be brief\nuser: 2+2?"
    )
    assert prompt_text({"odd": 1}) == '{"odd": 1}'
    assert [format_number(v) for v in (0.8333333, 12, 0.0, 1.5e-05, 123456.7, None, float("nan"), True, "x")] == [
        "0.8333", "12", "0", "1.5e-05", "1.235e+05", "—", "—", "—", "—",
    ]
    assert format_number(-0.125, signed=True) == "-0.125" and format_number(0, signed=True) == "+0"
