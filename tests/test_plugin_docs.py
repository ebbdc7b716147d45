"""Every hookspec is documented in docs/plugin_hooks.md, with its arguments."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from meterhub import hookspecs

DOC = Path(__file__).resolve().parent.parent / "docs" / "plugin_hooks.md"
HOOKS = sorted(
    name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "meterhub_spec")
)


def test_hooks_found():
    assert "register_drivers" in HOOKS and len(HOOKS) >= 13


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    args = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    headings = re.findall(r"^### (.+)$", DOC.read_text(encoding="utf-8"), re.M)
    assert f"{hook}({args})" in headings, f"docs/plugin_hooks.md needs a '### {hook}({args})' section"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_docstring(hook):
    assert (getattr(hookspecs, hook).__doc__ or "").strip()
