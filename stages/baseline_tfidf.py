"""Stage `baseline_tfidf`: TF-IDF + logistic regression, scored on the same test split."""

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from kd.baselines import fit_tfidf_lr
from kd.data import fingerprint, load_split
from kd.errors import exit_on_error
from kd.params import load_params


@exit_on_error
def main(data_dir: str, out_path: str) -> None:
    params = load_params().baselines
    train, val, test = (load_split(Path(data_dir) / f"{split}.parquet")
                        for split in ("train", "val", "test"))
    pipeline, summary = fit_tfidf_lr(list(train["text"]), np.asarray(train["label"]),
                                     list(val["text"]), np.asarray(val["label"]),
                                     c_grid=tuple(params.tfidf_c_grid),
                                     min_df=params.tfidf_min_df)
    positive_probs = pipeline.predict_proba(list(test["text"]))[:, 1].astype(np.float32)
    meta = {**summary, "data_fingerprint": fingerprint(test),
            "features": len(pipeline[0].vocabulary_)}
    table = pa.table({"id": list(test["id"]), "positive_prob": positive_probs})
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata({"kd.baseline": json.dumps(meta)}), out_path)
    print(f"tfidf_lr: C={summary['c']} (val accuracy {100 * summary['val_accuracy']:.2f}%), "
          f"{meta['features']:,} features -> {out_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--out", default="data/baselines/tfidf_lr.parquet")
    args = parser.parse_args()
    main(args.data_dir, args.out)
