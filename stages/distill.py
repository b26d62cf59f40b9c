"""Stage `distill`: train the TextCNN student on labels and the teacher's soft labels.

With `--no-kd` it trains the same student on labels alone (alpha = 1, no transfer set, no
teacher files read): the `distill_no_kd` baseline that tells what the teacher bought.
"""

import argparse
from pathlib import Path

from kd.errors import PipelineError, exit_on_error
from kd.examples import Examples, file_sha256, load_examples
from kd.model import (
    TextCNN,
    TextCNNConfig,
    count_parameters,
    load_checkpoint,
    project_embeddings,
    read_word_embeddings,
    save_checkpoint,
)
from kd.params import load_params
from kd.reports import write_csv
from kd.teacher import read_soft_label_meta
from kd.text import load_tokenizer
from kd.train import FitConfig, fit, fit_temperature, predict_logits


def build_student(params, vocab_size: int) -> TextCNN:
    """The TextCNN of `params`, its embeddings started from the teacher's if asked for."""
    config = TextCNNConfig(vocab_size=vocab_size, embed_dim=params.student.embed_dim,
                           num_filters=params.student.num_filters,
                           kernel_sizes=params.kernel_sizes, dropout=params.student.dropout)
    model = TextCNN(config)
    if params.student.init_embeddings == "teacher":
        embeddings = read_word_embeddings(params.teacher.path)  # (V, H)
        rows, hidden = embeddings.shape
        if rows != vocab_size or config.embed_dim > hidden:
            raise PipelineError(
                f"the teacher's word embeddings are {(rows, hidden)} but the student's are "
                f"{(vocab_size, config.embed_dim)}: set vocab.source = teacher and "
                f"student.embed_dim <= {hidden}")
        # A smaller student keeps the teacher's leading principal directions.
        model.embedding.weight.data.copy_(project_embeddings(embeddings, config.embed_dim))
        model.embedding.weight.data[config.pad_id] = 0
    return model


@exit_on_error
def main(data_dir: str, teacher_dir: str, tokenizer_path: str, out_dir: str,
         history_path: str, no_kd: bool) -> None:
    params = load_params()
    alpha = 1.0 if no_kd else params.alpha
    use_unsup = params.use_unsup and not no_kd
    tokenizer = load_tokenizer(tokenizer_path)
    # Every split must come from the teacher that scored the training split.
    teacher = {} if no_kd else read_soft_label_meta(Path(teacher_dir) / "train.parquet")
    examples, fingerprints = {}, {}
    for split in ["train", "val"] + (["unsup"] if use_unsup else []):
        examples[split], fingerprints[split] = load_examples(
            split, tokenizer, data_dir, None if no_kd else teacher_dir,
            teacher.get("teacher_sha256"))
    train = examples["train"].concat(examples["unsup"]) if use_unsup else examples["train"]

    model = build_student(params, tokenizer.get_vocab_size())
    meta = {
        "teacher_sha256": teacher.get("teacher_sha256"),
        "teacher_truncation": teacher.get("truncation"),
        "tokenizer_sha256": file_sha256(tokenizer_path),
        "data_fingerprints": fingerprints,
        "alpha": alpha,
        "use_unsup": use_unsup,
        "params": params.to_dict(),
    }
    print(f"student: {count_parameters(model):,} parameters; {len(train)} training reviews "
          f"({'with' if use_unsup else 'without'} the unlabelled transfer set), "
          f"{len(examples['val'])} validation reviews, alpha = {alpha}")

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
                           kd_loss=params.kd_loss, seed=params.seed,
                           precision=params.train.precision)
    write_csv(history_path, fit(model, train, examples["val"], fit_config, on_epoch))
    if params.train.calibrate:
        _calibrate(out / "best.safetensors", examples["val"])
    print(f"best val accuracy {100 * best_accuracy:.2f}% -> {out / 'best.safetensors'}")


def _calibrate(checkpoint: Path, val: Examples) -> None:
    """Fit the calibration temperature of the best checkpoint on validation and store it in it.

    Accuracy and ROC-AUC do not move; only the confidence (and so the ECE) does.
    """
    model, meta = load_checkpoint(checkpoint)
    temperature = fit_temperature(predict_logits(model, val.input_ids), val.labels)
    model.logit_scale.fill_(1.0 / temperature)
    save_checkpoint(model, checkpoint, {**meta, "calibration_temperature": temperature})
    print(f"calibration temperature {temperature:.3f} (fitted on validation)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--teacher-dir", default="data/teacher")
    parser.add_argument("--tokenizer", default="data/vocab/tokenizer.json")
    parser.add_argument("--out-dir", default="models/student")
    parser.add_argument("--history", default="reports/training.csv")
    parser.add_argument("--no-kd", action="store_true",
                        help="train on labels alone (alpha = 1, no transfer set, no teacher)")
    args = parser.parse_args()
    main(args.data_dir, args.teacher_dir, args.tokenizer, args.out_dir, args.history, args.no_kd)
