"""Stage `teacher_infer`: the frozen teacher's logits for every review of one prepared split."""

import argparse
import time

from kd.data import fingerprint, load_split
from kd.device import resolve_device, resolve_precision
from kd.errors import exit_on_error
from kd.params import load_params
from kd.teacher import load_teacher, save_soft_labels, score


@exit_on_error
def main(split: str, data_dir: str, out_dir: str) -> None:
    all_params = load_params()
    params = all_params.teacher
    device = resolve_device(all_params.device)
    precision = resolve_precision(params.precision, device)
    dataset = load_split(f"{data_dir}/{split}.parquet")
    model, tokenizer, identity = load_teacher(params.path)
    started = time.perf_counter()
    teacher_logits = score(model.to(device), tokenizer, dataset["text"], max_len=params.max_len,
                           head_tokens=params.head_tokens, batch_size=params.batch_size,
                           positive=identity["positive_index"], desc=f"teacher {split}",
                           device=device, precision=precision)
    seconds = time.perf_counter() - started
    # Only what the inputs decide goes into the file (no times): the same inputs give the same
    # bytes, so DVC can share the file instead of recomputing it.
    meta = {
        **identity,
        "max_len": params.max_len,
        "truncation": f"head {params.head_tokens} + tail "
                      f"{params.max_len - 2 - params.head_tokens}",
        "split": split,
        "reviews": len(dataset),
        "data_fingerprint": fingerprint(dataset),
        "device_type": device.type,
        "precision": precision,
    }
    save_soft_labels(f"{out_dir}/{split}.parquet", list(dataset["id"]), teacher_logits, meta)
    print(f"teacher {split}: {len(dataset)} reviews in {seconds:.0f}s "
          f"({len(dataset) / max(seconds, 1e-9):.1f} reviews/s) on {device} ({precision})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("split", choices=["train", "val", "test", "unsup", "augment"])
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--out-dir", default="data/teacher")
    args = parser.parse_args()
    main(args.split, args.data_dir, args.out_dir)
