"""Stage `prepare`: IMDb tarball -> train / val / test / unsup splits as Parquet."""

import argparse

from kd.data import SPLITS, make_splits, read_tarball, save_split
from kd.errors import exit_on_error
from kd.params import load_params


@exit_on_error
def main(tarball: str, out_dir: str) -> None:
    params = load_params()
    reviews = read_tarball(tarball)
    splits = make_splits(reviews, subset_size=params.subset_size, test_size=params.test_size,
                         val_fraction=params.prepare.val_fraction, seed=params.seed,
                         unsup_size=params.unsup_size)
    for name in SPLITS:
        save_split(splits[name], f"{out_dir}/{name}.parquet")
        print(f"{name}: {len(splits[name])} reviews -> {out_dir}/{name}.parquet")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tarball", default="data/raw/aclImdb_v1.tar.gz")
    parser.add_argument("--out-dir", default="data/prepared")
    args = parser.parse_args()
    main(args.tarball, args.out_dir)
