"""Stage `finetune` (teachers/dvc.yaml): a teacher fine-tuned from the base encoder on the
prepared training split, written as a Hugging Face checkpoint that `teacher_infer` reads.

A plain `dvc repro` never runs it (nothing in dvc.yaml depends on its output while
`teacher.path` is the pulled teacher); `dvc exp run -S teacher.path=models/teacher-finetuned`
does, before scoring with it. The validation split is scored after every epoch; the test split
is never read.

Training runs in a work folder outside the stage's output (DVC deletes that before a run),
keyed by everything that decides the result; an interrupted run continues from its last saved
state there. On success the checkpoint is written and the work folder goes.
"""

import argparse
import shutil
from pathlib import Path

import numpy as np

import kd
from kd.data.labels import SOURCE_FILE, read_label_names
from kd.data.splits import fingerprint, load_split
from kd.device import make_repeatable, resolve_device, resolve_precision
from kd.errors import exit_on_error
from kd.params import load_params
from kd.state import work_dir
from kd.teacher.finetune import (
    FinetuneConfig,
    build_teacher,
    encode,
    evaluate,
    finetune,
    load_base_tokenizer,
    save_teacher,
)
from kd.teacher.scoring import plan_batches, teacher_sha256

# What decides the teacher's bytes besides its data and params: a work folder made by other
# code is not resumed.
_CODE = [Path(__file__), *(Path(kd.__file__).parent / name for name in
                             ("teacher/finetune.py", "state.py", "teacher/scoring.py"))]


@exit_on_error
def main(args: argparse.Namespace) -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()  # bars for loading and saving a few files: noise in the log
    params = load_params()
    recipe = params.finetune
    threads = make_repeatable(recipe.seed, recipe.threads)
    device = resolve_device(params.device)
    precision = resolve_precision(recipe.precision, device)
    data_dir = Path(args.data_dir)
    labels = read_label_names(data_dir / SOURCE_FILE)
    tokenizer = load_base_tokenizer(recipe.base)
    train, val = load_split(data_dir / "train.parquet"), load_split(data_dir / "val.parquet")
    max_len, head_tokens = params.teacher.max_len, params.teacher.head_tokens
    # Only what the inputs decide (no times, no paths of this machine): it keys the work folder
    # and is written beside the teacher.
    meta = {
        "base_sha256": teacher_sha256(recipe.base),  # sha256 of its safetensors weights
        "data_fingerprints": {"train": fingerprint(train), "val": fingerprint(val)},
        "reviews": {"train": len(train), "val": len(val)},
        "labels": list(labels),
        "max_len": max_len,
        "truncation": f"head {head_tokens} + tail {max_len - 2 - head_tokens}",
        "recipe": {key: value for key, value in params.to_dict()["finetune"].items()
                   if key != "base"},
        "threads": threads,
        "device_type": device.type,
        "precision": precision,
    }
    work = work_dir(args.work_dir, args.out_dir, meta, _CODE)
    print(f"fine-tuning a teacher from {recipe.base} on {len(train)} reviews ({recipe.epochs} "
          f"epoch(s), batch {recipe.batch_size}, {meta['truncation']} word pieces, {device} "
          f"{precision}, {threads} threads); labels 0 = {labels[0]!r}, 1 = {labels[1]!r}",
          flush=True)
    print(f"work folder {work} (kept until the training ends, so a rerun resumes)", flush=True)
    model = build_teacher(recipe.base, labels, recipe.hidden_dropout, recipe.attention_dropout)
    train_ids = encode(tokenizer, train["text"], max_len, head_tokens)
    val_labels = np.asarray(val["label"], dtype=np.int64)
    val_batches = plan_batches(tokenizer, val["text"], max_len, head_tokens, batch_size=64)
    config = FinetuneConfig(epochs=recipe.epochs, batch_size=recipe.batch_size, lr=recipe.lr,
                            warmup=recipe.warmup, weight_decay=recipe.weight_decay,
                            max_grad_norm=recipe.max_grad_norm, seed=recipe.seed,
                            precision=precision, device=str(device),
                            save_every=recipe.save_every)
    history = finetune(
        model, train_ids, np.asarray(train["label"], dtype=np.int64), config,
        pad_id=tokenizer.pad_token_id or 0, state_path=work / "state.safetensors",
        evaluate_fn=lambda model: evaluate(model, val_batches, val_labels, device, precision),
        log=lambda line: print(line, flush=True))
    out = save_teacher(model, tokenizer, args.out_dir, {**meta, "history": history})
    shutil.rmtree(work)
    print(f"teacher -> {out} (validation accuracy {100 * history[-1]['val_accuracy']:.2f}%)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--out-dir", default="models/teacher-finetuned")
    parser.add_argument("--work-dir", default=".dvc/tmp/finetune",
                        help="where unfinished fine-tunings keep their state (not a DVC output)")
    main(parser.parse_args())
