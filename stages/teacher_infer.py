"""Stage `teacher_infer`: the frozen teacher's logits for every review of one prepared split."""

import argparse
import time

from kd.data import fingerprint, load_split
from kd.errors import exit_on_error
from kd.params import load_params
from kd.teacher import load_teacher, save_soft_labels, score


@exit_on_error
def main(split: str, data_dir: str, out_dir: str) -> None:
    params = load_params().teacher
    dataset = load_split(f"{data_dir}/{split}.parquet")
    model, tokenizer, identity = load_teacher(params.path)
    started = time.perf_counter()
    teacher_logits = score(model, tokenizer, dataset["text"], max_len=params.max_len,
                           head_tokens=params.head_tokens, batch_size=params.batch_size,
                           positive=identity["positive_index"], desc=f"teacher {split}")
    seconds = time.perf_counter() - started
    meta = {
        **identity,
        "max_len": params.max_len,
        "truncation": f"head {params.head_tokens} + tail "
                      f"{params.max_len - 2 - params.head_tokens}",
        "split": split,
        "reviews": len(dataset),
        "data_fingerprint": fingerprint(dataset),
        "seconds": round(seconds, 1),
    }
    save_soft_labels(f"{out_dir}/{split}.parquet", list(dataset["id"]), teacher_logits, meta)
    print(f"teacher {split}: {len(dataset)} reviews in {seconds:.0f}s "
          f"({len(dataset) / max(seconds, 1e-9):.1f} reviews/s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("split", choices=["train", "val", "test", "unsup"])
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--out-dir", default="data/teacher")
    args = parser.parse_args()
    main(args.split, args.data_dir, args.out_dir)
