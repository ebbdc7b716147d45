"""Plugin loading: third-party drivers via entry points, clashes, broken plugins, disable/safe mode."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest

from meterhub.plugins import StartupError, driver_registry, list_plugins, new_plugin_manager

PLUGIN_CODE = '''
from meterhub.driver import Driver
from meterhub.hookspecs import hookimpl

MANIFEST = {{"key": "{key}", "vendor": "Test", "model": "T1", "protocols": ["modbus-tcp"],
            "capabilities": ["relay"], "config_schema": {{"type": "object", "properties": {{}}}}}}


@hookimpl
def register_drivers():
    return [Driver(MANIFEST)]
'''


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """Install a throwaway distribution (package + dist-info with an entry point) on sys.path."""
    monkeypatch.syspath_prepend(str(tmp_path))
    installed = []

    def install(module: str, code: str, dist: str = "meterhub-test-plugin", version: str = "1.2.3") -> None:
        (tmp_path / module).mkdir()
        (tmp_path / module / "__init__.py").write_text(textwrap.dedent(code))
        info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[meterhub.plugins]\n{module} = {module}\n")
        installed.append(module)
        importlib.invalidate_caches()

    yield install
    for module in installed:
        sys.modules.pop(module, None)


def test_third_party_driver_is_loaded(install_plugin):
    install_plugin("tp_meter", PLUGIN_CODE.format(key="tp_meter"))
    pm = new_plugin_manager()
    registry = driver_registry(pm)
    assert registry["tp_meter"].model == "T1"
    assert {"acrel_dtsd1352", "acrel_adf300", "water_valve"} <= set(registry)
    row = next(r for r in list_plugins(pm) if r["name"] == "tp_meter")
    assert row["version"] == "1.2.3" and row["hooks"] == ["register_drivers"]


def test_duplicate_driver_key_names_both_plugins(install_plugin):
    install_plugin("tp_clash", PLUGIN_CODE.format(key="acrel_dtsd1352"))
    with pytest.raises(StartupError, match=r"Duplicate driver key 'acrel_dtsd1352' from plugins") as exc:
        driver_registry(new_plugin_manager())
    assert "tp_clash" in str(exc.value) and "and acrel_dtsd1352" + "" in str(exc.value).replace(
        "plugins acrel_dtsd1352 and tp_clash", "plugins tp_clash and acrel_dtsd1352")


def test_broken_plugin_gives_clear_startup_error(install_plugin):
    install_plugin("tp_broken", "import no_such_module_xyz\n")
    with pytest.raises(StartupError, match=r"'tp_broken'.*ModuleNotFoundError.*no_such_module_xyz") as exc:
        new_plugin_manager()
    assert "METERHUB_DISABLE_PLUGINS=tp_broken" in str(exc.value)


def test_disable_and_safe_mode(install_plugin, monkeypatch):
    install_plugin("tp_broken", "raise RuntimeError('boom')\n")
    install_plugin("tp_meter", PLUGIN_CODE.format(key="tp_meter"), dist="meterhub-other-plugin")
    monkeypatch.setenv("METERHUB_DISABLE_PLUGINS", "tp_broken, water_valve")
    registry = driver_registry(new_plugin_manager())
    assert "tp_meter" in registry and "water_valve" not in registry
    monkeypatch.setenv("METERHUB_DISABLE_PLUGINS", "")
    monkeypatch.setenv("METERHUB_SAFE_MODE", "1")
    registry = driver_registry(new_plugin_manager())
    assert "tp_meter" not in registry and "water_valve" in registry


def test_core_does_not_import_drivers_package():
    """Built-ins come through entry points: no meterhub module imports drivers.* directly."""
    from pathlib import Path

    import meterhub

    root = Path(meterhub.__file__).parent
    offenders = [p for p in root.rglob("*.py") if "from drivers" in p.read_text() or "import drivers" in p.read_text()]
    assert offenders == []
