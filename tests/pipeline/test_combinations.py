"""The options a user combines, run through DVC on tiny data: every combination reaches `export`
(and `evaluate`, for each arch's ensemble), or stops before any work with a message naming the
keys.

The factors are those the README offers and a user would try: where the reviews come from
(IMDb's tarball or your own files), whether there are unlabelled reviews, `use_unsup`,
`augment_size`, `student.members` and the student (`student.arch`, and the TextCNN without
convolutions: `kernel_sizes: []` with the n-gram branch). Their full product (128 pipelines) is
too slow for the default suite; eight runs cover every pair of factor values (a covering array,
checked below), in one tiny repository whose run cache keeps every run's outputs: the teacher
scores each labelled split once per source, and each unlabelled or augmented split once.
"""

import itertools
import json
import shutil
from pathlib import Path

import pytest
import yaml

from helpers import REPO, make_rows, run, write_rows, write_tarball
from kd.student.models import Ensemble, count_parameters, load_checkpoint

AUGMENT_SIZE = 10
# The students, each as small as its arch allows (the tiny teacher has 1 layer).
ARCHS = {
    "textcnn": {"kernel_sizes": [3, 4, 5], "student": {"arch": "textcnn"}},
    "ngram-only": {"kernel_sizes": [], "student": {"arch": "textcnn"}},
    "bilstm": {"kernel_sizes": [3, 4, 5], "student": {"arch": "bilstm"}},
    "transformer": {"kernel_sizes": [3, 4, 5], "student": {"arch": "transformer"}},
}
# Where the reviews come from, with and without unlabelled ones (data.* keys).
DATA = {
    ("imdb", True): {"source": "imdb", "path": "data/raw/aclImdb_v1.tar.gz"},
    ("imdb", False): {"source": "imdb", "path": "data/raw/aclImdb_labelled.tar.gz"},
    ("files", True): {"source": "files", "path": "data/reviews", "unlabelled": "unlabelled.csv"},
    ("files", False): {"source": "files", "path": "data/labelled", "unlabelled": ""},
}
FACTORS = ("arch", "source", "unlabelled", "use_unsup", "augment", "members")
# A covering array of strength 2 for 4 x 2^5 levels: each arch in two complementary rows, so
# every arch meets both values of every other factor, and the arches' rows differ so that every
# pair of two-level factors meets in all four ways (`test_the_design_covers_every_pair`).
_BASE = {"textcnn": (0, 0, 0, 0, 0), "ngram-only": (0, 0, 0, 0, 1),
         "bilstm": (0, 0, 1, 1, 0), "transformer": (0, 1, 0, 1, 0)}
COMBINATIONS = [
    {"arch": arch, "source": ("imdb", "files")[bits[0]], "unlabelled": bool(bits[1]),
     "use_unsup": bool(bits[2]), "augment": bits[3] * AUGMENT_SIZE, "members": 1 + bits[4]}
    for arch, base in _BASE.items() for flip in (0, 1)
    for bits in [tuple(bit ^ flip for bit in base)]
]
# The runs of one data set one after the other (the run cache would give them back anyway).
COMBINATIONS.sort(key=lambda combo: (combo["source"], combo["unlabelled"], combo["augment"]))


def _name(combo: dict) -> str:
    return (f"{combo['arch']}-{combo['source']}-{'unl' if combo['unlabelled'] else 'nounl'}-"
            f"unsup{int(combo['use_unsup'])}-aug{combo['augment']}-m{combo['members']}")


def write_combination(root: Path, combo: dict) -> None:
    """params.yaml of the tiny project for one combination (every other key as committed)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    arch = ARCHS[combo["arch"]]
    params.update({"epochs": 1, "use_unsup": combo["use_unsup"], "augment_size": combo["augment"],
                   "kernel_sizes": arch["kernel_sizes"]})
    params["data"].update({"text_column": "review", "label_column": "sentiment",
                           "train": "train.csv", "test": "test.csv", "unlabelled": "",
                           **DATA[combo["source"], combo["unlabelled"]]})
    params["vocab"].update(max_size=200, min_freq=1, max_len=40)
    params["teacher"].update(max_len=32, head_tokens=8, batch_size=16)
    params["student"].update(embed_dim=16, num_filters=8, ngram_order=2, ngram_buckets=64,
                             hidden_size=8, layers=1, max_len=16, head_tokens=4,
                             members=combo["members"], **arch["student"])
    # fp32 and one thread: bf16 autocast is slow on tiny CPU models, and the machine is shared.
    params["teacher"].update(precision="fp32")
    params["train"].update(batch_size=16, precision="fp32", threads=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def build_project(root: Path, teacher: Path) -> Path:
    """A tiny DVC project in `root` with the four data sets and the tiny teacher; nothing run."""
    for code in ("stages", "kd"):  # the stages run `python -m stages.<name>`: this copy's kd
        shutil.copytree(REPO / code, root / code, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    write_tarball(root / "data/raw/aclImdb_v1.tar.gz", reviews_per_folder=15, unsup=10)
    # The same labelled reviews (same seed) without aclImdb/train/unsup/: the labelled splits
    # keep their bytes, so DVC's run cache scores them once for both tarballs.
    write_tarball(root / "data/raw/aclImdb_labelled.tar.gz", reviews_per_folder=15, unsup=0)
    for folder, unlabelled in (("reviews", True), ("labelled", False)):
        write_rows(root / "data" / folder / "train.csv", make_rows(30, seed=1), "csv")
        write_rows(root / "data" / folder / "test.csv", make_rows(16, seed=2), "csv")
        if unlabelled:
            write_rows(root / "data" / folder / "unlabelled.csv",
                       [{"review": row["review"]} for row in make_rows(10, seed=3)], "csv")
    shutil.copytree(teacher, root / "models/teacher")
    run(root, "dvc", "init", "-q", "--no-scm")
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_teacher) -> Path:
    return build_project(tmp_path_factory.mktemp("combinations"), tiny_teacher)


def test_the_design_covers_every_pair():
    levels = {factor: {combo[factor] for combo in COMBINATIONS} for factor in FACTORS}
    assert levels["arch"] == set(ARCHS) and levels["members"] == {1, 2}
    assert all(len(values) == (4 if factor == "arch" else 2) for factor, values in levels.items())
    for first, second in itertools.combinations(FACTORS, 2):
        met = {(combo[first], combo[second]) for combo in COMBINATIONS}
        assert met == set(itertools.product(levels[first], levels[second])), (first, second)
    assert len({_name(combo) for combo in COMBINATIONS}) == len(COMBINATIONS) == 8


def targets(combo: dict) -> list[str]:
    """What a run reproduces: `export`, and `evaluate` on each arch's ensemble (the rows with
    two members, one an arch). `evaluate` (and the labels-only twin it needs) is not in DVC's
    run cache and reads every student alike: once an arch keeps the test in minutes."""
    return ["evaluate", "export"] if combo["members"] == 2 else ["export"]


@pytest.mark.parametrize("combo", COMBINATIONS, ids=_name)
def test_a_combination_runs_to_export(project, combo):
    write_combination(project, combo)
    result = run(project, "dvc", "repro", *targets(combo), check=False)
    assert result.returncode == 0, f"{_name(combo)}:\n{result.stdout[-3000:]}\n{result.stderr}"
    exported = json.loads((project / "models/export/metadata.json").read_text())
    assert exported["arch"] == ARCHS[combo["arch"]]["student"]["arch"]
    model, meta = load_checkpoint(project / "models/student/best.safetensors")
    assert (type(model) is Ensemble) == (combo["members"] == 2)
    assert (meta["params"]["kernel_sizes"] == []) == (combo["arch"] == "ngram-only")
    unsup = combo["use_unsup"] and combo["unlabelled"]
    assert meta["transfer_set"] == ["unsup"] * unsup + ["augment"] * bool(combo["augment"])
    if combo["use_unsup"] and not combo["unlabelled"] and "Running stage 'distill'" in \
            result.stdout:
        assert "the unsup split holds no reviews: the transfer set goes without it" in \
            result.stdout
    if "evaluate" in targets(combo):
        metrics = json.loads((project / "reports/metrics.json").read_text())
        assert metrics["test_reviews"] == (16 if combo["source"] == "files" else 30)
        for student in ("student", "student_no_kd"):
            assert 0 <= metrics[student]["accuracy"] <= 1
            assert metrics[student]["params"] == count_parameters(model)  # twins alike


def test_a_refused_combination_stops_before_any_work_and_loses_nothing(project):
    """The TextCNN without convolutions and without its n-gram branch has no features: refused
    with both keys named, before any training; what earlier runs made stays (DVC removes the
    failing stage's outputs from the workspace, and its cache gives them back)."""
    combo = COMBINATIONS[-1]
    write_combination(project, combo)
    run(project, "dvc", "repro", *targets(combo))  # nothing to do after the runs above
    before = {path: path.read_bytes() for folder in ("data", "models")
              for path in (project / folder).rglob("*") if path.is_file()}
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["kernel_sizes"], params["student"]["ngram_order"] = [], 0
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run(project, "dvc", "repro", *targets(combo), check=False)
    assert result.returncode != 0
    assert "`kernel_sizes` = [] is not allowed" in result.stderr
    assert "student.ngram_order > 0" in result.stderr
    assert "Epoch 1/1" not in result.stdout  # no training started
    run(project, "dvc", "checkout", "-q")
    after = {path: path.read_bytes() for folder in ("data", "models")
             for path in (project / folder).rglob("*") if path.is_file()}
    assert after == before


def test_every_run_is_kept_and_comes_back_from_the_run_cache(project):
    """Back to the first combination after all the others: every stage's outputs come from the
    run cache; only `evaluate`, which DVC never caches (its outputs are in git), runs again."""
    combo = COMBINATIONS[0]
    write_combination(project, combo)
    result = run(project, "dvc", "repro", *targets(combo))
    ran = [line for line in result.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["Running stage 'evaluate':"] * ("evaluate" in targets(combo)), result.stdout
    exported = json.loads((project / "models/export/metadata.json").read_text())
    assert exported["arch"] == ARCHS[combo["arch"]]["student"]["arch"]
