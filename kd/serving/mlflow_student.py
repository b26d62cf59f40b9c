"""The exported student as an MLflow pyfunc model, logged "from code" (no pickled object).

`log_student_model` logs this file with the export folder as its artifact; MLflow
then loads it with `mlflow.pyfunc.load_model(uri)` or serves it with `mlflow models serve -m uri`.
Input: a DataFrame with a `text` column. Output: `label` and `positive_prob` per text.
"""

import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "text")]),
    outputs=Schema([ColSpec("string", "label"), ColSpec("double", "positive_prob")]),
)


class StudentModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from kd.serving.runtime import load_student

        self.student = load_student(context.artifacts["export"], form="onnx")

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame(self.student.predict([str(text) for text in model_input["text"]]))


def log_student_model(run, export_dir: str | Path) -> None:
    """Log the served form (ONNX fp32) with its tokenizer and metadata as the pyfunc model
    `student` (`StudentModel`), with its input signature."""
    from kd.serving.runtime import FILES

    export_dir = Path(export_dir)
    package = Path(__file__).parents[1]  # kd: the model's code is the package
    with tempfile.TemporaryDirectory() as staging:
        # Only what serving needs, not the other forms.
        for name in (FILES["onnx"], "tokenizer.json", "metadata.json", "metrics.json"):
            if (export_dir / name).is_file():
                shutil.copy(export_dir / name, Path(staging) / name)
        mlflow.pyfunc.log_model(
            name="student", python_model=str(package / "serving/mlflow_student.py"),
            artifacts={"export": staging}, code_paths=[str(package)], signature=SIGNATURE,
            input_example=pd.DataFrame({"text": ["A wonderful, moving film."]}),
            pip_requirements=[f"{name}=={version(name)}" for name in (
                "mlflow", "onnxruntime", "tokenizers", "nanotoken", "numpy", "pandas")])


mlflow.models.set_model(StudentModel())
