"""Every stage depends on the code it runs: the stage's script and every `kd` module it imports,
directly or through another module. A module missing from `deps` would let an edit to it leave
the stage's outputs stale, with `dvc status` clean."""

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PIPELINES = [ROOT / "dvc.yaml", ROOT / "teachers" / "dvc.yaml"]


def kd_modules(script: Path) -> set[str]:
    """The `kd` modules a script imports, transitively, as paths relative to the root."""
    found, todo = set(), [script]
    while todo:
        for node in ast.walk(ast.parse(todo.pop().read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kd"):
                names = ([f"{node.module}.{alias.name}" for alias in node.names]
                         if node.module == "kd" else [node.module])
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("kd.")]
            else:
                continue
            for name in names:
                path = ROOT / "stages" / (name.replace(".", "/") + ".py")
                if path.is_file() and str(path.relative_to(ROOT)) not in found:
                    found.add(str(path.relative_to(ROOT)))
                    todo.append(path)
    return found


def stages():
    for pipeline in PIPELINES:
        for name, stage in yaml.safe_load(pipeline.read_text())["stages"].items():
            yield pytest.param(stage.get("do", stage), id=f"{pipeline.parent.name}:{name}")


@pytest.mark.parametrize("stage", stages())
def test_a_stage_depends_on_every_module_it_imports(stage):
    script = re.search(r"python (stages/\S+\.py)", stage["cmd"]).group(1)
    deps = {dep for dep in stage["deps"] if isinstance(dep, str)}
    assert script in deps
    assert sorted(kd_modules(ROOT / script) - deps) == []


def test_imports_are_followed_through_modules():
    # distill imports kd.students, which imports kd.model: both are the stage's code.
    assert {"stages/kd/students.py", "stages/kd/model.py"} <= kd_modules(
        ROOT / "stages" / "distill.py")
