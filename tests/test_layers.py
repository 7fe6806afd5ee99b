"""The import layering: the runtime library does not depend on the offline tools or the benchmarks, the
models and data do not depend on the training engine, and stages are reached only through the registry."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from salt.objectives.base import Objective
from salt.stages import STAGES, build_objective, objective_class

REPO = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside a function."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        for module in imported_modules(path):
            if module.split(".")[0] in forbidden or module.startswith(forbidden):
                found.append(f"{path.relative_to(REPO)} imports {module}")
    return found


def test_offenders_finds_a_planted_import(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from dataprep.shards import x\n")
    assert imported_modules(path) == {"dataprep.shards"}


def test_salt_does_not_import_the_offline_tools_or_benchmarks() -> None:
    assert offenders("salt", ("dataprep", "benchmarks")) == []


@pytest.mark.parametrize("package", ["salt/models", "salt/data", "salt/masks", "salt/objectives"])
def test_models_data_and_objectives_do_not_import_the_engine(package: str) -> None:
    assert offenders(package, ("salt.engine", "deepspeed")) == []


def test_the_trainer_and_flops_name_no_stage_class() -> None:
    names = {objective_class(s).__name__ for s in STAGES}
    for path in (REPO / "salt/engine/trainer.py", REPO / "salt/engine/deepspeed_setup.py", REPO / "salt/flops.py"):
        text = path.read_text()
        assert not [n for n in names if n in text], path


def test_every_stage_resolves_to_an_objective() -> None:
    for stage in STAGES:
        cls = objective_class(stage)
        assert issubclass(cls, Objective) and cls is not Objective
        for method in ("from_config", "trainable_modules", "exported_encoder", "step_flops", "forward"):
            assert getattr(cls, method) is not getattr(Objective, method), (stage, method)
    with pytest.raises(ValueError, match="unknown stage 'mae'"):
        objective_class("mae")


def test_built_stages_export_their_trained_encoder() -> None:
    import torch

    from salt.config import load_config

    for stage in ("teacher", "vjepa", "supervised"):
        cfg = load_config(REPO / "salt/configs/tiny.yaml", [f"--stage={stage}", "--model.depth=1"])
        with torch.device("meta"):
            obj = build_objective(cfg, num_classes=4)
        trained = {id(p) for m in obj.trainable_modules() for p in m.parameters()}
        assert {id(p) for p in obj.exported_encoder().parameters()} <= trained, stage


def test_loaders_are_opened_in_one_place() -> None:
    """Only salt/data/loaders.py constructs a loader class (tests may build them directly)."""
    found = []
    for package in ("salt", "dataprep", "benchmarks"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name in ("loaders.py", "dali_loader.py", "reference_loader.py"):
                continue
            text = path.read_text()
            found += [f"{path.relative_to(REPO)}: {n}" for n in ("DaliVideoLoader(", "ReferenceVideoLoader(")
                      if n in text]
    assert found == []


def import_graph(packages: tuple[str, ...] = ("salt", "dataprep", "benchmarks")) -> dict[str, set[str]]:
    """module -> the package's modules it imports (at top level, under TYPE_CHECKING or in a function)."""
    files = {}
    for package in packages:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            files[name] = path
    graph = {}
    for name, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_import_cycles_are_found():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_layering_reads_one_way():
    """No import circle anywhere, not even through a lazy or a TYPE_CHECKING import (the shard job's library,
    its command line and its Ray runner; the config and the stage registry were two)."""
    assert import_cycles(import_graph()) == []
