"""Stage `distill`: train the TextCNN student on labels and the teacher's soft labels."""

import argparse
import csv
from pathlib import Path

from kd.errors import exit_on_error
from kd.examples import file_sha256, load_examples
from kd.model import TextCNN, TextCNNConfig, count_parameters, save_checkpoint
from kd.params import load_params
from kd.teacher import read_soft_label_meta
from kd.text import load_tokenizer
from kd.train import FitConfig, fit


@exit_on_error
def main(data_dir: str, teacher_dir: str, tokenizer_path: str, out_dir: str,
         history_path: str, alpha: float | None) -> None:
    params = load_params()
    alpha = params.alpha if alpha is None else alpha
    tokenizer = load_tokenizer(tokenizer_path)
    # Every split must come from the teacher that scored the training split.
    teacher = read_soft_label_meta(Path(teacher_dir) / "train.parquet")
    splits = ["train", "val"] + (["unsup"] if params.use_unsup else [])
    examples, fingerprints = {}, {}
    for split in splits:
        examples[split], fingerprints[split] = load_examples(
            split, tokenizer, data_dir, teacher_dir, teacher["teacher_sha256"])
    train = examples["train"].concat(examples["unsup"]) if params.use_unsup else examples["train"]

    config = TextCNNConfig(vocab_size=tokenizer.get_vocab_size(),
                           embed_dim=params.student.embed_dim,
                           num_filters=params.student.num_filters,
                           kernel_sizes=params.kernel_sizes, dropout=params.student.dropout)
    model = TextCNN(config)
    meta = {
        "teacher_sha256": teacher["teacher_sha256"],
        "teacher_truncation": teacher["truncation"],
        "tokenizer_sha256": file_sha256(tokenizer_path),
        "data_fingerprints": fingerprints,
        "alpha": alpha,
        "params": params.to_dict(),
    }
    print(f"student: {count_parameters(model):,} parameters; {len(train)} training reviews "
          f"({'with' if params.use_unsup else 'without'} the unlabelled transfer set), "
          f"{len(examples['val'])} validation reviews")

    out = Path(out_dir)
    best_accuracy = -1.0

    def on_epoch(epoch: int, row: dict) -> None:
        nonlocal best_accuracy
        save_checkpoint(model, out / f"epoch_{epoch}.safetensors", {**meta, **row})
        if row["val_accuracy"] > best_accuracy:
            best_accuracy = row["val_accuracy"]
            save_checkpoint(model, out / "best.safetensors", {**meta, **row})
        print(f"Epoch {epoch}/{params.epochs} | Train Loss: {row['train_loss']:.4f} | "
              f"Val Loss: {row['val_loss']:.4f} | Val Acc: {100 * row['val_accuracy']:.2f}%",
              flush=True)

    fit_config = FitConfig(epochs=params.epochs, batch_size=params.train.batch_size,
                           lr=params.train.lr, alpha=alpha, temperature=params.temperature,
                           kd_loss=params.kd_loss, seed=params.seed)
    history = fit(model, train, examples["val"], fit_config, on_epoch)
    Path(history_path).parent.mkdir(parents=True, exist_ok=True)
    with open(history_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    print(f"best val accuracy {100 * best_accuracy:.2f}% -> {out / 'best.safetensors'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--teacher-dir", default="data/teacher")
    parser.add_argument("--tokenizer", default="data/vocab/tokenizer.json")
    parser.add_argument("--out-dir", default="models/student")
    parser.add_argument("--history", default="reports/training.csv")
    parser.add_argument("--alpha", type=float, default=None,
                        help="override params.yaml's alpha (1.0 trains on labels alone)")
    args = parser.parse_args()
    main(args.data_dir, args.teacher_dir, args.tokenizer, args.out_dir, args.history, args.alpha)
