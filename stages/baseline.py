"""Stage `baseline@<name>`: a baseline fitted on the training split's labels, its settings
picked on validation, scored on the test split: `tfidf_lr` or `nb_lr` (scikit-learn, C picked
on validation, see kd/evaluation/baselines.py) or `fasttext` (hashed word n-grams, a small grid, see
kd/evaluation/fasttext_baseline.py)."""

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kd.data.splits import fingerprint, load_split, require_two_labels
from kd.errors import exit_on_error
from kd.evaluation.baselines import fit_nb_lr, fit_tfidf_lr, save_baseline
from kd.evaluation.fasttext_baseline import fit_fasttext_on_validation, save_fasttext
from kd.params import load_params

# Each baseline's model file in --model-dir (dvc.yaml's outs name the same files).
MODEL_FILES = {"tfidf_lr": "tfidf_lr.parquet", "nb_lr": "nb_lr.parquet",
               "fasttext": "fasttext.bin"}


def _fit_fasttext(fit_args: tuple, test_texts: list[str], model_path: Path):
    """Returns (test P(positive), summary, size, the picked settings as text)."""
    model, summary = fit_fasttext_on_validation(*fit_args)
    save_fasttext(model, model_path)
    picked = ", ".join(f"{key}={value}" for key, value in summary["config"].items())
    return model.positive_probs(test_texts), summary, model.size(), picked


def _fit_sklearn(name: str, fit_args: tuple, test_texts: list[str], model_path: Path):
    """Returns (test P(positive), summary, size, the picked C as text)."""
    params = load_params().baselines
    if name == "tfidf_lr":
        pipeline, summary = fit_tfidf_lr(*fit_args, c_grid=params.tfidf_c_grid,
                                         min_df=params.tfidf_min_df)
    else:
        pipeline, summary = fit_nb_lr(*fit_args, c_grid=params.nb_c_grid,
                                      ngram_max=params.nb_ngram_max)
    save_baseline(pipeline, model_path)
    return (pipeline.predict_proba(test_texts)[:, 1], summary,
            {"features": len(pipeline[0].vocabulary_)}, f"C={summary['c']}")


@exit_on_error
def main(name: str, data_dir: str, out_dir: str, model_dir: str) -> None:
    require_two_labels(Path(data_dir) / "train.parquet", f"baseline@{name}")
    train, val, test = (load_split(Path(data_dir) / f"{split}.parquet")
                        for split in ("train", "val", "test"))
    fit_args = (list(train["text"]), np.asarray(train["label"]), list(val["text"]),
                np.asarray(val["label"]))
    model_path = Path(model_dir) / MODEL_FILES[name]
    if name == "fasttext":
        positive_probs, summary, size, picked = _fit_fasttext(fit_args, list(test["text"]),
                                                              model_path)
    else:
        positive_probs, summary, size, picked = _fit_sklearn(name, fit_args,
                                                             list(test["text"]), model_path)
    # The keys in the order the scikit-learn baselines always wrote them (same bytes).
    meta = {**summary, "data_fingerprint": fingerprint(test), **size}
    table = pa.table({"id": list(test["id"]),
                      "positive_prob": np.asarray(positive_probs, dtype=np.float32)})
    out = Path(out_dir) / f"{name}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({"kd.baseline": json.dumps(meta)}), out)
    print(f"{name}: {picked} (val accuracy {100 * summary['val_accuracy']:.2f}%), "
          f"{meta['features']:,} features -> {out}, {model_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=list(MODEL_FILES))
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--out-dir", default="data/baselines")
    parser.add_argument("--model-dir", default="models/baselines")
    args = parser.parse_args()
    main(args.name, args.data_dir, args.out_dir, args.model_dir)
