"""Classify reviews with the exported student: one text per line in, one JSON line out.

    python tools/predict.py reviews.txt          # or: cat reviews.txt | python tools/predict.py
"""

import argparse
import json
import sys

from kd.errors import exit_on_error
from kd.serving.runtime import FILES, load_student


@exit_on_error
def main(source, export_dir: str, form: str, batch_size: int) -> None:
    student = load_student(export_dir, form=form)
    texts = [line.rstrip("\n") for line in source if line.strip()]
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        for text, prediction in zip(batch, student.predict(batch), strict=True):
            print(json.dumps({"text": text, **prediction}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", type=argparse.FileType("r"), default=sys.stdin,
                        help="a file of reviews, one per line (default: standard input)")
    parser.add_argument("--export-dir", default="models/export")
    parser.add_argument("--form", choices=list(FILES), default="onnx")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    main(args.file, args.export_dir, args.form, args.batch_size)
