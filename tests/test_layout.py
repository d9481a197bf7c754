"""The package's shape: layers that import only downwards, no private names across modules, small modules with
`__all__`, and an installable package."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "docbot"
ENTRY_POINTS = {"rag_chat": REPO / "rag_chat.py", "fine_tuning": REPO / "fine_tuning.py"}
# Who may import whom: a module of a layer imports only from the layers listed for it (and the shared base).
BASE = {"docbot.config", "docbot.errors", "docbot.files"}
LAYERS = {"docbot.providers": set(), "docbot.rag": {"docbot.providers"},
          "docbot.tuning": {"docbot.providers", "docbot.rag"}}
HIGHER = {"docbot.bot", "docbot.repl", "docbot", *ENTRY_POINTS, "fine_tuning_config"}


def modules() -> dict[str, Path]:
    found = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for p in PACKAGE.rglob("*.py")}
    return {**found, **ENTRY_POINTS}


def imports(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a module, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names if f"{base}.{a.name}" in modules()]
    return out


def layer(module: str) -> str | None:
    return next((top for top in LAYERS if module == top or module.startswith(top + ".")), None)


def test_lower_layers_never_import_higher_ones():
    wrong = []
    for name, path in modules().items():
        own = layer(name)
        if own is None:
            continue
        for line, target in imports(name, path):
            if not (target.startswith("docbot") or target in HIGHER):
                continue  # the standard library and third-party packages
            allowed = target in BASE or layer(target) in LAYERS[own] | {own}
            if target in HIGHER or not allowed:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {name} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_no_module_reads_another_modules_private_names():
    """`x._name` is read only where `_name` is defined (an attribute or function of that module's own classes),
    and no `from m import _name` crosses modules."""
    wrong = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        own |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")) \
                        and node.attr not in own:
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno}: reads .{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                wrong += [f"{path.relative_to(REPO)}:{node.lineno}: imports {a.name}" for a in node.names
                          if a.name.startswith("_")]
    assert not wrong, "\n".join(wrong)


def test_modules_are_small_declare_their_exports_and_use_no_assert():
    wrong = []
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        if len(text.splitlines()) > 400:
            wrong.append(f"{name}: {len(text.splitlines())} lines (at most 400)")
        if not any(isinstance(n, (ast.Assign, ast.AnnAssign)) and "__all__" in ast.dump(n) for n in tree.body):
            wrong.append(f"{name}: no __all__")
        wrong += [f"{name}:{n.lineno}: assert (raise a DocbotError instead)" for n in ast.walk(tree)
                  if isinstance(n, ast.Assert)]
    assert not wrong, "\n".join(wrong)


def test_the_facade_is_thin():
    assert len((PACKAGE / "bot.py").read_text(encoding="utf-8").splitlines()) <= 250


def test_pyproject_and_requirements_name_the_same_versions():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["test"])
    required = {line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()}
    assert declared == required - {""}
    assert "torch==2.13.0" in declared and project["scripts"]["docbot"] == "docbot.repl:main"


@pytest.mark.slow
def test_installs_into_a_fresh_environment_and_imports_from_anywhere(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "-e", str(REPO)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DOCBOT_CONFIG")}
    probe = subprocess.run(
        [str(python), "-c", "import docbot, rag_chat; from docbot.config import load_config, settings_file; "
         "print(docbot.__file__); print(settings_file()); print(load_config().top_k)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    where, settings, top_k = probe.stdout.split()
    assert Path(where) == PACKAGE / "__init__.py" and settings == "None" and top_k == "3"  # package defaults
    (elsewhere / "fine_tuning_config.py").write_text("TOP_K = 3\n", encoding="utf-8")
    started = subprocess.run([str(venv / "bin" / "docbot"), "--docs", str(elsewhere / "missing")],
                             cwd=elsewhere, env={**env, "DOCBOT_HISTORY": str(tmp_path / "history")},
                             input="", capture_output=True, text=True, timeout=300)
    first = started.stderr.splitlines()[0]
    assert first == f"settings: {elsewhere / 'fine_tuning_config.py'}", started.stderr[-2000:]
    assert "Traceback" not in started.stderr
