"""Stage `baseline@<name>`: a classical baseline (`tfidf_lr` or `nb_lr`, see kd/baselines.py),
fitted on the training split with C picked on validation, scored on the test split."""

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kd.baselines import fit_nb_lr, fit_tfidf_lr, save_baseline
from kd.data import fingerprint, load_split
from kd.errors import exit_on_error
from kd.params import load_params


@exit_on_error
def main(name: str, data_dir: str, out_dir: str, model_dir: str) -> None:
    params = load_params().baselines
    train, val, test = (load_split(Path(data_dir) / f"{split}.parquet")
                        for split in ("train", "val", "test"))
    fit_args = (list(train["text"]), np.asarray(train["label"]), list(val["text"]),
                np.asarray(val["label"]))
    if name == "tfidf_lr":
        pipeline, summary = fit_tfidf_lr(*fit_args, c_grid=params.tfidf_c_grid,
                                         min_df=params.tfidf_min_df)
    else:
        pipeline, summary = fit_nb_lr(*fit_args, c_grid=params.nb_c_grid,
                                      ngram_max=params.nb_ngram_max)
    positive_probs = pipeline.predict_proba(list(test["text"]))[:, 1].astype(np.float32)
    meta = {**summary, "data_fingerprint": fingerprint(test),
            "features": len(pipeline[0].vocabulary_)}
    table = pa.table({"id": list(test["id"]), "positive_prob": positive_probs})
    out = Path(out_dir) / f"{name}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({"kd.baseline": json.dumps(meta)}), out)
    save_baseline(pipeline, Path(model_dir) / f"{name}.parquet")
    print(f"{name}: C={summary['c']} (val accuracy {100 * summary['val_accuracy']:.2f}%), "
          f"{meta['features']:,} features -> {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=["tfidf_lr", "nb_lr"])
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--out-dir", default="data/baselines")
    parser.add_argument("--model-dir", default="models/baselines")
    args = parser.parse_args()
    main(args.name, args.data_dir, args.out_dir, args.model_dir)
