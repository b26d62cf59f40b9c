"""Every stage depends on the code it runs: the stage's script and every `kd` module it imports,
directly or through another module. A module missing from `deps` would let an edit to it leave
the stage's outputs stale, with `dvc status` clean; one it does not import would rerun it for
nothing."""

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO as ROOT

APP = r"kd(\.\w+)+:\w+"  # module:factory, as uvicorn takes it
PIPELINES = [ROOT / "dvc.yaml", ROOT / "teachers" / "dvc.yaml"]


def kd_modules(script: Path) -> set[str]:
    """The `kd` modules a script imports, transitively, as paths relative to the root. Package
    `__init__.py` files hold only a docstring (`test_packages_hold_no_code`): left out."""
    found, todo = set(), [script]
    while todo:
        for node in ast.walk(ast.parse(todo.pop().read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kd"):
                # `from kd.student import train` imports a module; `from kd.state import x`, a name.
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("kd.")]
            elif isinstance(node, ast.Constant) and re.fullmatch(APP, str(node.value)):
                names = [node.value.split(":")[0]]  # an app a subprocess serves (uvicorn)
            else:
                continue
            for name in names:
                path = ROOT / (name.replace(".", "/") + ".py")
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
    script = "stages/{}.py".format(re.search(r"python -m stages\.(\w+)", stage["cmd"]).group(1))
    deps = {dep for dep in stage["deps"] if isinstance(dep, str)}
    assert script in deps
    # Exactly: a module the stage does not import would rerun it for nothing when edited.
    assert sorted(dep for dep in deps if dep.startswith("kd/")) == sorted(kd_modules(ROOT / script))


def test_packages_hold_no_code():
    for init in (ROOT / "kd").rglob("__init__.py"):
        body = ast.parse(init.read_text()).body
        assert len(body) <= 1 and all(isinstance(node, ast.Expr) for node in body), init


def test_imports_are_followed_through_modules():
    # distill imports kd.student.registry, which imports kd.student.models: both are its code.
    assert {"kd/student/registry.py", "kd/student/models.py"} <= kd_modules(
        ROOT / "stages" / "distill.py")


@pytest.mark.parametrize("stage", stages())
def test_a_stage_runs_the_kd_beside_it(stage, tmp_path):
    # `dvc exp run --queue` runs a snapshot of the code in a copy of the repository: its stages
    # must import that copy's kd, not the one `pip install -e .` points at.
    for code in ("stages", "kd"):
        shutil.copytree(ROOT / code, tmp_path / code, ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "kd/__init__.py", "a") as init:
        init.write("raise SystemExit('the copy of kd')\n")
    command = re.search(r"python -m stages\.\w+", stage["cmd"]).group(0)
    result = subprocess.run(command.replace("python", sys.executable, 1).split(), cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 1 and "the copy of kd" in result.stderr
