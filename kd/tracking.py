"""MLflow tracking, all of it: one run per pipeline execution, which every stage adds to.

`distill` opens the run and logs its epochs as they end (watch them in `mlflow ui`);
`distill_no_kd`, `evaluate` and `export` find the same run and add their part. A run is found
by its tags: the git commit, the DVC experiment's name (or "workspace" under `dvc repro`) and a
digest of the params. Nothing of MLflow (ids, times) is written into a DVC-tracked output.

The store is `mlflow.db` (SQLite) at the repository root, the same place `mlflow ui` reads by
default when started there, with artifacts in `mlartifacts/` beside it.
"""

import hashlib
import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

EXPERIMENT = "imdb-distillation"


def project_root() -> Path:
    """The repository root, also when DVC runs the stages in a copy.

    `dvc exp run --queue` / `--temp` run in a copy under <root>/.dvc/tmp/exps/; the runs belong
    in the project's own store so that `mlflow ui` at the root shows them all.
    """
    root = Path(os.environ.get("DVC_ROOT", ".")).resolve()
    if ".dvc" in root.parts:
        root = Path(*root.parts[:root.parts.index(".dvc")])
    return root


def _git_commit(root: Path) -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                            text=True)
    return result.stdout.strip() if result.returncode == 0 else "none"


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and tuples become their string."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(list(value)) if isinstance(value, (list, tuple)) else value
    return flat


def run_tags(params: dict, root: Path) -> dict:
    """What identifies this pipeline execution's run: commit, experiment, params."""
    return {
        "git_commit": os.environ.get("DVC_EXP_BASELINE_REV") or _git_commit(root),
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME") or "workspace",
        "params_sha256": hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest(),
    }


@contextmanager
def pipeline_run(params: dict, root: Path | None = None):
    """The MLflow run of this pipeline execution, created by the first stage that asks.

    Yields:
        The active `mlflow.ActiveRun`; it ends (FINISHED, or FAILED on an error) on exit.
    """
    import mlflow

    root = root or project_root()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    experiment_id = (experiment.experiment_id if experiment else mlflow.create_experiment(
        EXPERIMENT, artifact_location=(root / "mlartifacts").as_uri()))
    tags = run_tags(params, root)
    query = " and ".join(f"tags.{key} = '{value}'" for key, value in tags.items())
    found = mlflow.search_runs([experiment_id], filter_string=query, max_results=1,
                               output_format="list")
    if found:
        run = mlflow.start_run(run_id=found[0].info.run_id)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, tags=tags,
                               run_name=tags["dvc_exp_name"])
        mlflow.log_params(flatten(params))
    with run:
        yield run


def log_epoch(run, row: dict, prefix: str = "") -> None:
    """One epoch's train/validation loss and accuracy, as it ends."""
    import mlflow

    mlflow.log_metrics({f"{prefix}{key}": value for key, value in row.items() if key != "epoch"},
                       step=row["epoch"], run_id=run.info.run_id)


def log_results(run, metrics: dict, artifacts: list[str | Path]) -> None:
    """The evaluation's metrics (every number in `metrics`, flattened) and files."""
    import mlflow

    mlflow.log_metrics({key: value for key, value in flatten(metrics).items()
                        if isinstance(value, (int, float)) and not isinstance(value, bool)},
                       run_id=run.info.run_id)
    for path in artifacts:
        mlflow.log_artifact(str(path), run_id=run.info.run_id)
