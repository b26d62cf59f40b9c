"""Stage `augment`: `augment_size` noisy copies of the training and unlabelled reviews, for the
teacher to score (`teacher_infer@augment`) and the student to learn from (teacher term only)."""

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from kd.data.augment import SCHEMA, augment_reviews
from kd.data.splits import load_split
from kd.errors import exit_on_error
from kd.params import load_params


@exit_on_error
def main(data_dir: str, out_path: str) -> None:
    params = load_params()
    sources = []
    for split in ("train", "unsup"):  # never val or test
        dataset = load_split(Path(data_dir) / f"{split}.parquet")
        sources += [{"id": review_id, "text": text}
                    for review_id, text in zip(dataset["id"], dataset["text"], strict=True)]
    rows = augment_reviews(sources, params.augment_size, seed=params.seed,
                           mask_prob=params.augment.mask_prob,
                           window_prob=params.augment.window_prob,
                           window_min=params.augment.window_min)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out_path)
    print(f"augment: {len(rows)} copies of {len(sources)} train + unsup reviews -> {out_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--out", default="data/prepared/augment.parquet")
    args = parser.parse_args()
    main(args.data_dir, args.out)
