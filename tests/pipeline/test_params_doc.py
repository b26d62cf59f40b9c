"""docs/params.md, the generated reference of params.yaml (`tools/params_doc.py`)."""

import importlib.util

from helpers import REPO as ROOT
from kd.params import SECTIONS, Params

_spec = importlib.util.spec_from_file_location("params_doc", ROOT / "tools" / "params_doc.py")
params_doc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(params_doc)


def test_the_committed_reference_is_current():
    assert (ROOT / "docs" / "params.md").read_text() == params_doc.render(ROOT), \
        "docs/params.md is stale: run python tools/params_doc.py"


def test_every_key_has_a_row_and_a_meaning():
    keys = [name for name in Params.model_fields if name not in SECTIONS]
    keys += [f"{section}.{name}" for section, model in SECTIONS.items()
             for name in model.model_fields]
    comments = params_doc.yaml_comments((ROOT / "params.yaml").read_text())
    page = params_doc.render(ROOT)
    for key in keys:
        assert f"| `{key}` |" in page
        assert comments.get(key) or params_doc.UNCOMMENTED.get(key), f"{key} means nothing"
    # A fallback that params.yaml now comments is dead text: remove it.
    assert [key for key in params_doc.UNCOMMENTED if comments.get(key)] == []


def test_comments_are_read_by_key_and_section():
    comments = params_doc.yaml_comments("alpha: 0.5  # weight\nkernel_sizes:\n- 3\n"
                                        "train:   # the student's\n  lr: 0.001\n"
                                        "  seed: 13   # its seed\n")
    assert comments == {"alpha": "weight", "kernel_sizes": "", "train": "the student's",
                        "train.lr": "", "train.seed": "its seed"}
