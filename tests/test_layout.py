"""The package's imports go one way: config -> tokenizer -> model -> weights -> generation ->
{chat, train} -> cli. A module never imports from a layer to its right."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lucidlm"
LAYERS = ["errors", "files", "config", "default_model", "gguf_file", "tokenizer", "model", "weights", "generation",
          "options", "chat", "complete", "train", "cli"]


def layer_of(module: str) -> int | None:
    """'lucidlm.model.attention' -> the index of 'model'."""
    parts = module.split(".")
    if parts[0] != "lucidlm" or len(parts) < 2:
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def imports_of(path: Path) -> list[str]:
    module = "lucidlm." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append(target)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def test_imports_only_go_left():
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in ("__init__.py", "__main__.py") and path.parent == PACKAGE:
            continue  # the public facade and the entry point may name anything, lazily
        own = layer_of("lucidlm." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for target in imports_of(path):
            other = layer_of(target)
            if own is not None and other is not None and other > own:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert not wrong, wrong


def test_importing_lucidlm_is_cheap_and_side_effect_free():
    import subprocess
    import sys

    code = "import sys, lucidlm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
