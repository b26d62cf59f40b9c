"""Stage `distill`: train the student (`student.arch`) on labels and the teacher's soft labels.

With `--no-kd` it trains the same student on labels alone (alpha = 1, no transfer set, no
teacher files read): the `distill_no_kd` twin that tells what the teacher bought.

Training runs in a work folder outside the stage's outputs (DVC deletes those before a run),
keyed by everything that decides the result; an interrupted run continues there after its last
completed epoch. On success the files move into the output folder and the work folder goes.
"""

import argparse
import shutil
from dataclasses import replace
from pathlib import Path

import kd
from kd import tracking
from kd.data.splits import require_two_labels
from kd.device import make_repeatable, resolve_device, resolve_precision
from kd.errors import exit_on_error
from kd.params import load_params
from kd.reports import write_csv
from kd.state import work_dir
from kd.student.examples import Examples, file_sha256, load_examples
from kd.student.inference import logit_accuracy, predict_logits
from kd.student.models import Ensemble, count_parameters, load_checkpoint, save_checkpoint
from kd.student.registry import build_member
from kd.student.train import FitConfig, fit, fit_temperature
from kd.teacher.scoring import read_soft_label_meta
from kd.text import load_tokenizer

# What decides a student's bytes besides its data and params: a work folder made by other code
# is not resumed. The whole kd package counts, so no edit to a module it imports can slip by.
_CODE = [Path(__file__), *sorted(Path(kd.__file__).parent.rglob("*.py"))]


@exit_on_error
def main(args: argparse.Namespace) -> None:
    params = load_params()
    require_two_labels(Path(args.data_dir) / "train.parquet", "distill")
    threads = make_repeatable(params.train.seed, params.train.threads)
    device = resolve_device(params.device)
    precision = resolve_precision(params.train.precision, device)
    no_kd = args.no_kd
    alpha = 1.0 if no_kd else params.alpha
    tokenizer = load_tokenizer(args.tokenizer)
    model = build_member(params, tokenizer)  # a shape the teacher cannot seed stops here
    # Every split must come from the teacher that scored the training split.
    teacher = {} if no_kd else read_soft_label_meta(Path(args.teacher_dir) / "train.parquet")
    splits = ["train", "val"]
    if not no_kd:
        splits += ["unsup"] * params.use_unsup + ["augment"] * (params.augment_size > 0)
    examples, fingerprints = {}, {}
    for split in splits:
        examples[split], fingerprints[split] = load_examples(
            split, tokenizer, args.data_dir, None if no_kd else args.teacher_dir,
            teacher.get("teacher_sha256"))
    for split in [split for split in splits[2:] if not len(examples[split])]:
        # Own data without an unlabelled file: use_unsup has nothing to add, and says so.
        print(f"the {split} split holds no reviews: the transfer set goes without it", flush=True)
        splits.remove(split)
    train = examples["train"]
    for split in splits[2:]:
        train = train.concat(examples[split])

    meta = {
        "teacher_sha256": teacher.get("teacher_sha256"),
        "teacher_truncation": teacher.get("truncation"),
        # What made the soft labels: `evaluate` and the API's /model show it.
        "soft_labels_device": teacher.get("device_type"),
        "soft_labels_precision": teacher.get("precision"),
        "tokenizer_sha256": file_sha256(args.tokenizer),
        "data_fingerprints": fingerprints,
        "alpha": alpha,
        "transfer_set": splits[2:],
        "params": params.to_dict(),
        "threads": threads,
        "device_type": device.type,
        "precision": precision,
    }
    count = params.student.members
    print(f"student ({params.student.arch}{f' x {count}' if count > 1 else ''}): "
          f"{count_parameters(model):,} parameters{' each' if count > 1 else ''}; "
          f"{len(train)} training reviews ({', '.join(splits[:1] + splits[2:])}), "
          f"{len(examples['val'])} validation reviews, alpha = {alpha}, {device} {precision}, "
          f"{threads} threads", flush=True)

    work = work_dir(args.work_dir, args.out_dir, meta, _CODE)
    print(f"work folder {work} (kept until the training ends, so a rerun resumes)", flush=True)
    fit_config = FitConfig(epochs=params.epochs, batch_size=params.train.batch_size,
                           lr=params.train.lr, alpha=alpha, temperature=params.temperature,
                           kd_loss=params.kd_loss, seed=params.train.seed, precision=precision,
                           adversarial=params.train.adversarial, ngram_lr=params.train.ngram_lr,
                           device=str(device))
    members, rows, history = [], [], []
    with tracking.pipeline_run(params.to_dict()) as run:
        for index in range(count):
            seed = member_seed(params.train.seed, index)
            if index:  # the first member was built above, seeded as a single student is
                make_repeatable(seed, params.train.threads)
                model = build_member(params, tokenizer)
            folder = work if count == 1 else work / f"member_{index}"
            prefix = ("no_kd." if no_kd else "") + (f"member_{index}." if count > 1 else "")
            member_history = _fit_member(model, train, examples["val"],
                                         replace(fit_config, seed=seed), folder, meta, run, prefix)
            best = max(member_history, key=lambda row: row["val_accuracy"])  # earliest on a tie
            print(f"{f'member {index} (seed {seed}): ' if count > 1 else ''}best val accuracy "
                  f"{100 * best['val_accuracy']:.2f}% (epoch {best['epoch']})", flush=True)
            members.append(load_checkpoint(folder / f"epoch_{best['epoch']}.safetensors")[0])
            rows.append({"seed": seed, **best})
            history += [{"member": index, **row} if count > 1 else row for row in member_history]
    if count == 1:
        shutil.copy(work / f"epoch_{rows[0]['epoch']}.safetensors", work / "best.safetensors")
    else:
        ensemble = Ensemble(members)
        val = examples["val"]
        val_accuracy = logit_accuracy(predict_logits(ensemble, val.input_ids), val.labels)
        save_checkpoint(ensemble, work / "best.safetensors",
                        {**meta, "members": rows, "val_accuracy": val_accuracy})
        print(f"ensemble of {count}: val accuracy {100 * val_accuracy:.2f}%")
    if params.train.calibrate:
        _calibrate(work / "best.safetensors", examples["val"])
    out = Path(args.out_dir)
    for path in sorted(work.rglob("*.safetensors")):
        if path.name != "training_state.safetensors":
            target = out / path.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)  # a new file's mode: safetensors writes 0600
    write_csv(args.history, history)
    shutil.rmtree(work)
    print(f"-> {out / 'best.safetensors'}")


def member_seed(seed: int, index: int) -> int:
    """The seed of an ensemble's member `index`: members of the ensembles of seeds 13, 14 and
    15 never share one (the first is the seed itself, as a single student's)."""
    return seed + 1000 * index


def _fit_member(model, train: Examples, val: Examples, config: FitConfig, folder: Path,
                meta: dict, run, prefix: str) -> list[dict]:
    """Train one student, a checkpoint per epoch in `folder`; resumes what `folder` holds."""

    def on_epoch(epoch: int, row: dict) -> None:
        save_checkpoint(model, folder / f"epoch_{epoch}.safetensors",
                        {**meta, "seed": config.seed, **row})
        print(f"Epoch {epoch}/{config.epochs} | Train Loss: {row['train_loss']:.4f} | "
              f"Val Loss: {row['val_loss']:.4f} | Val Acc: {100 * row['val_accuracy']:.2f}%",
              flush=True)
        tracking.log_epoch(run, row, prefix)

    return fit(model, train, val, config, on_epoch,
               state_path=folder / "training_state.safetensors")


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
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data/prepared")
    parser.add_argument("--teacher-dir", default="data/teacher")
    parser.add_argument("--tokenizer", default="data/vocab/tokenizer.json")
    parser.add_argument("--out-dir", default="models/student")
    parser.add_argument("--history", default="reports/training.csv")
    parser.add_argument("--work-dir", default=".dvc/tmp/training",
                        help="where unfinished trainings keep their state (not a DVC output)")
    parser.add_argument("--no-kd", action="store_true",
                        help="train on labels alone (alpha = 1, no transfer set, no teacher)")
    main(parser.parse_args())
