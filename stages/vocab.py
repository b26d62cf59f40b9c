"""Stage `vocab`: the student's tokenizer: words learned from the training split only, or the
teacher's word pieces (`vocab.source`)."""

import argparse
from pathlib import Path

from kd.data import load_split
from kd.errors import exit_on_error
from kd.params import load_params
from kd.text import build_tokenizer, teacher_tokenizer


@exit_on_error
def main(train_path: str, out_path: str) -> None:
    all_params = load_params()
    params = all_params.vocab
    if params.source == "teacher":
        tokenizer = teacher_tokenizer(all_params.teacher.path, max_len=params.max_len)
    else:
        train = load_split(train_path)
        tokenizer = build_tokenizer(train["text"], max_size=params.max_size,
                                    min_freq=params.min_freq, max_len=params.max_len)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out_path)
    print(f"vocab: {tokenizer.get_vocab_size()} tokens, max_len {params.max_len} -> {out_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", default="data/prepared/train.parquet")
    parser.add_argument("--out", default="data/vocab/tokenizer.json")
    args = parser.parse_args()
    main(args.train, args.out)
