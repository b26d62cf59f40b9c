"""Stage `vocab`: the student's tokenizer: words learned from the training split only, or the
teacher's word pieces (`vocab.source`)."""

import argparse
from pathlib import Path

from kd.errors import exit_on_error
from kd.params import load_params
from kd.text import make_tokenizer


@exit_on_error
def main(train_path: str, out_path: str) -> None:
    all_params = load_params()
    params = all_params.vocab
    tokenizer = make_tokenizer(params, all_params.teacher.path, train_path)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out_path)
    print(f"vocab: {tokenizer.get_vocab_size()} tokens, max_len {params.max_len} -> {out_path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", default="data/prepared/train.parquet")
    parser.add_argument("--out", default="data/vocab/tokenizer.json")
    args = parser.parse_args()
    main(args.train, args.out)
