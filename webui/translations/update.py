"""Refresh the translation catalogs: extract -> messages.pot, update zh_Hans_CN/LC_MESSAGES/messages.po, compile messages.mo.

Run from anywhere:  .venv/bin/python webui/translations/update.py [--check]

``--check`` only reports the msgids of the current sources that have no zh_CN translation (exit 1 if any);
without it, new msgids are added to the .po (empty, to be translated), obsolete ones are dropped, and the
.mo is compiled so that ``make run`` needs no compile step. No network access.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "webui" / "translations"
BABEL_CFG = ROOT / "webui" / "babel.cfg"
POT = TRANSLATIONS / "messages.pot"
LOCALES = ("zh_Hans_CN",)  # what Babel makes of "zh_CN" (Locale.parse); Flask-Babel looks for this folder
KEYWORDS = ("_l", "lazy_gettext", "lazy_pgettext:1c,2")


def pybabel(*args: str) -> None:
    exe = Path(sys.executable).with_name("pybabel")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "babel.messages.frontend"]
    subprocess.run([*cmd, "-q", *args], cwd=ROOT, check=True)


_DATES = re.compile(rb'^"(POT-Creation-Date|PO-Revision-Date): .*$', re.M)


def keep_if_only_dates_changed(path: Path, old: bytes | None) -> None:
    """Avoid commits that only move a header timestamp."""
    if old is not None and path.exists() and _DATES.sub(b"", path.read_bytes()) == _DATES.sub(b"", old):
        path.write_bytes(old)


def extract(pot: Path) -> None:
    """Extract every message of the sources listed in babel.cfg into ``pot``."""
    keywords = [arg for k in KEYWORDS for arg in ("-k", k)]
    pybabel("extract", "-F", str(BABEL_CFG), *keywords, "--no-wrap", "--sort-by-file",
            "--project", "meterhub", "--copyright-holder", "meterhub contributors", "-o", str(pot), ".")


def untranslated(pot: Path, locale: str) -> list[str]:
    from babel.messages.pofile import read_po

    with open(TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f)
    with open(pot, "rb") as f:
        template = read_po(f)
    missing = []
    for message in template:
        if not message.id:
            continue
        found = catalog.get(message.id, message.context)
        strings = found.string if found is not None else None
        if found is None or found.fuzzy or not (all(strings) if isinstance(strings, tuple) else strings):
            missing.append(message.id if isinstance(message.id, str) else message.id[0])
    return missing


def main(argv: list[str]) -> int:
    if "--check" in argv:
        with tempfile.TemporaryDirectory() as tmp:
            pot = Path(tmp) / "messages.pot"
            extract(pot)
            status = 0
            for locale in LOCALES:
                missing = untranslated(pot, locale)
                for msgid in missing:
                    print(f"{locale}: untranslated: {msgid!r}")
                status |= bool(missing)
            return status
    old_pot = POT.read_bytes() if POT.exists() else None
    extract(POT)
    keep_if_only_dates_changed(POT, old_pot)
    for locale in LOCALES:
        po = TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"
        if po.exists():
            old_po = po.read_bytes()
            pybabel("update", "-i", str(POT), "-d", str(TRANSLATIONS), "-l", locale,
                    "--no-fuzzy-matching", "--ignore-obsolete", "--no-wrap")
            keep_if_only_dates_changed(po, old_po)
        else:
            pybabel("init", "-i", str(POT), "-d", str(TRANSLATIONS), "-l", locale, "--no-wrap")
    pybabel("compile", "-d", str(TRANSLATIONS))
    for locale in LOCALES:
        missing = untranslated(POT, locale)
        if missing:
            print(f"{locale}: {len(missing)} messages to translate in "
                  f"webui/translations/{locale}/LC_MESSAGES/messages.po")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
