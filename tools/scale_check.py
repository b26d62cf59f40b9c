"""Peak memory of `prepare` and `teacher_infer` on a corpus of N reviews (not a stage).

For each N, the real IMDb reviews are repeated with new ids (aclImdb/<split>/<folder>/
<copy * 10^6 + number>_<rating>.txt, so labels and ratings stay true) into a tarball in a
temporary folder, never in the repository. Then, each in its own process so each has its own
peak resident memory (ru_maxrss):

  prepare   index_tarball, make_splits (every review), write_splits: the stage's code
  teacher   teacher_infer's path on the largest split (unsup): streamed fingerprint, then
            score_split, every chunk read, tokenized, planned, assembled and written; the
            teacher's forward pass runs on the first --score-first reviews only, and the rest
            get zero logits (the forward pass holds one batch whatever N is)
  baseline  the imports and the teacher alone: what any run of the stage holds

    python tools/scale_check.py --reviews 100000 1000000 --score-first 2000

Run it from the repository root on a quiet machine: 1,000,000 reviews take a few GB of disk
under --work-dir (deleted afterwards) and several minutes.
"""

import argparse
import io
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

_REVIEW_PATH = re.compile(r"^aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")


def make_corpus(source: Path, reviews: int, out: Path) -> dict[str, int]:
    """A tarball in Stanford's layout holding `reviews` reviews: the source's, in a seeded
    shuffled order, repeated with new ids (copy k adds k * 10^6 to the number).

    Returns:
        Reviews per source split.
    """
    originals = []  # (split folder, number, rating, raw bytes): the source, once, in memory
    with tarfile.open(source, "r:gz") as archive:
        for member in archive:
            match = _REVIEW_PATH.match(member.name)
            if match and member.isfile():
                split, folder, number, rating = match.groups()
                originals.append((f"{split}/{folder}", int(number), rating,
                                  archive.extractfile(member).read()))
    random.Random(0).shuffle(originals)  # any N gets the corpus's mix of splits and labels
    counts = {"train": 0, "test": 0, "unsup": 0}
    with tarfile.open(out, "w:gz", compresslevel=1) as archive:
        for index in range(reviews):
            folder, number, rating, raw = originals[index % len(originals)]
            copy = index // len(originals)
            info = tarfile.TarInfo(f"aclImdb/{folder}/{copy * 10**6 + number}_{rating}.txt")
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))
            counts["unsup" if folder.endswith("unsup") else folder.split("/")[0]] += 1
    return counts


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def phase_prepare(work: Path) -> dict:
    from kd.data.splits import index_tarball, make_splits, write_splits

    index = index_tarball(work / "corpus.tar.gz")
    splits = make_splits(index, subset_size=0, test_size=0, val_fraction=0.1, seed=13)
    return write_splits(work / "corpus.tar.gz", splits, work / "prepared")


class FirstReviewsOnly:
    """An engine that runs the real one on the first `limit` reviews and gives zeros after."""

    def __init__(self, engine, limit: int):
        self.engine, self.left = engine, limit

    def score(self, batches, progress=None):
        import numpy as np

        scored = 0
        while scored < len(batches) and self.left > 0:
            self.left -= len(batches[scored].rows)
            scored += 1
        logits = self.engine.score(batches[:scored], progress) if scored else []
        return logits + [np.zeros((len(batch.rows), 2), np.float32) for batch in batches[scored:]]


def phase_teacher(work: Path, teacher: str, score_first: int, engine_name: str,
                  workers: int) -> dict:
    from kd.data.splits import count_reviews, fingerprint_file
    from kd.device import resolve_device, resolve_precision
    from kd.params import load_params
    from kd.teacher.engines import open_engine
    from kd.teacher.scoring import load_teacher_tokenizer, score_split

    params = load_params()  # the teacher's max_len, head_tokens, batch_size, precision
    split = work / "prepared" / "unsup.parquet"
    device = resolve_device(params.device)
    precision = resolve_precision(params.teacher.precision, device)
    tokenizer, identity = load_teacher_tokenizer(teacher)
    meta = {"reviews": count_reviews(split), "data_fingerprint": fingerprint_file(split)}
    with open_engine(engine_name, workers, teacher, identity["positive_index"], device,
                     precision) as engine:
        reviews = score_split(split, work / "teacher" / "unsup.parquet",
                              FirstReviewsOnly(engine, score_first), tokenizer,
                              max_len=params.teacher.max_len,
                              head_tokens=params.teacher.head_tokens,
                              batch_size=params.teacher.batch_size, meta=meta)
    return {"reviews": reviews, "scored": score_first, "device": str(device),
            "precision": precision, "engine": engine_name, "workers": workers}


def phase_baseline(teacher: str) -> dict:
    from kd.teacher.engines import LocalEngine  # noqa: F401  (the imports the stage makes)
    from kd.teacher.scoring import load_teacher

    load_teacher(teacher)
    return {}


def run_phase(phase: str, args: argparse.Namespace, work: Path) -> dict:
    """Run one phase in a fresh process; its own peak RSS comes back with its result."""
    command = [sys.executable, __file__, "--phase", phase, "--work-dir", str(work),
               "--teacher", args.teacher, "--score-first", str(args.score_first),
               "--engine", args.engine, "--workers", str(args.workers)]
    result = subprocess.run(command, capture_output=True, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    if result.returncode != 0:
        sys.exit(f"{phase} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(args: argparse.Namespace) -> None:
    rows = []
    root = Path(tempfile.mkdtemp(prefix="kd-scale-", dir=args.work_dir))
    try:
        baseline = run_phase("baseline", args, root)
        rows.append({"reviews": "-", "phase": "baseline (imports + teacher)", **baseline})
        for reviews in args.reviews:
            work = root / str(reviews)
            work.mkdir()
            started = time.perf_counter()
            counts = make_corpus(Path(args.tarball), reviews, work / "corpus.tar.gz")
            print(f"{reviews} reviews {counts}: corpus made in "
                  f"{time.perf_counter() - started:.0f}s", file=sys.stderr)
            for phase in ("prepare", "teacher"):
                rows.append({"reviews": reviews, "phase": phase, **run_phase(phase, args, work)})
                print(json.dumps(rows[-1]), file=sys.stderr)
            shutil.rmtree(work)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| reviews | phase | peak RSS (MB) | seconds | detail |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        detail = ", ".join(f"{key} {value}" for key, value in row["result"].items())
        print(f"| {row['reviews']} | {row['phase']} | {row['peak_rss_mb']:.0f} | "
              f"{row['seconds']:.0f} | {detail} |")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


def child(args: argparse.Namespace) -> None:
    work = Path(args.work_dir)
    started = time.perf_counter()
    if args.phase == "prepare":
        result = phase_prepare(work)
    elif args.phase == "teacher":
        result = phase_teacher(work, args.teacher, args.score_first, args.engine, args.workers)
    else:
        result = phase_baseline(args.teacher)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), "seconds": time.perf_counter() - started,
                      "result": result}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reviews", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--score-first", type=int, default=2000,
                        help="reviews the teacher's forward pass actually scores")
    parser.add_argument("--tarball", default="data/raw/aclImdb_v1.tar.gz")
    parser.add_argument("--teacher", default="models/teacher")
    parser.add_argument("--engine", choices=["local", "ray"], default="local")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--work-dir", default=None, help="where the temporary folder goes")
    parser.add_argument("--out", default=None, help="also write the rows as JSON here")
    parser.add_argument("--phase", choices=["prepare", "teacher", "baseline"],
                        help=argparse.SUPPRESS)  # internal: run one phase in this process
    arguments = parser.parse_args()
    if arguments.phase:
        child(arguments)
    else:
        main(arguments)
