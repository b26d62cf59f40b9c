"""Stage `prepare`: IMDb tarball -> train / val / test / unsup splits as Parquet."""

import argparse

from kd.data import SPLITS, index_tarball, make_splits, write_splits
from kd.errors import exit_on_error
from kd.params import load_params


@exit_on_error
def main(tarball: str, out_dir: str) -> None:
    params = load_params()
    index = index_tarball(tarball)  # ids, labels, ratings: the texts stay in the tarball
    splits = make_splits(index, subset_size=params.subset_size, test_size=params.test_size,
                         val_fraction=params.prepare.val_fraction, seed=params.seed,
                         unsup_size=params.unsup_size)
    written = write_splits(tarball, splits, out_dir)
    for name in SPLITS:
        print(f"{name}: {written[name]} reviews -> {out_dir}/{name}.parquet")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tarball", default="data/raw/aclImdb_v1.tar.gz")
    parser.add_argument("--out-dir", default="data/prepared")
    args = parser.parse_args()
    main(args.tarball, args.out_dir)
