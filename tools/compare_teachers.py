"""Two teachers' soft labels on the same prepared split, side by side (a measurement, not a
stage): each one's accuracy, how often they agree, and whether the gap is more than chance
(McNemar's exact test on the reviews exactly one of them gets right; a paired 95% interval).

    python tools/compare_teachers.py PULLED.parquet MADE.parquet [--split SPLIT.parquet]

Both files must have scored the split given (their data fingerprint is checked).
"""

import argparse
import json

import numpy as np

from kd.data.splits import fingerprint, load_split
from kd.errors import exit_on_error
from kd.evaluation.paired import compare
from kd.teacher.scoring import load_soft_labels, read_soft_label_meta


@exit_on_error
def main(args: argparse.Namespace) -> None:
    split = load_split(args.split)
    ids, labels = list(split["id"]), np.asarray(split["label"])
    expected = {"data_fingerprint": fingerprint(split)}
    correct = []
    for path in (args.a, args.b):
        logits = load_soft_labels(path, ids, expected)  # (N, 2): [label 0, label 1]
        correct.append((logits[:, 1] > logits[:, 0]) == (labels == 1))
        meta = read_soft_label_meta(path)
        print(f"{path}: teacher {meta['teacher_path']} (sha256 {meta['teacher_sha256'][:12]}), "
              f"{meta['truncation']}, {meta['precision']}: accuracy "
              f"{100 * correct[-1].mean():.2f}% ({int(correct[-1].sum())}/{len(ids)})")
    print(json.dumps(compare(*correct), indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="soft labels of the first teacher (e.g. the pulled one)")
    parser.add_argument("b", help="soft labels of the second teacher (e.g. the made one)")
    parser.add_argument("--split", default="data/prepared/test.parquet")
    main(parser.parse_args())
