"""Stage `prepare`: the reviews of `data.source` (the IMDb tarball, or your own files) -> the
train / val / test / unsup splits as Parquet, and `source.json` (label names and checks)."""

import argparse

from kd.data.sources import prepare
from kd.errors import exit_on_error
from kd.params import load_params


@exit_on_error
def main(out_dir: str) -> None:
    params = load_params()
    description = prepare(params, out_dir)  # bad data stops here, before anything is written
    for name, count in description["reviews"].items():
        print(f"{name}: {count} reviews -> {out_dir}/{name}.parquet")
    labels = description["labels"]
    if len(labels) == 2:
        print(f"labels: 0 = {labels[0]!r}, 1 = {labels[1]!r} ({description['label_rule']})")
    else:
        named = ", ".join(f"{label} = {name!r}" for label, name in enumerate(labels))
        print(f"labels ({len(labels)}): {named} ({description['label_rule']})")
    if "test_overlap" in description:
        overlap = description["test_overlap"]
        print(f"test reviews repeating a text of train: {overlap['in_train']}, of unlabelled: "
              f"{overlap['in_unlabelled']} ({overlap['share']:.2%}; at most "
              f"{overlap['max_overlap']:.2%} allowed)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", default="data/prepared")
    args = parser.parse_args()
    main(args.out_dir)
