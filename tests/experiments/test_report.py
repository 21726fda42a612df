"""The report, built from a hand-made experiment folder whose numbers are known: the answers it derives, the
files it writes, and the HTML being one self-contained file that a browser renders."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess

import pytest
from PIL import Image

from tests.experiments.conftest import fake_experiment
from trainwell.cli import main
from trainwell.errors import RunError
from trainwell.experiments.report import SECTIONS, Section, Text, build_report
from trainwell.experiments.report.answers import best_answer, compare, mc_answer
from trainwell.experiments.report.collect import load_experiment_runs
from trainwell.experiments.report.document import Table, inline, render_markdown


def variants_of(root):
    return {v.name: v for v in load_experiment_runs(root)[1]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The hand-made experiment with its report built once, for the tests that only read it."""
    root = fake_experiment(tmp_path_factory.mktemp("report") / "e")
    build_report(root)
    return root


def test_compare_derives_accuracy_convergence_and_cost(tmp_path):
    v = variants_of(fake_experiment(tmp_path / "e"))
    answer = compare(v["fast"], v["base"])
    assert answer.question == "Is *fast* faster?"
    # fast: 80 % vs 50 %; one seed each, so the noise is the sampling error of 1,000 validation images
    noise = 2 * math.sqrt(0.8 * 0.2 / 1000 + 0.5 * 0.5 / 1000)
    assert f"noise level ±{100 * noise:.1f} points" in answer.evidence[0]
    # fast reaches 50 % at epoch 2 (0.3 + 2·0.1) after 2·3 s; base needs its 10 epochs of 2 s
    assert answer.verdict == (
        "More accurate (+30.0 points), converges in fewer epochs (2 vs 10) and less time "
        "(6.0 s vs 20 s), and 1.5× the time per epoch"
    )
    assert answer.tone == "good"
    assert any(
        "first reached base's final validation accuracy (50.0 %) at epoch 2, after 6.0 s; base took 10 epochs "
        "and 20 s" in line
        for line in answer.evidence
    )
    same = compare(v["mc"], v["base"])  # 50 % vs 50 %
    # mc reaches 50 % at epoch 8 of 2.5 s (20 s), base at epoch 10 of 2 s (20 s)
    assert same.verdict.startswith(
        "About as accurate (+0.0 points, within the noise), converges in fewer epochs "
        "(8 vs 10), in about the same time (20 s)"
    )
    assert same.tone == "neutral"
    reverse = compare(v["base"], v["fast"])
    assert reverse.verdict.startswith("Less accurate (-30.0 points), never reaches fast's accuracy")
    assert reverse.tone == "bad"


def test_with_several_seeds_the_noise_comes_from_their_spread(tmp_path):
    v = variants_of(fake_experiment(tmp_path / "e", seeds=2))
    answer = compare(v["fast"], v["base"])
    fast = [0.8, 0.81]  # 0.3 + k·0.01 + 5·0.1
    base = [0.5, 0.51]
    se = math.sqrt(statistics.stdev(fast) ** 2 / 2 + statistics.stdev(base) ** 2 / 2)
    assert f"±{100 * 2 * se:.1f} points, from over 2 and 2 seeds" in answer.evidence[0]


def test_mc_answer_uses_the_paired_changes(tmp_path):
    v = variants_of(fake_experiment(tmp_path / "e"))
    answer = mc_answer(v["mc"])
    # 50 turned right, 20 turned wrong: net 30 > 2·sqrt(70) = 16.7, so the gain is real
    assert answer.verdict == "Yes: +3.0 points accuracy, log loss lower (1.400 vs 1.500)"
    assert "±17 images" in answer.evidence[0]


def test_best_answer_ranks_by_validation_accuracy(tmp_path):
    v = variants_of(fake_experiment(tmp_path / "e"))
    answer = best_answer(list(v.values()))
    assert answer.verdict == "fast, at 80.0 %"
    assert answer.evidence[0] == (
        "Ranked by validation accuracy: fast 80.0 %, base 50.0 %, mc 50.0 % (MC dropout 53.0 %)."
    )
    assert "its test accuracy, measured once, is 79.0 %" in answer.evidence[-1]


def test_build_report_writes_every_file_with_the_runs_numbers(built):
    root = built
    results = json.loads((root / "results.json").read_text())
    by_name = {r["name"]: r for r in results["variants"]}
    assert [r["name"] for r in results["variants"]] == ["base", "fast", "mc"]
    for name, expected in {"base": 0.5, "fast": 0.8, "mc": 0.5}.items():
        metrics = json.loads((root / name / "metrics.json").read_text())
        assert by_name[name]["val_accuracy"] == pytest.approx(expected) == metrics["val_accuracy"]
        for key in (
            "test_accuracy",
            "best_epoch",
            "epochs_run",
            "seconds_per_epoch",
            "train_seconds",
            "learning_rate",
        ):
            assert by_name[name][key] == metrics[key]
    assert by_name["mc"]["mc_accuracy"] == pytest.approx(0.53)
    assert "mc_accuracy" not in by_name["base"]
    for png in ("summary", "accuracy", "loss", "lr_schedule", "lr_finder", "mc_dropout_mc"):
        with Image.open(root / "figures" / f"{png}.png") as im:
            assert im.format == "PNG" and im.width > 800
    md = (root / "report.md").read_text()
    assert "| variant | val acc. | test acc. | MC acc. |" in md
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (root / link).is_file()


def test_html_is_one_self_contained_file(built):
    text = (built / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', text)
    assert len(images) == 6
    for src in images:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
            im.verify()
    assert not re.search(r"<script|<link|(src|href)=\"https?:", text)
    assert "The baseline &lt;b&gt;net&lt;/b&gt;." in text  # descriptions are text, never markup
    assert '<table id="results">' in text
    assert "Is <em>fast</em> faster?" in text


def test_a_section_is_added_with_one_line(tmp_path):
    root = fake_experiment(tmp_path / "e")

    def extra(experiment_dir, variants):
        return Section("Extra", [Text(f"{len(variants)} variants in {experiment_dir.name}")])

    def nothing(experiment_dir, variants):
        return None

    build_report(root, sections=[*SECTIONS, extra, nothing])
    text = (root / "report.html").read_text()
    assert '<section id="extra"><h2>Extra</h2><p>3 variants in e</p></section>' in text


def test_markdown_and_inline_formatting():
    assert inline("a **b** *c* 2*3*4 <x>") == "a <strong>b</strong> <em>c</em> 2*3*4 &lt;x&gt;"
    md = render_markdown(
        "T", "", [Section("S", [Table(["a", "b"], [["x|y", "1"]])])], root=__import__("pathlib").Path(".")
    )
    assert "| a | b |\n|:---|---:|\n| x\\|y | 1 |" in md


def test_report_command_rebuilds_and_refuses_other_folders(tmp_path, capsys):
    root = fake_experiment(tmp_path / "e")
    assert main(["report", str(root)]) == 0
    assert (root / "report.html").is_file() and (root / "results.json").is_file()
    assert str(root / "report.html") in capsys.readouterr().out
    assert main(["report", str(tmp_path)]) == 2
    assert "not an experiment folder" in capsys.readouterr().err
    with pytest.raises(RunError, match="not an experiment folder"):
        build_report(tmp_path)


def test_a_failed_and_an_unrun_variant_are_reported(tmp_path):
    root = fake_experiment(tmp_path / "e")
    (root / "fast" / "metrics.json").unlink()
    record = json.loads((root / "experiment.json").read_text())
    record["runs"]["fast"].update(status="failed", error="TrainingError: the loss became nan")
    del record["runs"]["mc"]
    (root / "experiment.json").write_text(json.dumps(record))
    build_report(root)
    results = {r["name"]: r for r in json.loads((root / "results.json").read_text())["variants"]}
    assert results["fast"]["status"] == "failed" and results["fast"]["errors"] == [
        "fast: TrainingError: the loss became nan"
    ]
    assert results["mc"]["status"] == "not run" and results["mc"]["val_accuracy"] is None
    text = (root / "report.html").read_text()
    assert "the loss became nan" in text and "not run" in text


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Added to a copy of the report (the report itself has no script): once everything has loaded, record each
# image's decoded width and whether the results table has rows, where --dump-dom will print them.
PROBE = """<script>window.addEventListener("load", () => {
  const widths = [...document.images].map(i => i.complete ? i.naturalWidth : -1);
  const rows = document.querySelectorAll("table#results tbody tr").length;
  document.body.setAttribute("data-probe", JSON.stringify({widths, rows}));
});</script>"""


@pytest.mark.integration
@pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium (Debian package `chromium`; scripts/setup-system.sh installs it)"
)
def test_report_renders_in_headless_chromium(built, tmp_path):
    html_text = (built / "report.html").read_text()
    probe = tmp_path / "probe.html"
    probe.write_text(html_text.replace("</body>", PROBE + "</body>"))
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'data-probe="([^"]+)"', done.stdout)
    assert found, "the probe did not run: " + done.stdout[:500]
    probe_result = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(probe_result["widths"]) == 6 and all(w > 0 for w in probe_result["widths"]), probe_result
    assert probe_result["rows"] == 3
