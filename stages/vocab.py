"""Stage `vocab`: the student's word-level tokenizer, learned from the training split only."""

import argparse
from pathlib import Path

from kd.data import load_split
from kd.errors import exit_on_error
from kd.params import load_params
from kd.text import build_tokenizer


@exit_on_error
def main(train_path: str, out_path: str) -> None:
    params = load_params().vocab
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
