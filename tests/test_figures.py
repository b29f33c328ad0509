"""Every figure of the README's performance table comes from a committed result file."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import report  # noqa: E402


def test_readme_figures_are_the_committed_results():
    """The generated blocks of README.md equal what benchmarks/report.py renders from the
    results: a figure typed by hand, or a result rerun without `make bench`'s report, fails."""
    text = (ROOT / "README.md").read_text()
    assert report.render(text) == text, "README.md's figures differ from benchmarks/results: run python benchmarks/report.py"


def test_check_mode_fails_on_a_hand_edited_figure(tmp_path, monkeypatch):
    """The --check mode can fail: a README whose table was edited by hand is refused."""
    text = (ROOT / "README.md").read_text()
    em = json.loads((ROOT / "benchmarks/results/em.json").read_text())
    shown = f"**{em['speedup_vs_sklearn']:,.1f}x faster**"
    assert shown in text
    fake = tmp_path / "README.md"
    fake.write_text(text.replace(shown, "**99.9x faster**"))
    monkeypatch.setattr(report, "README", fake)
    assert report.main(["--check"]) == 1
    fake.write_text(text)
    assert report.main(["--check"]) == 0


def test_grading_doc_figures_are_the_committed_results():
    """docs/grading.md's grading-scale figures equal what benchmarks/report.py renders from
    benchmarks/results/grading.json."""
    text = report.GRADING_DOC.read_text()
    assert report.render(text, report.GRADING_DOC_BLOCKS) == text, (
        "docs/grading.md's figures differ from benchmarks/results: run python benchmarks/report.py")


def test_check_mode_fails_on_a_hand_edited_doc_figure(tmp_path, monkeypatch):
    gr = json.loads((ROOT / "benchmarks/results/grading.json").read_text())
    text = report.GRADING_DOC.read_text()
    shown = f"**{gr['speedup']:,.2f}x**"
    assert shown in text
    fake = tmp_path / "grading.md"
    fake.write_text(text.replace(shown, "**9.99x**"))
    monkeypatch.setattr(report, "GRADING_DOC", fake)
    assert report.main(["--check"]) == 1
    fake.write_text(text)
    assert report.main(["--check"]) == 0


def test_grading_figures_come_from_a_real_assignment():
    """The grading benchmark graded one of the course's assignments (not a toy), the class it
    says, every submission of it, and its resume was measured to a recorded grade."""
    from gmmcourse.grading.assignments import ASSIGNMENTS

    gr = json.loads((ROOT / "benchmarks/results/grading.json").read_text())
    assert gr["assignment"] in ASSIGNMENTS
    assert sum(k["n"] for k in gr["parallel"]["per_kind"].values()) == gr["class_size"]
    assert gr["parallel"]["summary"].startswith(f"graded {gr['class_size']} ")
    assert gr["no_change_rerun"]["summary"].startswith("graded 0 ")
    assert gr["resume_killed"]["killed"] and gr["resume"]["first_recorded_s"] > 0
    # the class is what it says: the solutions earned every automatic point, the blank none
    full = sum(p.points for p in ASSIGNMENTS[gr["assignment"]].parts)
    kinds = gr["parallel"]["per_kind"]
    assert kinds["correct"]["score_min"] == full and kinds["blank"]["score_max"] == 0


# Result files written before their benchmarks recorded the machine, date and commit: the
# table says "not recorded" for them. Rerunning the benchmark (make bench) removes a file
# from this list; a new file is never allowed on it.
NOT_RECORDED: set[str] = set()  # every result file now names its run


def test_every_result_names_its_run():
    """Each result file the table cites names its machine and date (benchmarks/common.write
    adds them and the commit), except the listed old ones, which must stay shown as such."""
    cited = {f for *_, f in report.performance_rows()}
    for f in cited:
        r = json.loads((ROOT / "benchmarks/results" / f).read_text())
        named = "machine" in r and ("measured" in r or "date" in r)
        if f in NOT_RECORDED:
            assert "not recorded" in report.when(r) + report.machine(r), f
        else:
            assert named, f"{f} does not name its machine and date: rerun its benchmark"


def test_benchmarks_write_the_commit():
    out = subprocess.run([sys.executable, "-c", "import common; print(common.commit())"], cwd=ROOT / "benchmarks",
                         capture_output=True, text=True, check=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert out.startswith(head)
