"""Summarise the DVC experiments of a sweep: every configuration as mean +- standard deviation
over its seeds, and, for each student arch and shape, the configuration with the best mean
validation accuracy among those with the most seeds, up to 3 (the frontier the benchmark stage
times). Never selects on the test split.

Experiments are grouped by name: `<config>-s<seed>` (run them with
`dvc exp run -n <config>-s<seed> -S train.seed=<seed> ...`). The runs of one configuration must
differ in `train.seed` only.

DVC keeps experiments as local git refs, so a clone has none of the runs behind the committed
summary. The summary therefore accumulates: the runs it records are kept, and an experiment
found here is added (or replaces the recorded run of the same name).

    python tools/sweep.py       # update_summary: `dvc exp show --json -A` into reports/sweep.json
"""

import json
import re
import subprocess
from pathlib import Path

import numpy as np

from kd.errors import PipelineError
from kd.params import parse_params

_RUN_NAME = re.compile(r"^(?P<config>.+)-s(?P<seed>\d+)$")
# What a student's speed and size depend on: the frontier keeps one configuration per value.
_SHAPE_KEYS = ("arch", "embed_dim", "num_filters", "ngram_order", "ngram_buckets", "hidden_size",
               "layers", "max_len", "members")
_FULL_SEEDS = 3  # seeds a configuration needs to be ranked on its mean alone
# A key added to params.yaml after a run was made takes, in that run, the value it had in effect
# then: the behaviour shipped before the key existed. For most keys that is today's default (the
# value in params.yaml); these differ, and so do the grids' floats (the summary's bytes). A new
# key whose params.yaml value changes what an older run did needs its old value here.
LEGACY_DEFAULTS = {
    "vocab": {"max_len": 512},  # 4096 since 8df60f2
    "student": {"ngram_order": 0},  # the n-gram branch came in at 3 (8caa55c)
    "train": {"ngram_lr": 0.0},  # 0 = train.lr, before the branch had its own rate
    "baselines": {"tfidf_c_grid": [1.0, 4.0, 16.0], "nb_c_grid": [0.1, 0.3, 1.0]},
}
_REPORTED = {  # (metrics.json path, name in the summary)
    ("student", "val_accuracy"): "val_accuracy",
    ("student", "accuracy"): "test_accuracy",
    ("student", "ece"): "test_ece",
    ("student_no_kd", "val_accuracy"): "no_kd_val_accuracy",
    ("student_no_kd", "accuracy"): "no_kd_test_accuracy",
    ("kd_gain",): "kd_gain",
}


def experiment_runs(exp_show: list) -> list[dict]:
    """Named experiment runs with their params and metrics, from `dvc exp show --json` output."""
    runs = []

    def visit(node):
        if isinstance(node, list):
            for item in node:
                visit(item)
        elif isinstance(node, dict):
            data = node.get("data") or {}
            params = (data.get("params") or {}).get("params.yaml", {}).get("data")
            metrics = (data.get("metrics") or {}).get("reports/metrics.json", {}).get("data")
            # A failed or running experiment lists its parent's metrics: left out.
            finished = data.get("rev") != "workspace" and not node.get("error")
            if node.get("name") and params and metrics and finished:
                runs.append({"name": node["name"], "rev": data.get("rev"), "params": params,
                             "metrics": metrics})
            for value in node.values():
                if isinstance(value, (list, dict)):
                    visit(value)

    visit(exp_show)
    unique = {run["rev"]: run for run in runs}  # an experiment can be listed twice
    return sorted(unique.values(), key=lambda run: run["name"])


def recorded_runs(summary: dict) -> list[dict]:
    """The runs a summary was made from, rebuilt from its configurations (`summarise`'s output).

    Each run gets its configuration's params with its own `train.seed`, and its own value of
    every reported metric; `summarise` of these runs gives the summary back.
    """
    runs = []
    for entry in summary.get("configs", []):
        for index, (name, seed) in enumerate(zip(entry["experiments"], entry["seeds"],
                                                 strict=True)):
            params = entry["all_params"]
            metrics: dict = {}
            for path, reported in _REPORTED.items():
                if reported in entry["student"]:
                    node = metrics
                    for key in path[:-1]:
                        node = node.setdefault(key, {})
                    node[path[-1]] = entry["student"][reported]["runs"][index]
            runs.append({"name": name, "rev": None, "metrics": metrics,
                         "params": {**params, "train": {**params["train"], "seed": seed}}})
    return runs


def merge_runs(recorded: list[dict], found: list[dict]) -> list[dict]:
    """The recorded runs with those found here added; a found run replaces its namesake."""
    by_name = {run["name"]: run for run in recorded}
    by_name.update({run["name"]: run for run in found})
    return sorted(by_name.values(), key=lambda run: run["name"])


def with_legacy_defaults(params: dict) -> dict:
    """A run's params with `LEGACY_DEFAULTS` filled in where the run predates the key."""
    filled = dict(params)
    for section, legacy in LEGACY_DEFAULTS.items():
        if isinstance(filled.get(section, {}), dict):  # else parse_params names the bad section
            filled[section] = {**legacy, **filled.get(section, {})}
    return filled


def _without_seed(params: dict) -> dict:
    return {**params, "train": {k: v for k, v in params["train"].items() if k != "seed"}}


def _stats(values: list[float]) -> dict:
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "runs": [float(value) for value in values]}


def _metric(metrics: dict, path: tuple[str, ...]) -> float | None:
    for key in path:
        metrics = metrics.get(key) if isinstance(metrics, dict) else None
    return metrics


def summarise(runs: list[dict]) -> dict:
    """Group runs into configurations (by name) and summarise each; pick the frontier.

    Raises:
        PipelineError: two runs of one configuration differ in more than `train.seed`.
    """
    configs: dict[str, dict] = {}
    for run in runs:
        match = _RUN_NAME.match(run["name"])
        if not match:
            continue
        # Every key, with the value it had in effect when the run was made.
        run = {**run, "params": parse_params(with_legacy_defaults(run["params"])).to_dict()}
        config = configs.setdefault(match["config"], {"name": match["config"], "runs": [],
                                                      "params": _without_seed(run["params"])})
        if _without_seed(run["params"]) != config["params"]:
            raise PipelineError(f"experiment {run['name']} has other params than the other runs "
                                f"of {match['config']} (beyond train.seed): rename one of them")
        config["runs"].append(run)
    summary = []
    for config in configs.values():
        runs_of = sorted(config["runs"], key=lambda run: run["params"]["train"]["seed"])
        entry = {"name": config["name"], "seeds": [run["params"]["train"]["seed"]
                                                   for run in runs_of],
                 "experiments": [run["name"] for run in runs_of],
                 "params": {key: config["params"][key] for key in ("kernel_sizes", "student",
                                                                    "vocab")},
                 "all_params": config["params"], "student": {}}
        for path, name in _REPORTED.items():
            values = [_metric(run["metrics"], path) for run in runs_of]
            if all(value is not None for value in values):
                entry["student"][name] = _stats(values)
        summary.append(entry)
    summary.sort(key=lambda entry: -entry["student"]["val_accuracy"]["mean"])
    frontier: dict[tuple, dict] = {}
    # Per shape, a configuration with more seeds (counted up to _FULL_SEEDS) beats one with
    # fewer, then the best mean validation accuracy wins: one lucky seed cannot outrank a
    # configuration measured over three.
    for entry in sorted(summary, key=lambda entry: (-min(len(entry["seeds"]), _FULL_SEEDS),
                                                    -entry["student"]["val_accuracy"]["mean"])):
        shape = (tuple(entry["params"]["kernel_sizes"]), entry["params"]["vocab"]["max_len"],
                 *(entry["params"]["student"][key] for key in _SHAPE_KEYS))
        frontier.setdefault(shape, entry)
    return {"selection": "mean validation accuracy over seeds (never the test split)",
            "configs": summary, "frontier": list(frontier.values())}


def _read_recorded(path: Path) -> list[dict]:
    """The runs recorded in an existing summary; a file that is not one stops, left untouched."""
    try:
        return recorded_runs(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as error:
        raise PipelineError(f"{path} is not a summary written by sweep.py ({error!r}); it was "
                            "left as it is: restore it (git checkout) or move it away") from error


def update_summary(out: Path) -> None:
    """Add this repository's finished `<config>-s<seed>` experiments to the summary at `out`."""
    result = subprocess.run(["dvc", "exp", "show", "--json", "-A"], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise PipelineError(f"dvc exp show failed: {result.stderr.strip()}")
    found = [run for run in experiment_runs(json.loads(result.stdout))
             if _RUN_NAME.match(run["name"])]
    recorded = _read_recorded(out) if out.is_file() else []
    if not found:  # a clone has no experiments: nothing to add
        print(f"no finished experiment named <config>-s<seed> here (DVC keeps experiments as "
              f"local git refs); {out} left as it is ({len(recorded)} runs)")
        return
    names = {run["name"] for run in recorded}
    summary = summarise(merge_runs(recorded, found))
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(recorded)} runs recorded in {out}; found here: "
          f"{sum(run['name'] not in names for run in found)} new, "
          f"{sum(run['name'] in names for run in found)} replacing their record")
    for entry in summary["configs"]:
        stats = entry["student"]
        print(f"{entry['name']:32s} seeds {entry['seeds']}: val "
              f"{100 * stats['val_accuracy']['mean']:.2f} ± "
              f"{100 * (stats['val_accuracy']['std'] or 0):.2f}, test "
              f"{100 * stats['test_accuracy']['mean']:.2f} ± "
              f"{100 * (stats['test_accuracy']['std'] or 0):.2f}")
    print(f"-> {out} ({len(summary['frontier'])} shapes on the frontier)")
