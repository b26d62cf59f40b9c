"""Classical baselines (scikit-learn), fitted on the training split, C picked on validation:

- `tfidf_lr`: TF-IDF word uni+bigrams (sublinear tf) with logistic regression;
- `nb_lr`: NB-weighted logistic regression (Wang & Manning 2012's NB-SVM, with the logistic
  loss): binary word 1..n-gram features scaled by their log-count ratio
  r = log((p / |p|_1) / (q / |q|_1)), p and q the smoothed feature counts in positive and
  negative reviews.

A fitted model is saved as data, not as objects: a Parquet table of its n-grams with their
weights (and IDF), and the vectorizer's settings in the file's metadata. It loads back as a
plain scikit-learn pipeline (texts in, P(positive) out), and nothing in the file is ever run or
unpickled. The same model gives the same bytes (a pickle-like format would hold memory
addresses and times).

The same data gives the same model on any machine of one BLAS kernel family: liblinear's
Newton solver sums its dot products (`ddot`) through OpenBLAS, which splits a sum over more
than 10,000 features among its threads, so the thread count (the machine's cores, or
`OPENBLAS_NUM_THREADS`) used to change the weights' last bits, and through the solver's stopping
tests sometimes more. The fit runs on one BLAS thread. OpenBLAS's kernel still matters: the
AVX-512 ones (SkylakeX, Cooperlake, SapphireRapids) give the same bytes, an AVX2 machine's
(Haswell) other ones (tests/unit/evaluation/test_baselines.py).
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from threadpoolctl import threadpool_limits

from kd.errors import PipelineError

# Words, and the punctuation that carries sentiment ("!", "?"), lower-cased.
TOKEN_PATTERN = r"(?u)\b\w+\b|[!?]"


def _pick_c(train_features, train_labels: np.ndarray, val_features, val_labels: np.ndarray,
            c_grid: tuple[float, ...]) -> tuple[LogisticRegression, dict]:
    """Fit one logistic regression per C; keep the best on validation (the first on a tie).

    Each fit runs on one BLAS thread: the thread count would decide the weights' last bits.
    """
    best = None
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=2000, solver="liblinear")
        with threadpool_limits(limits=1, user_api="blas"):
            model.fit(train_features, train_labels)
        accuracy = float((model.predict(val_features) == val_labels).mean())
        if best is None or accuracy > best[1]["val_accuracy"]:
            best = (model, {"c": c, "val_accuracy": accuracy})
    return best


def fit_tfidf_lr(train_texts: list[str], train_labels: np.ndarray, val_texts: list[str],
                 val_labels: np.ndarray, c_grid: tuple[float, ...],
                 min_df: int = 2) -> tuple[Pipeline, dict]:
    """Fit TF-IDF (uni+bigrams, sublinear tf) + logistic regression, picking C on validation.

    The vectorizer is fitted once on the training text; each C in `c_grid` refits only the
    linear model.

    Returns:
        (the pipeline with the best C, {"c": best C, "val_accuracy": its accuracy}).
    """
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, sublinear_tf=True)
    train_features = vectorizer.fit_transform(train_texts)
    model, summary = _pick_c(train_features, train_labels, vectorizer.transform(val_texts),
                             val_labels, c_grid)
    return make_pipeline(vectorizer, model), summary


def log_count_ratio(features, labels: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """r = log((p / |p|_1) / (q / |q|_1)) with p = smoothing + the positive reviews' feature
    counts, q the same for the negative ones (Wang & Manning 2012).

    Args:
        features: (N, F) sparse binary features.
        labels: (N,) 0/1.

    Returns:
        (F,) float64.
    """
    positive = smoothing + np.asarray(features[labels == 1].sum(axis=0), dtype=np.float64).ravel()
    negative = smoothing + np.asarray(features[labels == 0].sum(axis=0), dtype=np.float64).ravel()
    return np.log(positive / positive.sum()) - np.log(negative / negative.sum())


def fit_nb_lr(train_texts: list[str], train_labels: np.ndarray, val_texts: list[str],
              val_labels: np.ndarray, c_grid: tuple[float, ...],
              ngram_max: int = 3) -> tuple[Pipeline, dict]:
    """Fit the NB-weighted logistic regression, picking C on validation.

    The model is trained on features scaled by r; since w . (r * x) = (w * r) . x, the scale
    is then folded into the weights, so the result is a plain binary-count pipeline.

    Returns:
        (the pipeline with the best C, {"c": best C, "val_accuracy": its accuracy}).
    """
    vectorizer = CountVectorizer(ngram_range=(1, ngram_max), binary=True,
                                 token_pattern=TOKEN_PATTERN, dtype=np.float32)
    train_features = vectorizer.fit_transform(train_texts)
    ratio = log_count_ratio(train_features, train_labels)
    model, summary = _pick_c(train_features.multiply(ratio).tocsr(), train_labels,
                             vectorizer.transform(val_texts).multiply(ratio).tocsr(), val_labels,
                             c_grid)
    model.coef_ = model.coef_ * ratio
    return make_pipeline(vectorizer, model), summary


# The vectorizer settings a saved model records; the rest are scikit-learn's defaults.
_SETTINGS = ("ngram_range", "binary", "token_pattern", "lowercase", "sublinear_tf", "norm",
             "use_idf", "smooth_idf")


def save_baseline(pipeline: Pipeline, path: str | Path) -> None:
    """Write a fitted (vectorizer, logistic regression) pipeline as a Parquet table."""
    vectorizer, model = pipeline[0], pipeline[-1]
    columns = {"ngram": vectorizer.get_feature_names_out().tolist(),
               "weight": model.coef_.ravel().astype(np.float64)}
    if isinstance(vectorizer, TfidfVectorizer):
        columns["idf"] = vectorizer.idf_.astype(np.float64)
    settings = {key: value for key, value in vectorizer.get_params().items() if key in _SETTINGS}
    meta = {"vectorizer": type(vectorizer).__name__, "settings": settings,
            "intercept": float(model.intercept_[0])}
    table = pa.table(columns).replace_schema_metadata({"kd.baseline_model": json.dumps(meta)})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def load_baseline(path: str | Path) -> Pipeline:
    """Rebuild the pipeline `save_baseline` wrote.

    Raises:
        PipelineError: the file is missing or was not written by `save_baseline`.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} not found: run `dvc repro` for the baselines")
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(b"kd.baseline_model")
    if raw is None:
        raise PipelineError(f"{path} is not a baseline model written by the baseline stage")
    meta = json.loads(raw)
    settings = {**meta["settings"], "ngram_range": tuple(meta["settings"]["ngram_range"])}
    vocabulary = {ngram: index for index, ngram in enumerate(table.column("ngram").to_pylist())}
    if meta["vectorizer"] == "TfidfVectorizer":
        vectorizer = TfidfVectorizer(vocabulary=vocabulary, dtype=np.float64, **settings)
        vectorizer.idf_ = table.column("idf").to_numpy()
    else:
        vectorizer = CountVectorizer(vocabulary=vocabulary, dtype=np.float32, **settings)
    model = LogisticRegression()
    model.classes_ = np.array([0, 1])
    model.coef_ = table.column("weight").to_numpy().reshape(1, -1)
    model.intercept_ = np.array([meta["intercept"]])
    return make_pipeline(vectorizer, model)
