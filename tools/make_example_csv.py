"""A second dataset for the walk-through on your own files, built from the IMDb tarball: reviews
as CSV with other column names, as a user's export would come (not a stage).

    python tools/make_example_csv.py                       # -> data/examples/imdb-csv/

writes `train.csv` and `test.csv` (`review,sentiment`, sentiment "positive" or "negative") and
`unlabelled.csv` (`review`): stratified, seeded samples of IMDb's train, test and unlabelled
reviews, rows shuffled, texts as in the tarball (with their `<br />`: prepare cleans them). The
test file comes from IMDb's test split only, so no review of it is in the train file unless
IMDb repeats it. data/examples/ is git-ignored: IMDb's text never enters git.
"""

import argparse
import csv
import random
import re
import tarfile
from pathlib import Path

_REVIEW = re.compile(r"^aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")


def read_raw(tarball: Path) -> dict[str, list[tuple[str, str]]]:
    """{"train", "test", "unsup"} -> [(folder, raw text)], sorted by path (archive-independent)."""
    reviews = {"train": [], "test": [], "unsup": []}
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            match = _REVIEW.match(member.name)
            if match and member.isfile():
                split, folder = match.group(1), match.group(2)
                text = archive.extractfile(member).read().decode("utf-8")
                reviews["unsup" if folder == "unsup" else split].append((member.name, folder,
                                                                         text))
    return {split: [(folder, text) for _, folder, text in sorted(rows)]
            for split, rows in reviews.items()}


def sample(rows: list[tuple[str, str]], size: int, rng: random.Random) -> list[tuple[str, str]]:
    """`size` rows, half from each folder (pos/neg) where there are two, shuffled."""
    folders = sorted({folder for folder, _ in rows})
    chosen = []
    for index, folder in enumerate(folders):
        part = [row for row in rows if row[0] == folder]
        share = size // len(folders) + (index < size % len(folders))
        chosen += rng.sample(part, share)
    rng.shuffle(chosen)
    return chosen


def write_csv(path: Path, rows: list[tuple[str, str]], with_labels: bool) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"] if with_labels else ["review"])
        for folder, text in rows:
            writer.writerow([text, "positive" if folder == "pos" else "negative"]
                            if with_labels else [text])


def main(args: argparse.Namespace) -> None:
    reviews = read_raw(Path(args.tarball))
    rng = random.Random(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, split, size, with_labels in (("train.csv", "train", args.train, True),
                                           ("test.csv", "test", args.test, True),
                                           ("unlabelled.csv", "unsup", args.unlabelled, False)):
        if size:
            write_csv(out / name, sample(reviews[split], size, rng), with_labels)
            print(f"{out / name}: {size} reviews")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tarball", default="data/raw/aclImdb_v1.tar.gz")
    parser.add_argument("--out", default="data/examples/imdb-csv")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--unlabelled", type=int, default=4000, help="0: no unlabelled.csv")
    parser.add_argument("--seed", type=int, default=7)
    main(parser.parse_args())
