"""The documentation: the README is an entry point, and every generated table matches the
committed reports (`tools/render_docs.py`)."""

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from helpers import REPO as ROOT

_spec = importlib.util.spec_from_file_location("render_docs", ROOT / "tools" / "render_docs.py")
render_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_docs)

# Written by another tool, which may land after the link to it.
_EXTERNAL_PAGES = {"docs/params.md"}


def test_committed_tables_match_the_committed_reports():
    stale = render_docs.stale(ROOT)
    assert stale == [], f"generated blocks are stale in {stale}: run python tools/render_docs.py"


def test_readme_is_an_entry_point():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; depth belongs in docs/"
    quick_start = lines.index("## Quick start")  # ValueError if the heading is gone
    assert quick_start < 80, f"the Quick start starts at line {quick_start + 1}, past 80"
    end = next((i for i in range(quick_start + 1, len(lines)) if lines[i].startswith("## ")),
               len(lines))
    section = "\n".join(lines[quick_start:end])
    for command in ("pip install", "dvc pull", "dvc repro", "dvc exp run -S alpha=0.7",
                    "dvc metrics diff", "mlflow ui", "pytest"):
        assert command in section, f"the README's Quick start lost `{command}`"
    assert "<!-- headline:begin -->" in "\n".join(lines[:quick_start]), \
        "the README's generated results table is not above the Quick start"


def test_links_between_pages_resolve():
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            path = (page.parent / target).resolve()
            if path.relative_to(ROOT).as_posix() in _EXTERNAL_PAGES:
                continue
            assert path.is_file(), f"{page.relative_to(ROOT)} links to missing {target}"


# ---------------------------------------------------------------------------- the renderer

def _config(name: str, val: float, test: float, seeds=(13, 14, 15), **student) -> dict:
    params = {"kernel_sizes": student.pop("kernel_sizes", [3, 4, 5]),
              "student": {"arch": "textcnn", "embed_dim": 128, "num_filters": 100,
                          "ngram_order": 3, "hidden_size": 128, "layers": 2, "max_len": 256,
                          "members": 1, **student},
              "vocab": {"max_len": 4096}}
    stat = {"mean": test, "std": 0.001 if len(seeds) > 1 else None, "runs": [test] * len(seeds)}
    return {"name": name, "seeds": list(seeds), "experiments": [f"{name}-s{s}" for s in seeds],
            "params": params, "all_params": {"alpha": 0.5, **params},
            "student": {"val_accuracy": {**stat, "mean": val}, "test_accuracy": stat,
                        "test_ece": stat, "no_kd_test_accuracy": {**stat, "mean": test - 0.02},
                        "kd_gain": {**stat, "mean": 0.02}}}


def _timed(speed: float, form: str = "bf16", **extra) -> dict:
    return {"reviews_per_s": speed, "p50_ms": 1.0, "p99_ms": 2.0, "size_mb": 10.0, "form": form,
            **extra}


def _project(root: Path) -> Path:
    """A tiny repository: params, the five reports, a README and a docs page with blocks."""
    (root / "reports").mkdir(parents=True)
    (root / "docs").mkdir()
    (root / "params.yaml").write_text("alpha: 0.5\nkernel_sizes: [3, 4, 5]\n")
    configs = [_config("len4096", 0.94, 0.928),
               _config("ngram", 0.92, 0.91, seeds=(13,), kernel_sizes=[]),
               _config("e64f64k3", 0.93, 0.92, kernel_sizes=[3], embed_dim=64, num_filters=64)]
    reports = {
        "metrics": {"test_reviews": 100, "teacher": {"accuracy": 0.93},
                    "student": {"accuracy": 0.928, "agreement_with_teacher": 0.95},
                    "student_no_kd": {"accuracy": 0.907}, "kd_gain": 0.021},
        "benchmark": {"reviews": 100, "threads": 2, "batch_size": 64, "device": "cpu",
                      "teacher": _timed(50.0, "PyTorch, bf16"),
                      "teacher_int8": _timed(120.0, "int8", sample_accuracy=0.925),
                      "hashed_lr": _timed(3000.0, "scikit-learn"),
                      "student": _timed(1000.0, forms={"onnx": _timed(900.0)}),
                      "ngram": _timed(5000.0, "onnx"), "e64f64k3": _timed(2000.0),
                      "api": {"requests_per_s": 400.0, "p50_ms": 30.0, "p99_ms": 60.0,
                              "errors": 0, "clients": 16, "requests": 1600}},
        "sweep": {"selection": "mean validation accuracy", "configs": configs,
                  "frontier": configs},
        "export": {"test_reviews": 100, "max_prob_diff": {"onnx": 3e-7},
                   "accuracy": {"eager": 0.928, "onnx": 0.928}, "size_mb": {"onnx": 20.6}},
        "frontier": [],
    }
    for name, content in reports.items():
        (root / "reports" / f"{name}.json").write_text(json.dumps(content))
    blocks = "".join(f"<!-- {name}:begin -->\n<!-- {name}:end -->\n\n"
                     for name in render_docs.BLOCKS)
    (root / "README.md").write_text("# tiny\n\n<!-- headline:begin -->\n<!-- headline:end -->\n")
    (root / "docs" / "all.md").write_text(blocks)
    return root


def test_every_row_renders_whatever_its_name(tmp_path):
    root = _project(tmp_path)
    assert render_docs.main(["--root", str(root)]) == 0
    page = (root / "docs" / "all.md").read_text()
    frontier = page.split("<!-- frontier:begin -->")[1].split("<!-- frontier:end -->")[0]
    for name in ("teacher", "teacher_int8", "hashed_lr", "student", "ngram", "e64f64k3"):
        assert re.search(rf"^\| (\*\*)?{name}(\*\*)? ", frontier, re.MULTILINE), name
    # a row with no full-split accuracy says where its number comes from
    assert "92.50% (benchmark sample)" in frontier
    assert "n-gram branch alone (1-3-grams, no word vectors)" in page  # kernel_sizes: []
    assert "TextCNN 64 filters × widths 3, 64-d" in page
    # hashed_lr: 3,000 reviews/s against the teacher's 50, and against its fastest form's 120
    assert re.search(r"^\| hashed_lr .* \| 60\.0x \| 25\.0x \|$", frontier, re.MULTILINE)
    sweep = page.split("<!-- sweep:begin -->")[1]
    assert "`kernel_sizes=[]`" in sweep  # the -S that makes the config from params.yaml
    assert "+2.10 points" in (root / "README.md").read_text()  # kd_gain of the headline
    # the benchmark's own full-split accuracy (reports/frontier.json) beats its sample
    (root / "reports" / "frontier.json").write_text(json.dumps(
        [{"model": "teacher_int8", "accuracy": 0.9281, "accuracy_std": None}]))
    render_docs.main(["--root", str(root)])
    assert re.search(r"^\| teacher_int8 .* \| 92\.81% \|", (root / "docs" / "all.md").read_text(),
                     re.MULTILINE)


def test_check_names_the_stale_file_and_leaves_it(tmp_path, capsys):
    root = _project(tmp_path)
    render_docs.main(["--root", str(root)])
    assert render_docs.main(["--root", str(root), "--check"]) == 0
    before = (root / "README.md").read_text()
    benchmark = json.loads((root / "reports" / "benchmark.json").read_text())
    benchmark["student"]["reviews_per_s"] = 1234.0
    (root / "reports" / "benchmark.json").write_text(json.dumps(benchmark))
    assert render_docs.main(["--root", str(root), "--check"]) == 1
    err = capsys.readouterr().err
    assert "README.md" in err and "docs/all.md" in err
    assert (root / "README.md").read_text() == before  # --check changes nothing
    render_docs.main(["--root", str(root)])
    assert "1,234" in (root / "README.md").read_text()


def test_bad_documents_and_reports_stop_with_the_file_named(tmp_path, capsys):
    root = _project(tmp_path)
    (root / "docs" / "typo.md").write_text("<!-- frontiers:begin -->\n<!-- frontiers:end -->\n")
    assert render_docs.main(["--root", str(root), "--check"]) == 2
    assert "docs/typo.md: unknown block 'frontiers'" in capsys.readouterr().err
    (root / "docs" / "typo.md").write_text("<!-- sweep:begin -->\nno end\n")
    assert render_docs.main(["--root", str(root)]) == 2
    assert "docs/typo.md: unpaired block markers" in capsys.readouterr().err
    shutil.rmtree(root / "docs")
    (root / "reports" / "sweep.json").unlink()
    with pytest.raises(render_docs.DocsError, match="reports/sweep.json not found"):
        render_docs.render_all(root)


def test_the_default_rule_picks_the_fastest_single_student_within_the_margin():
    sweep = {"configs": [
        _config("best", 0.9400, 0.9280),
        _config("close", 0.9372, 0.9240, kernel_sizes=[3, 5], embed_dim=64, num_filters=64),
        _config("cheap", 0.9360, 0.9250, kernel_sizes=[3], embed_dim=64, num_filters=64),
        _config("lucky", 0.9390, 0.9300, seeds=(13,), kernel_sizes=[]),  # one seed: not ranked
        _config("ens", 0.9410, 0.9300, members=3)]}  # an ensemble is no single student
    benchmark = {"batch_size": 64, "best": _timed(1000.0), "close": _timed(3000.0),
                 "cheap": _timed(9000.0), "lucky": _timed(20000.0), "ens": _timed(400.0)}
    text = render_docs.block_default({"sweep": sweep, "benchmark": benchmark})
    assert "The rule picks **close**." in text  # cheap is 0.4 point under best: out
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()
            if line.startswith("| ")}
    assert set(rows) == {"configuration", "---", "best", "close", "cheap"}
    assert "| no |" in rows["cheap"] and "| yes |" in rows["close"]
    benchmark.pop("close")  # not timed: the next fastest within the margin
    assert "The rule picks **best**." in render_docs.block_default(
        {"sweep": sweep, "benchmark": benchmark})
