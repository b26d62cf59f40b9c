"""The speed side of the student's accuracy-speed curve: every form of each TextCNN shape.

Speed does not depend on the weights, so each shape is a randomly initialised student with the
real tokenizer, exported as the `export` stage does it and timed as the `benchmark` stage does
(same test reviews, batch size and threads). The accuracy of each shape, trained, comes from
its DVC experiment (README, "Accuracy against speed").

    python stages/speed_curve.py --shapes 300x100 128x100 64x64
"""

import argparse
import json
import tempfile
from pathlib import Path

import torch

from kd.bench import measure, throughput
from kd.data import load_split
from kd.errors import exit_on_error
from kd.export import export_all, load_student
from kd.model import TextCNN, TextCNNConfig
from kd.params import load_params
from kd.text import load_tokenizer


@exit_on_error
def main(args: argparse.Namespace) -> None:
    params = load_params()
    torch.set_num_threads(args.threads)
    test = load_split(args.test).shuffle(seed=params.seed)
    texts = list(test.select(range(min(args.reviews, len(test))))["text"])
    vocab_size = load_tokenizer(args.tokenizer).get_vocab_size()
    rows = []
    for shape in args.shapes:
        embed_dim, num_filters = (int(size) for size in shape.split("x"))
        model = TextCNN(TextCNNConfig(vocab_size=vocab_size, embed_dim=embed_dim,
                                      num_filters=num_filters,
                                      kernel_sizes=params.kernel_sizes))
        with tempfile.TemporaryDirectory() as folder:
            paths = export_all(model, args.tokenizer, folder, {})
            for form in ("bf16", "onnx", "int8"):
                student = load_student(folder, form=form, threads=args.threads)
                speed, _ = measure(student.positive_probs, texts, args.batch_size,
                                   args.latency_reviews)
                row = {"embed_dim": embed_dim, "num_filters": num_filters, "form": form,
                       **{key: round(value, 2) for key, value in speed.items()},
                       "size_mb": round(paths[form].stat().st_size / 1e6, 2)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    # The ceiling over every form: the tokenizer alone (encode and pad, batch 64), the one every
    # export above carries, timed through the last student loaded.
    rate, _ = throughput(lambda batch: (student.encode(batch) > 0).sum(axis=1), texts,
                         args.batch_size)
    rows.append({"form": "tokenizer only", "reviews_per_s": round(rate)})
    print(json.dumps(rows[-1]), flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["300x100", "128x100", "64x64"],
                        help="EMBEDxFILTERS per shape")
    parser.add_argument("--test", default="data/prepared/test.parquet")
    parser.add_argument("--tokenizer", default="data/vocab/tokenizer.json")
    parser.add_argument("--reviews", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-reviews", type=int, default=500)
    parser.add_argument("--out", default="reports/speed_curve.json")
    main(parser.parse_args())
