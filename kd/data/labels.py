"""What labels 0 .. K-1 mean: found once by `prepare`, then carried by name to every output.

`prepare` maps a source's K label values (K >= 2) to 0 .. K-1 (`map_labels` for two,
`map_classes` for more) and writes the names in that order, the mapping and the rule that made
it into `data/prepared/source.json`. Whoever names a prediction reads them back from there
(`read_label_names` for two, `read_labels` for any K): the made teacher's config (`id2label`),
the export's `metadata.json`, and so the API and the predict command.

The rule for two values, in order (the first that applies):
1. `data.positive_label` names the value that is 1.
2. By name: a value starting with "pos", or "good", "yes", "true", is 1; one starting with
   "neg", or "bad", "no", "false", is 0; the other value takes the other side.
3. Two numbers (or booleans): the smaller is 0, the larger 1 (0/1, 1/2, -1/1, false/true).
4. Otherwise sorted as text: the first is 0, the second 1 ("ham" 0, "spam" 1).

Label 1 is what the teacher and the students score: `positive_prob` is the probability of
label 1, whatever its name.

The rule for K > 2 values (`map_classes`; `data.positive_label` does not apply):
1. All numbers (integers, as "1" and 1 are one value): ascending, so 1-5 stars are 0-4 and
   the label order is the scale's (what the mean absolute error in label steps needs).
2. Otherwise sorted as text, case-insensitively, then as written ("negative", "neutral",
   "positive"): a stable order that does not depend on the file's row order.

A label column is refused (`check_classes`) when it looks like a regression target rather
than classes: numbers that are not integral (2.5, "0.7"), or more than MAX_CLASSES distinct
values.
"""

import json
import re
from pathlib import Path

from kd.errors import PipelineError

IMDB_LABELS = ("negative", "positive")  # Stanford's folders neg/ and pos/
SOURCE_FILE = "source.json"  # beside the prepared splits
_POSITIVE_WORDS = {"good", "yes", "true"}
_NEGATIVE_WORDS = {"bad", "no", "false"}
_INTEGER = re.compile(r"[+-]?\d+")
MAX_CLASSES = 50  # more distinct label values than this reads as a regression target


class LabelError(PipelineError):
    """The labels cannot be mapped to 0 .. K-1, or the names of a prepared dataset are
    missing."""


def label_key(value):
    """One label value as compared and counted: strings stripped, integer strings as integers
    ("1" and 1 are the same label), integral floats as integers; None or "" means no label."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return None
        return int(value) if _INTEGER.fullmatch(value) else value
    return value


def label_name(key) -> str:
    """A label value as its name: booleans lower-case, everything else as written."""
    return str(key).lower() if isinstance(key, bool) else str(key)


def _polarity(key) -> int | None:
    """1 for a value that reads positive, 0 for one that reads negative, None otherwise."""
    if not isinstance(key, str):
        return None
    word = key.lower()
    if word.startswith("pos") or word in _POSITIVE_WORDS:
        return 1
    if word.startswith("neg") or word in _NEGATIVE_WORDS:
        return 0
    return None


def _is_number(key) -> bool:
    return isinstance(key, (bool, int, float))


def map_labels(keys, positive_label="") -> tuple[dict, str]:
    """Map exactly two label values to 0 and 1 (the module's rule).

    Args:
        keys: the two distinct `label_key` values of the training file.
        positive_label: `data.positive_label`; "" to find it.

    Returns:
        ({value: 0 or 1}, the rule that decided, in words).

    Raises:
        LabelError: not two values; `positive_label` is neither of them, or contradicts the
            names; both values read as the same side.
    """
    keys = list(keys)
    if len(keys) != 2:
        raise LabelError(f"map_labels needs exactly two label values, got {keys!r}")
    polarity = {key: _polarity(key) for key in keys}
    if positive_label != "":
        wanted = label_key(positive_label)
        if wanted not in keys:
            raise LabelError(
                f"params.yaml: `data.positive_label` = {positive_label!r} is not one of the "
                f"label values {', '.join(repr(label_name(key)) for key in keys)}")
        other = keys[1 - keys.index(wanted)]
        if polarity[wanted] == 0 or polarity[other] == 1:
            raise LabelError(
                f"params.yaml: `data.positive_label` = {positive_label!r} contradicts the label "
                f"names: {label_name(wanted)!r} and {label_name(other)!r} read the other way "
                "round, and teachers read an output named pos* as label 1; leave it empty")
        return {wanted: 1, other: 0}, f"data.positive_label: {label_name(wanted)!r} is 1"
    sides = [polarity[key] for key in keys]
    if sides[0] is not None and sides[0] == sides[1]:
        side = ["negative", "positive"][sides[0]]
        raise LabelError(f"both label values read as {side} "
                         f"({', '.join(repr(label_name(key)) for key in keys)}): the data has "
                         "one class under two spellings; make them one, or fix the other class")
    if sides[0] is not None or sides[1] is not None:
        known = 0 if sides[0] is not None else 1
        one = keys[known] if sides[known] == 1 else keys[1 - known]
        zero = keys[1 - keys.index(one)]
        return {zero: 0, one: 1}, (f"by name: {label_name(one)!r} is positive (1), "
                                   f"{label_name(zero)!r} negative (0)")
    if all(_is_number(key) for key in keys):
        zero, one = sorted(keys)
        return {zero: 0, one: 1}, (f"numbers: the smaller, {label_name(zero)}, is 0 and the "
                                   f"larger, {label_name(one)}, is 1")
    zero, one = sorted(keys, key=label_name)
    return {zero: 0, one: 1}, (f"no names to go by: sorted as text, {label_name(zero)!r} is 0 "
                               f"and {label_name(one)!r} is 1 (set data.positive_label to choose)")


def _is_fraction(key) -> bool:
    """A number that is not integral, written as a number or as text ("0.5", "2.5e0")."""
    if isinstance(key, bool):
        return False
    if isinstance(key, float):
        return True  # label_key turns integral floats into integers
    if isinstance(key, str):
        try:
            value = float(key)
        except ValueError:
            return False
        return value == value and value not in (float("inf"), float("-inf"))
    return False


def check_classes(keys) -> None:
    """Refuse K > 2 label values that look like a regression target, not classes.

    Args:
        keys: the distinct `label_key` values of the training file (more than two).

    Raises:
        LabelError: a value is a number that is not integral, or there are more than
            MAX_CLASSES values; the message says what is allowed.
    """
    keys = list(keys)
    fractions = sorted((key for key in keys if _is_fraction(key)), key=label_name)
    if fractions:
        shown = ", ".join(repr(label_name(key)) for key in fractions[:5])
        raise LabelError(
            f"holds numbers that are not integral ({shown}{' ...' if len(fractions) > 5 else ''}"
            f"): a regression target? The pipeline classifies; allowed: 2 to {MAX_CLASSES} "
            "classes, named by text or by integers (round or bin the values into classes)")
    if len(keys) > MAX_CLASSES:
        raise LabelError(
            f"holds {len(keys)} distinct values: a regression target or an id? The pipeline "
            f"classifies; allowed: 2 to {MAX_CLASSES} classes (bin the values into classes)")


def map_classes(keys) -> tuple[dict, str]:
    """Map K > 2 label values to 0 .. K-1 (the module's rule for K > 2).

    Args:
        keys: the distinct `label_key` values of the training file, more than two, checked by
            `check_classes`.

    Returns:
        ({value: 0 .. K-1}, the rule that decided, in words).

    Raises:
        LabelError: two or fewer values.
    """
    keys = list(keys)
    if len(keys) <= 2:
        raise LabelError(f"map_classes needs more than two label values, got {keys!r}")
    if all(_is_number(key) and not isinstance(key, bool) for key in keys):
        ordered = sorted(keys)
        rule = (f"{len(keys)} numbers, ascending: {label_name(ordered[0])} is 0, ..., "
                f"{label_name(ordered[-1])} is {len(keys) - 1}")
    else:
        ordered = sorted(keys, key=lambda key: (label_name(key).lower(), label_name(key)))
        rule = (f"{len(keys)} values sorted as text: {label_name(ordered[0])!r} is 0, ..., "
                f"{label_name(ordered[-1])!r} is {len(keys) - 1}")
    return {key: index for index, key in enumerate(ordered)}, rule


def read_labels(path: str | Path) -> list[str]:
    """The names of labels 0 .. K-1 from `source.json` (written by `prepare`), K >= 2.

    Raises:
        LabelError: the file is missing (run `dvc repro prepare`) or holds no list of at least
            two names.
    """
    labels = _names_in(path)
    if labels is None or len(labels) < 2:
        raise LabelError(f"{path} holds no label names (`labels`): run `dvc repro prepare`")
    return labels


def _names_in(path: str | Path) -> list[str] | None:
    """`source.json`'s `labels` when it is a list of names, else None.

    Raises:
        LabelError: the file is missing (run `dvc repro prepare`).
    """
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path} not found: run `dvc repro prepare` first")
    labels = json.loads(path.read_text()).get("labels")
    if isinstance(labels, list) and all(isinstance(name, str) for name in labels):
        return labels
    return None


def read_label_names(path: str | Path) -> tuple[str, str]:
    """The names of labels 0 and 1 from `source.json` (written by `prepare`), for the stages
    that handle two labels so far.

    Raises:
        LabelError: the file is missing (run `dvc repro prepare`), holds more than two names
            (K classes: not yet there), or no two names.
    """
    labels = _names_in(path)
    if labels is not None and len(labels) > 2:
        raise LabelError(f"{path} holds {len(labels)} labels ({', '.join(map(repr, labels))}): "
                         "this stage handles two labels so far, K classes are being built "
                         "(issue 28); prepare two labels to run it")
    if labels is None or len(labels) != 2:
        raise LabelError(f"{path} holds no two label names (`labels`): run `dvc repro prepare`")
    return labels[0], labels[1]
