"""Stage `teacher_infer`: the frozen teacher's logits for every review of one prepared split."""

import argparse
import time

from kd.data.splits import count_reviews, fingerprint_file, require_two_labels
from kd.device import resolve_device, resolve_precision
from kd.errors import exit_on_error
from kd.params import load_params
from kd.teacher.engines import open_engine
from kd.teacher.scoring import load_teacher_tokenizer, score_split


@exit_on_error
def main(split: str, data_dir: str, out_dir: str) -> None:
    all_params = load_params()
    params = all_params.teacher
    device = resolve_device(all_params.device)
    precision = resolve_precision(params.precision, device)
    split_path = f"{data_dir}/{split}.parquet"
    require_two_labels(split_path, "teacher_infer")  # K > 2 data stops before the teacher loads
    tokenizer, identity = load_teacher_tokenizer(params.path)
    # Only what the inputs decide goes into the file (no times, no engine or worker count):
    # the same inputs give the same bytes, so DVC can share the file instead of recomputing it.
    meta = {
        **identity,
        "max_len": params.max_len,
        "truncation": f"head {params.head_tokens} + tail "
                      f"{params.max_len - 2 - params.head_tokens}",
        "split": split,
        "reviews": count_reviews(split_path),
        "data_fingerprint": fingerprint_file(split_path),  # streamed, as the scoring below
        "device_type": device.type,
        "precision": precision,
    }
    with open_engine(params.engine, params.workers, params.path, identity["positive_index"],
                     device, precision) as engine:
        started = time.perf_counter()
        reviews = score_split(split_path, f"{out_dir}/{split}.parquet", engine, tokenizer,
                              max_len=params.max_len, head_tokens=params.head_tokens,
                              batch_size=params.batch_size, meta=meta,
                              desc=f"teacher {split}")
        seconds = time.perf_counter() - started
    print(f"teacher {split}: {reviews} reviews in {seconds:.0f}s "
          f"({reviews / max(seconds, 1e-9):.1f} reviews/s) on {device} ({precision}, "
          f"{params.engine} engine, {params.workers} worker(s))")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("split", choices=["train", "val", "test", "unsup", "augment"])
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--out-dir", default="data/teacher")
    args = parser.parse_args()
    main(args.split, args.data_dir, args.out_dir)
