"""Import direction (STYLE.md): web → modules → core services → storage/protocols. The core — everything under
``meterhub/`` and ``drivers/`` except a feature module's ``views.py`` — never imports the web layer ``webui``
(the app reaches it through the ``web_app`` plugin hook), and ``meterhub/api/blueprint.py`` does not import the
resource modules that add routes to it, nor they it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ("meterhub", "drivers")


def _may_import_web(path: Path, root: Path) -> bool:
    """A feature module's views (``meterhub/modules/<module>/views.py``, ``views_*.py`` or a ``views`` package)
    are part of the web side."""
    parts = path.relative_to(root).parts
    return parts[:2] == ("meterhub", "modules") and (
        path.name == "views.py" or path.name.startswith("views_") or "views" in parts[3:-1])


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Every module ``path`` imports (absolute names; ``importlib.import_module("x")`` with a literal too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in
              ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.append((node.lineno, node.args[0].value))
    return found


def web_imports(paths: list[Path], root: Path = ROOT) -> list[str]:
    """``file:line imports webui...`` for every import of the web layer outside a module's views."""
    found = {f"{p.relative_to(root)}:{line}": name for p in paths if not _may_import_web(p, root)
             for line, name in reversed(imported_modules(p, root)) if name == "webui" or name.startswith("webui.")}
    return [f"{where} imports {name}" for where, name in found.items()]


def test_the_core_never_imports_the_web_layer():
    paths = [p for top in CORE for p in sorted((ROOT / top).rglob("*.py"))]
    assert len(paths) > 100
    offenders = web_imports(paths)
    assert not offenders, "the core imports webui (move the code to webui/ or a module's views.py):\n" + "\n".join(
        offenders)


def test_the_check_sees_every_form_of_import(tmp_path):
    core = tmp_path / "meterhub" / "alarms"
    core.mkdir(parents=True)
    views = tmp_path / "meterhub" / "modules" / "prepaid"
    views.mkdir(parents=True)
    samples = {
        core / "a.py": "import webui\n",
        core / "b.py": "from webui.util import permission_required\n",
        core / "c.py": "def f():\n    from webui import alarms\n",
        core / "d.py": "import importlib\nimportlib.import_module('webui.portal')\n",
        core / "ok.py": "from ..hookspecs import hookimpl\nimport webuix\n",
        views / "views.py": "from webui.util import permission_required\n",
        views / "views_monitor.py": "from webui.format import money\n",
        views / "service.py": "from webui.format import money\n",
    }
    for path, text in samples.items():
        path.write_text(text)
    found = web_imports(sorted(samples), tmp_path)
    assert sorted({f.split(":")[0].rsplit("/", 1)[-1] for f in found}) == ["a.py", "b.py", "c.py", "d.py", "service.py"]


def test_the_api_blueprint_and_its_resource_modules_import_in_one_direction():
    api = ROOT / "meterhub" / "api"
    blueprint = {name for _, name in imported_modules(api / "blueprint.py")}
    assert not any(name.startswith("meterhub.api.views") for name in blueprint), blueprint
    for views in sorted(api.glob("views_*.py")):
        names = {name for _, name in imported_modules(views)}
        assert not any(name.startswith("meterhub.api.blueprint") for name in names), (views.name, names)
