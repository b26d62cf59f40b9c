"""MLflow tracking: one run per pipeline execution, logged in one place (the evaluate stage).

The store is `mlflow.db` (SQLite) at the repository root, the same place `mlflow ui` reads by
default when started there, with artifacts in `mlartifacts/` beside it.
"""

import os
import shutil
import subprocess
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


def log_pipeline_run(params: dict, history: list[dict], metrics: dict,
                     artifacts: list[str | Path], export_dir: str | Path | None = None,
                     root: Path | None = None) -> str:
    """Record one pipeline execution: params, per-epoch metrics, final metrics, artifacts.

    Tags: the git commit and, under `dvc exp run`, the experiment's name and baseline.
    With `export_dir`, the exported student is logged as the pyfunc model `student`, with
    its input signature (see kd/mlflow_student.py).

    Returns:
        The MLflow run id.
    """
    import mlflow

    root = root or project_root()
    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    experiment_id = (experiment.experiment_id if experiment else mlflow.create_experiment(
        EXPERIMENT, artifact_location=(root / "mlartifacts").as_uri()))
    exp_name = os.environ.get("DVC_EXP_NAME")
    with mlflow.start_run(experiment_id=experiment_id, run_name=exp_name) as run:
        mlflow.set_tags({
            "git_commit": os.environ.get("DVC_EXP_BASELINE_REV") or _git_commit(root),
            "dvc_exp_name": exp_name or "none (dvc repro)",
        })
        mlflow.log_params(flatten(params))
        for row in history:
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        mlflow.log_metrics({k: v for k, v in flatten(metrics).items()
                            if isinstance(v, (int, float))})
        for path in artifacts:
            mlflow.log_artifact(str(path))
        if export_dir is not None:
            _log_student_model(Path(export_dir))
        return run.info.run_id


def _log_student_model(export_dir: Path) -> None:
    """Log the served form (ONNX fp32) with its tokenizer and metadata as a pyfunc model."""
    import tempfile
    from importlib.metadata import version

    import mlflow
    import pandas as pd

    from kd.export import FILES
    from kd.mlflow_student import SIGNATURE

    package = Path(__file__).parent
    with tempfile.TemporaryDirectory() as staging:
        # Only what serving needs, not the other three forms.
        for name in (FILES["onnx"], "tokenizer.json", "metadata.json", "metrics.json"):
            if (export_dir / name).is_file():
                shutil.copy(export_dir / name, Path(staging) / name)
        mlflow.pyfunc.log_model(
            name="student", python_model=str(package / "mlflow_student.py"),
            artifacts={"export": staging}, code_paths=[str(package)], signature=SIGNATURE,
            input_example=pd.DataFrame({"text": ["A wonderful, moving film."]}),
            pip_requirements=[f"{name}=={version(name)}" for name in (
                "mlflow", "onnxruntime", "tokenizers", "numpy", "pandas", "torch")])
