"""The package's imports go one way: errors -> ... -> config -> tokenizer -> model -> weights ->
generation -> {chat, train} -> cli. A module never imports from a layer to its right, no two
modules import each other (directly or around a loop, function-level imports included), and a
module imports lucidlm modules inside a function only to put off a heavy dependency."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lucidlm"
LAYERS = ["errors", "files", "flags", "config", "default_model", "gguf_file", "hub", "locate", "tokenizer", "model",
          "weights", "generation", "options", "look", "encode", "chat", "complete", "serve", "train", "evaluate", "translate", "ladder", "hf", "cli"]
# Third-party packages slow enough to import that a module using them may be imported lazily.
HEAVY = {"jinja2", "matplotlib", "tqdm", "huggingface_hub", "transformers"}


def module_name(package: Path, path: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_of(package: Path) -> dict[str, Path]:
    return {module_name(package, p): p for p in package.rglob("*.py")}


def imports_of(package: Path, path: Path, known: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported module, inside a function?) for every import statement of one file. `from X
    import name` names the submodule X.name when there is one."""
    module = module_name(package, path)
    base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    target = ".".join(base[: len(base) - child.level + 1] + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    found.append((sub if sub in known else target, nested))
            elif isinstance(child, ast.Import):
                found.extend((alias.name, nested) for alias in child.names)
            visit(child, nested)

    visit(ast.parse(path.read_text()), False)
    return found


def import_graph(package: Path) -> dict[str, set[str]]:
    known = modules_of(package)
    return {name: {target for target, _ in imports_of(package, path, known) if target in known and target != name}
            for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A list of modules that import each other around a loop, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def lazy_imports_without_reason(package: Path) -> list[str]:
    """Function-level imports of the package's own modules whose target imports no heavy package."""
    known = modules_of(package)
    heavy_modules = {name for name, path in known.items()
                     if any(target.split(".")[0] in HEAVY for target, lazy in imports_of(package, path, known)
                            if not lazy)}
    wrong = []
    for name, path in known.items():
        for target, lazy in imports_of(package, path, known):
            if lazy and target in known and target not in heavy_modules:
                wrong.append(f"{name} imports {target} inside a function")
    return wrong


def layer_of(module: str) -> int | None:
    """'lucidlm.model.attention' -> the index of 'model'."""
    parts = module.split(".")
    if parts[0] != "lucidlm" or len(parts) < 2:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def test_imports_only_go_left():
    known = modules_of(PACKAGE)
    wrong = []
    for name, path in known.items():
        if name in ("lucidlm", "lucidlm.__main__"):
            continue  # the public facade and the entry point may name anything, lazily
        own = layer_of(name)
        assert own is not None, f"{name} is in no layer: add its top-level name to LAYERS"
        for target, _ in imports_of(PACKAGE, path, known):
            other = layer_of(target)
            if other is not None and other > own:
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_no_import_cycles():
    assert find_cycle(import_graph(PACKAGE)) is None


def test_lucidlm_modules_are_imported_inside_functions_only_to_put_off_a_heavy_dependency():
    assert lazy_imports_without_reason(PACKAGE) == []


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "lucidlm"
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_the_checks_catch_a_planted_cycle_and_a_planted_lazy_import(tmp_path):
    package = _plant(tmp_path, {
        "__init__.py": "",
        "a.py": "from .b import thing\n",
        "b.py": "def thing():\n    from .c import other\n",
        "c.py": "from .a import thing\n",
        "plot.py": "import matplotlib\n",
        "d.py": "def draw():\n    from .plot import matplotlib\n",
    })
    cycle = find_cycle(import_graph(package))
    assert cycle is not None and set(cycle) == {"lucidlm.a", "lucidlm.b", "lucidlm.c"}
    assert lazy_imports_without_reason(package) == ["lucidlm.b imports lucidlm.c inside a function"]


def test_importing_lucidlm_is_cheap_and_side_effect_free():
    import subprocess
    import sys

    code = "import sys, lucidlm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
