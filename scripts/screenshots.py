"""`make screenshots`: every console page for every demo role at 1440×900 and every portal page on a 390×844
phone, in zh_CN and English, as a person looks at them (issue 16 item 9).

    python scripts/screenshots.py                      # starts `meterhub run` with demo data on free ports
    python scripts/screenshots.py --base-url http://127.0.0.1:5000   # or uses a running demo
    python scripts/screenshots.py --out screenshots --roles admin,cashier --langs en

Pages are found as a person finds them: from the start page, every same-site link (navigation, lists, details)
is followed, breadth first, one page per kind of address (``/prepaid/accounts/12`` and ``/prepaid/accounts/13``
are one page), so a new page shows up without editing this script. Downloads, sign-out and the API are left
out. Writes ``<out>/<lang>/<role>/NN-<page>.png`` (full page), ``<out>/<lang>/portal/...`` and ``<out>/index.md``
(which page is which, and any page that answered an error). Needs Chromium (/usr/bin/chromium) and fonts-noto-cjk.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from urllib.parse import urljoin, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from meterhub.demo_seed import DEMO_OPERATORS, DEMO_PORTAL  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
LANGS = {"zh_CN": "zh-CN", "en": "en-US"}
#: addresses that are not pages to look at (downloads, sign-out, machine interfaces)
SKIP = re.compile(r"(\.(xlsx|csv|pdf|svg|png|json|zip)$|^/api/|^/logout|/logout$|^/static/|/download|/export\.)")
MAX_PAGES = 80


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_demo(instance: Path) -> tuple[subprocess.Popen, str, Path]:
    """`meterhub run` on free ports with its own instance folder; returns (process, base url, log)."""
    ports = {name: _free_port() for name in ("web", "postgres", "redis", "mqtt")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERHUB_")}
    fleet = 20000 + (os.getpid() % 2500) * 4
    env.update(METERHUB_INSTANCE_PATH=str(instance), METERHUB_POSTGRES_PORT=str(ports["postgres"]),
               METERHUB_REDIS_PORT=str(ports["redis"]), METERHUB_MQTT_PORT=str(ports["mqtt"]),
               METERHUB_DEMO_FLEET_PORT=str(fleet))
    log = instance.parent / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "meterhub", "run", "--port", str(ports["web"])], env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
    deadline = time.monotonic() + 600
    while "meterhub is running" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_demo(proc)
            sys.exit(f"the demo did not start; see {log}:\n{log.read_text()[-2000:]}")
        time.sleep(1)
    base = f"http://127.0.0.1:{ports['web']}"
    while True:
        try:
            with socket.create_connection(("127.0.0.1", ports["web"]), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    print(f"demo running at {base}; waiting a minute for live readings and charges", flush=True)
    time.sleep(60)
    return proc, base, log


def stop_demo(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def page_key(path: str) -> str:
    """One screenshot per kind of page: ids become ``N``."""
    return re.sub(r"/\d+(?=/|$)", "/N", path.rstrip("/") or "/")


def slug(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", key.lower()).strip("-") or "home"


def crawl(page, base: str, start: str, prefix: str, shots: Path, limit: int = MAX_PAGES) -> list[tuple[str, str, int]]:
    """Breadth-first over same-site links under ``prefix`` from ``start``; a full-page shot of each new kind of
    page. Returns (file, url, status) per page."""
    seen: set[str] = set()
    queue: deque[str] = deque([start])
    done: list[tuple[str, str, int]] = []
    shots.mkdir(parents=True, exist_ok=True)
    while queue and len(done) < limit:
        url = queue.popleft()
        path = urlsplit(url).path
        key = page_key(path)
        if key in seen:
            continue
        seen.add(key)
        response = page.goto(url, wait_until="networkidle")
        status = response.status if response else 0
        landed = urlsplit(page.url).path
        if page_key(landed) != key and page_key(landed) in seen:
            continue  # a redirect to a page already taken
        seen.add(page_key(landed))
        page.wait_for_timeout(300)  # charts draw after their data arrives
        name = f"{len(done) + 1:02d}-{slug(page_key(landed))}.png"
        page.screenshot(path=str(shots / name), full_page=True)
        done.append((name, page.url, status))
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
            target = urljoin(page.url, href.split("#")[0])
            parts = urlsplit(target)
            if (target.startswith(base) and parts.path.startswith(prefix) and not SKIP.search(parts.path)
                    and page_key(parts.path) not in seen):
                queue.append(target)
    return done


def console_sign_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.locator("form button[type=submit], form button").first.click()
    page.wait_for_load_state("networkidle")


def portal_pages(page, base: str, shots: Path) -> list[tuple[str, str, int]]:
    """The shop owner's portal: sign-in page, then everything linked from the account, and the pay flow."""
    shots.mkdir(parents=True, exist_ok=True)
    page.goto(f"{base}/portal/login", wait_until="networkidle")
    page.screenshot(path=str(shots / "00-login.png"), full_page=True)
    done = [("00-login.png", page.url, 200)]
    form = page.locator("form:has(input[name=password])")
    form.locator("input[name=phone]").fill(DEMO_PORTAL[0])
    form.locator("input[name=password]").fill(DEMO_PORTAL[1])
    form.locator("button").first.click()
    page.wait_for_load_state("networkidle")
    done += crawl(page, base, page.url, "/portal/", shots, limit=20)
    account = next((u for _, u, _ in done if "/portal/a/" in u), None)
    if account and page.goto(account).ok and page.locator("form[action$='/pay'] input[name=amount]").count():
        page.fill("form[action$='/pay'] input[name=amount]", "50")
        page.locator("form[action$='/pay'] button.primary, form[action$='/pay'] #pay").first.click()
        page.wait_for_load_state("networkidle")
        name = f"{len(done) + 1:02d}-pay.png"
        page.screenshot(path=str(shots / name), full_page=True)
        done.append((name, page.url, 200))
    return done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", help="a running demo (default: start one)")
    parser.add_argument("--out", default=str(ROOT / "screenshots"))
    parser.add_argument("--roles", default=",".join(u for u, *_ in DEMO_OPERATORS))
    parser.add_argument("--langs", default=",".join(LANGS))
    parser.add_argument("--no-portal", action="store_true")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit("Chromium is missing: apt-get install chromium fonts-noto-cjk")
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    proc, tmp = None, None
    base = args.base_url
    if not base:
        tmp = Path(tempfile.mkdtemp(prefix="meterhub-shots-"))
        proc, base, _log = start_demo(tmp / "instance")
    from playwright.sync_api import sync_playwright

    logins = {u: p for u, p, *_ in DEMO_OPERATORS}
    index = ["# Screenshots", "", f"{time.strftime('%Y-%m-%d %H:%M')} from {base}", ""]
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for lang in args.langs.split(","):
                for role in args.roles.split(","):
                    context = browser.new_context(viewport=DESKTOP, locale=LANGS[lang])
                    page = context.new_page()
                    page.set_default_timeout(30000)
                    console_sign_in(page, base, role, logins[role])
                    done = crawl(page, base, f"{base}/", "/", out / lang / role)
                    context.close()
                    index += [f"## {lang} · {role} (1440×900)", ""] + [
                        f"- `{lang}/{role}/{name}` {url.removeprefix(base)}" + (f" **HTTP {status}**" if status >= 400 else "")
                        for name, url, status in done] + [""]
                    print(f"{lang} {role}: {len(done)} pages", flush=True)
                if not args.no_portal:
                    context = browser.new_context(viewport=PHONE, locale=LANGS[lang], is_mobile=True, has_touch=True,
                                                  device_scale_factor=2)
                    page = context.new_page()
                    page.set_default_timeout(30000)
                    done = portal_pages(page, base, out / lang / "portal")
                    context.close()
                    index += [f"## {lang} · portal (390×844 phone)", ""] + [
                        f"- `{lang}/portal/{name}` {url.removeprefix(base)}" for name, url, _ in done] + [""]
                    print(f"{lang} portal: {len(done)} pages", flush=True)
            browser.close()
    finally:
        if proc is not None:
            stop_demo(proc)
            shutil.rmtree(tmp, ignore_errors=True)
    (out / "index.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    print(f"screenshots in {out} (index.md lists them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
