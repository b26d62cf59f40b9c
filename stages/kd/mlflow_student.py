"""The exported student as an MLflow pyfunc model, logged "from code" (no pickled object).

`kd.tracking.log_student_model` logs this file with the export folder as its artifact; MLflow
then loads it with `mlflow.pyfunc.load_model(uri)` or serves it with `mlflow models serve -m uri`.
Input: a DataFrame with a `text` column. Output: `label` and `positive_prob` per text.
"""

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
        from kd.serve import load_student

        self.student = load_student(context.artifacts["export"], form="onnx")

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return pd.DataFrame(self.student.predict([str(text) for text in model_input["text"]]))


mlflow.models.set_model(StudentModel())
