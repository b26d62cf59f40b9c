"""The sweep summary: configurations as mean +- std over seeds, frontier picked on validation."""

import json
import subprocess

import pytest

from kd.errors import PipelineError
from kd.evaluation import sweep
from kd.evaluation.sweep import experiment_runs, merge_runs, recorded_runs, summarise


def _run(name: str, seed: int, val: float, test: float, **student) -> dict:
    params = {"alpha": 0.5, "kernel_sizes": [3, 4, 5], "vocab": {"max_len": 512},
              "student": {"arch": "textcnn", "embed_dim": 128, "num_filters": 100,
                          "ngram_order": 0, "ngram_buckets": 8, "hidden_size": 8, "layers": 2,
                          "max_len": 256, **student},
              "train": {"seed": seed, "lr": 0.001}}
    metrics = {"student": {"val_accuracy": val, "accuracy": test, "ece": 0.01},
               "student_no_kd": {"val_accuracy": val - 0.02, "accuracy": test - 0.02},
               "kd_gain": 0.02}
    return {"name": name, "rev": f"rev-{name}", "data": {
        "rev": f"rev-{name}", "params": {"params.yaml": {"data": params}},
        "metrics": {"reports/metrics.json": {"data": metrics}}}}


def _exp_show(*runs) -> list:
    """The nesting of `dvc exp show --json`: commits, each with its experiments' revs."""
    return [{"rev": "workspace", "name": None, "data": {"rev": "workspace"}},
            {"rev": "abc", "name": "main", "data": {"rev": "abc"}, "experiments": [
                {"name": run["name"], "revs": [run]} for run in runs]}]


def test_configs_are_grouped_by_name_and_summarised_over_seeds():
    runs = experiment_runs(_exp_show(
        _run("base-s13", 13, 0.90, 0.89), _run("base-s14", 14, 0.92, 0.91),
        _run("ngram-s13", 13, 0.93, 0.92, ngram_order=3),
        _run("ngram-s14", 14, 0.93, 0.90, ngram_order=3),
        _run("wide-s13", 13, 0.95, 0.80, ngram_order=3),
        _run("wide-s14", 14, 0.95, 0.80, ngram_order=3), _run("untagged", 13, 0.99, 0.99),
        {**_run("failed-s13", 13, 0.99, 0.99), "error": {"msg": "Experiment run failed"}}))
    summary = summarise(runs)
    names = [entry["name"] for entry in summary["configs"]]
    # By mean validation accuracy; "untagged" and the failed run (its parent's metrics) left out.
    assert names == ["wide", "ngram", "base"]
    base = summary["configs"][2]
    assert base["seeds"] == [13, 14]
    assert base["student"]["test_accuracy"]["mean"] == pytest.approx(0.90)
    assert base["student"]["test_accuracy"]["std"] == pytest.approx(0.01414, abs=1e-4)
    assert base["student"]["kd_gain"]["runs"] == [0.02, 0.02]
    # One entry per shape, the best by validation: "wide" (same shape as "ngram") wins on val
    # although its test accuracy is the worst: the test split never selects.
    assert [entry["name"] for entry in summary["frontier"]] == ["wide", "base"]


def test_runs_of_one_config_must_differ_in_seed_only():
    with pytest.raises(PipelineError, match="base-s14 has other params"):
        summarise(experiment_runs(_exp_show(_run("base-s13", 13, 0.9, 0.9),
                                            _run("base-s14", 14, 0.9, 0.9, embed_dim=64))))


def test_a_key_added_since_a_run_takes_its_default():
    old = _run("base-s13", 13, 0.9, 0.9)
    new = _run("base-s14", 14, 0.9, 0.9)
    new["data"]["params"]["params.yaml"]["data"]["train"]["ngram_lr"] = 0.0  # the default
    [config] = summarise(experiment_runs(_exp_show(old, new)))["configs"]
    assert config["seeds"] == [13, 14]


def test_a_run_older_than_a_key_takes_the_value_it_had_then():
    # Made before vocab.max_len, student.ngram_order and train.ngram_lr existed: it read 512
    # tokens and had no n-gram branch, whatever params.yaml says today.
    old = _run("old-s13", 13, 0.9, 0.9)
    params = old["data"]["params"]["params.yaml"]["data"]
    del params["vocab"], params["student"]["ngram_order"]
    [config] = summarise(experiment_runs(_exp_show(old)))["configs"]
    assert config["params"]["vocab"]["max_len"] == sweep.LEGACY_DEFAULTS["vocab"]["max_len"]
    assert config["params"]["student"]["ngram_order"] == 0
    assert config["all_params"]["train"]["ngram_lr"] == 0.0
    assert sweep.with_legacy_defaults({"vocab": {"max_len": 4096}})["vocab"]["max_len"] == 4096


def test_more_seeds_beat_one_lucky_seed_on_the_frontier():
    runs = [_run(f"three-s{seed}", seed, 0.92, 0.92, ngram_order=3) for seed in (13, 14, 15)]
    runs += [_run("lucky-s13", 13, 0.95, 0.93, ngram_order=3),
             _run("lstm-s13", 13, 0.90, 0.90, arch="bilstm")]
    runs += [_run(f"ens-s{seed}", seed, 0.93, 0.93, ngram_order=3, members=3)
             for seed in (13, 14, 15)]
    summary = summarise(experiment_runs(_exp_show(*runs)))
    assert [entry["name"] for entry in summary["configs"]] == ["lucky", "ens", "three", "lstm"]
    # "lucky" is the same shape as "three" but has one seed; "lstm" is alone in its shape; an
    # ensemble of three of "three"'s students is a shape of its own (three times the work).
    assert [entry["name"] for entry in summary["frontier"]] == ["ens", "three", "lstm"]


def test_a_summary_gives_back_the_runs_it_was_made_from():
    runs = experiment_runs(_exp_show(_run("base-s13", 13, 0.90, 0.89),
                                     _run("base-s14", 14, 0.92, 0.91),
                                     _run("lstm-s13", 13, 0.88, 0.87, arch="bilstm")))
    summary = summarise(runs)
    rebuilt = recorded_runs(summary)
    assert sorted(run["name"] for run in rebuilt) == ["base-s13", "base-s14", "lstm-s13"]
    assert summarise(rebuilt) == summary
    # A found run replaces its recorded namesake; a new one joins its configuration.
    found = experiment_runs(_exp_show(_run("base-s14", 14, 0.94, 0.93),
                                      _run("base-s15", 15, 0.96, 0.95)))
    [base, _] = summarise(merge_runs(rebuilt, found))["configs"]
    assert base["seeds"] == [13, 14, 15]
    assert base["student"]["val_accuracy"]["runs"] == [0.90, 0.94, 0.96]


def _write_sweep(tmp_path, monkeypatch, runs) -> None:
    """Run `sweep.main` against a fake `dvc exp show` listing these runs."""
    def fake_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=json.dumps(_exp_show(*runs)),
                                           stderr="")
    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    sweep.update_summary(tmp_path / "sweep.json")


def test_a_clone_without_the_experiments_keeps_their_runs(tmp_path, monkeypatch):
    _write_sweep(tmp_path, monkeypatch, [_run("base-s13", 13, 0.90, 0.89),
                                         _run("base-s14", 14, 0.92, 0.91)])
    committed = (tmp_path / "sweep.json").read_text()
    _write_sweep(tmp_path, monkeypatch, [])  # a clone: no experiments at all
    assert (tmp_path / "sweep.json").read_text() == committed
    _write_sweep(tmp_path, monkeypatch, [_run("base-s15", 15, 0.94, 0.93)])
    [base] = json.loads((tmp_path / "sweep.json").read_text())["configs"]
    assert base["experiments"] == ["base-s13", "base-s14", "base-s15"]
    assert base["student"]["test_accuracy"]["mean"] == pytest.approx(0.91)


@pytest.mark.parametrize("content", ["{not json", '{"configs": [{"name": "base"}]}'])
def test_a_file_that_is_not_a_summary_stops_and_is_kept(tmp_path, monkeypatch, content):
    (tmp_path / "sweep.json").write_text(content)
    with pytest.raises(PipelineError, match="sweep.json is not a summary written by sweep.py"):
        _write_sweep(tmp_path, monkeypatch, [_run("base-s13", 13, 0.90, 0.89)])
    assert (tmp_path / "sweep.json").read_text() == content
