"""Translations: the zh_CN catalog covers every message of the sources, keeps placeholders, is compiled,
and the app serves it (Chinese by default, English on request, per-operator language switch).

To fix a failure of the catalog tests run ``.venv/bin/python webui/translations/update.py``, translate the
empty ``msgstr`` entries of ``webui/translations/zh_Hans_CN/LC_MESSAGES/messages.po`` and run it again (it compiles
the .mo, which is committed so that ``make run`` needs no compile step).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from meterhub.app import create_app
from tests.conftest import csrf_token

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "webui" / "translations"
BABEL_CFG = ROOT / "webui" / "babel.cfg"
LOCALES = ("zh_Hans_CN",)  # Babel parses the app's "zh_CN" to zh_Hans_CN and Flask-Babel loads that folder
PYBABEL = [str(Path(sys.executable).with_name("pybabel"))] if Path(sys.executable).with_name("pybabel").exists() \
    else [sys.executable, "-m", "babel.messages.frontend"]
FIX = "run `.venv/bin/python webui/translations/update.py`, translate the empty msgstr entries, run it again"


def _po_path(locale: str) -> Path:
    return TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po"


def _read_po(path: Path):
    with open(path, "rb") as f:
        return read_po(f)


def _ids(message) -> tuple[str, ...]:
    return tuple(message.id) if isinstance(message.id, (tuple, list)) else (message.id,)  # read_mo: plural as a list


def _strings(message) -> tuple[str, ...]:
    return tuple(message.string) if isinstance(message.string, (tuple, list)) else (message.string,)


def _where(message) -> str:
    return ", ".join(f"{path}:{line}" for path, line in message.locations[:3])


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """The messages of the sources as they are now (not the committed messages.pot)."""
    pot = tmp_path_factory.mktemp("i18n") / "messages.pot"
    subprocess.run([*PYBABEL, "-q", "extract", "-F", str(BABEL_CFG), "-k", "_l", "-k", "lazy_gettext", "-k", "lazy_pgettext:1c,2",
                    "-o", str(pot), "."], cwd=ROOT, check=True)
    return _read_po(pot)


def test_babel_cfg_covers_the_sources(extracted):
    files = {path.split("/")[0] for message in extracted for path, _ in message.locations}
    assert {"meterhub", "webui"} <= files, files
    paths = {path for message in extracted for path, _ in message.locations}
    assert any(p.startswith("webui/templates/") for p in paths)
    assert not any(p.startswith((".venv/", "tests/", "bench/")) or "node_modules" in p for p in paths)
    assert len([m for m in extracted if m.id]) > 300


@pytest.mark.parametrize("locale", LOCALES)
def test_every_message_is_translated(extracted, locale):
    catalog = _read_po(_po_path(locale))
    missing = []
    for message in extracted:
        if not message.id:
            continue
        found = catalog.get(message.id, message.context)
        if found is None or found.fuzzy or not all(s.strip() for s in _strings(found)):
            missing.append(f"  {_ids(message)[0]!r}  ({_where(message)})")
    assert not missing, (f"{len(missing)} message(s) without a {locale} translation ({FIX}):\n"
                         + "\n".join(missing))


@pytest.mark.parametrize("locale", LOCALES)
def test_no_fuzzy_or_obsolete_leftovers(locale):
    catalog = _read_po(_po_path(locale))
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert not fuzzy, f"fuzzy entries in {locale} (check them, then remove the fuzzy flag): {fuzzy}"


_PERCENT = re.compile(r"%(?:\((\w+)\))?[-#0 +]*\d*(?:\.\d+)?([sdifrxXeEgGc%])")
_BRACE = re.compile(r"(?<!\{)\{(\w*)(?:[!:][^{}]*)?\}(?!\})")


def _placeholders(text: str, message) -> Counter:
    found = Counter()
    if "python-format" in message.flags:
        found.update(f"%({name}){kind}" if name else f"%{kind}" for name, kind in _PERCENT.findall(text)
                     if kind != "%")
    found.update("{" + name + "}" for name in _BRACE.findall(text))
    return found


@pytest.mark.parametrize("locale", LOCALES)
def test_placeholders_match(locale):
    catalog = _read_po(_po_path(locale))
    wrong = []
    for message in catalog:
        if not message.id:
            continue
        expected = _placeholders(_ids(message)[0], message)
        for string in _strings(message):
            if string and _placeholders(string, message) != expected:
                wrong.append(f"  {_ids(message)[0]!r} -> {string!r}")
    assert not wrong, "placeholders differ between msgid and translation:\n" + "\n".join(wrong)


@pytest.mark.parametrize("locale", LOCALES)
def test_compiled_catalog_is_up_to_date(tmp_path, locale):
    committed = TRANSLATIONS / locale / "LC_MESSAGES" / "messages.mo"
    assert committed.exists(), f"{committed} is missing: run `pybabel compile -d webui/translations` and commit it"
    fresh = tmp_path / "messages.mo"
    subprocess.run([*PYBABEL, "-q", "compile", "-i", str(_po_path(locale)), "-o", str(fresh), "-l", locale],
                   cwd=ROOT, check=True)

    def load(path: Path) -> dict:
        with open(path, "rb") as f:
            return {(m.context, _ids(m)): _strings(m) for m in read_mo(f) if m.id}

    old, new = load(committed), load(fresh)
    stale = sorted(str(k[1][0]) for k in old.keys() ^ new.keys()) + sorted(
        str(k[1][0]) for k in old.keys() & new.keys() if old[k] != new[k])
    assert not stale, (f"{committed.relative_to(ROOT)} is older than the .po "
                       f"(run `pybabel compile -d webui/translations` and commit it); differs at: {stale[:20]}")


def test_python_format_translations_render():
    """Every %(name)s translation formats with the msgid's arguments (no KeyError/ValueError at runtime)."""
    catalog = _read_po(_po_path(LOCALES[0]))
    for message in catalog:
        if message.id and "python-format" in message.flags:
            names = {name: 1 for name, _ in _PERCENT.findall(_ids(message)[0]) if name}
            for string in _strings(message):
                string % names  # raises if broken


# ---------------------------------------------------------------------------------------------- the app


@pytest.fixture()
def zh_app(app):
    """The same app with the production default locale (conftest sets "en" for the other tests)."""
    zh = create_app({**{k: app.config[k] for k in ("TESTING", "SECRET_KEY", "DATABASE_URL", "REDIS_URL",
                                                   "REDIS_NAMESPACE", "MQTT_URL")},
                     "BABEL_DEFAULT_LOCALE": "zh_CN"})
    yield zh
    from meterhub.extensions import db

    with zh.app_context():
        db.engine.dispose()


def test_login_page_is_chinese_by_default(zh_app):
    page = zh_app.test_client().get("/login").get_data(as_text=True)
    assert 'lang="zh-CN"' in page
    assert "登录" in page and "用户名" in page and "密码" in page, page
    assert "Sign in" not in page and "Username" not in page


def test_login_page_in_english_on_request(zh_app):
    page = zh_app.test_client().get("/login", headers={"Accept-Language": "en-US,en;q=0.9"}).get_data(as_text=True)
    assert "Sign in" in page and "Username" in page
    assert "登录" not in page


def test_browser_asking_for_chinese_gets_chinese_even_if_default_is_english(client):
    page = client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}).get_data(as_text=True)
    assert "登录" in page and "Sign in" not in page


def test_flash_and_error_messages_are_translated(zh_app):
    c = zh_app.test_client()
    token = csrf_token(c)
    page = c.post("/login", data={"username": "nobody-here", "password": "whatever123", "csrf_token": token})
    assert page.status_code == 401
    assert "用户名或密码错误" in page.get_data(as_text=True)


def test_language_switch_follows_the_signed_in_operator(zh_app, group):
    username, password, _ = group.operator("group_admin", all_properties=True)

    def sign_in(c):
        response = c.post("/login", data={"username": username, "password": password, "csrf_token": csrf_token(c)})
        assert response.status_code == 302, response.get_data(as_text=True)

    c = zh_app.test_client()
    sign_in(c)
    page = c.get("/").get_data(as_text=True)
    assert "退出登录" in page and "Sign out" not in page

    token = csrf_token(c, "/")
    response = c.post("/lang/en", data={"csrf_token": token, "next": "/"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/")
    page = c.get("/").get_data(as_text=True)
    assert "Sign out" in page and "退出登录" not in page

    # stored on the operator: a new session (another browser) opens in English too
    other = zh_app.test_client()
    sign_in(other)
    assert "Sign out" in other.get("/").get_data(as_text=True)

    # an unknown language changes nothing; switching back gives Chinese
    c.post("/lang/xx", data={"csrf_token": token})
    assert "Sign out" in c.get("/").get_data(as_text=True)
    c.post("/lang/zh_CN", data={"csrf_token": token})
    page = c.get("/").get_data(as_text=True)
    assert "退出登录" in page and 'lang="zh-CN"' in page


def test_language_switch_requires_csrf(zh_app):
    c = zh_app.test_client()
    assert c.post("/lang/en").status_code == 400


def test_language_switch_before_sign_in_uses_the_session(zh_app):
    c = zh_app.test_client()
    c.post("/lang/en", data={"csrf_token": csrf_token(c), "next": "/login"})
    assert "Sign in" in c.get("/login").get_data(as_text=True)
