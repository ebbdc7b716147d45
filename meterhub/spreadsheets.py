"""Spreadsheets in and out: every xlsx and CSV the platform writes, and every xlsx it reads, goes through here.

Writing: a string cell that begins with ``=``, ``+``, ``-``, ``@``, tab or carriage return would be taken
for a formula by a spreadsheet program (OWASP "CSV injection"). In xlsx such a string is written as a text
cell with Excel's quote prefix (the value is unchanged, Excel never evaluates it, not even after an edit);
in CSV, which has no types, it gets a leading apostrophe. Numbers, dates and other types are untouched, so
a negative amount stays a number.

Reading: workbooks are opened in read-only (streaming) mode and a sheet is refused as soon as it declares,
or turns out while streaming, to hold more rows than the caller's cap; nothing past the cap is loaded.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any
from zipfile import BadZipFile, ZipFile

from openpyxl import Workbook, load_workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

from .errors import ValidationError

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
BOLD = Font(bold=True)
_STARTS = frozenset(FORMULA_STARTS)
MAX_UNPACKED_BYTES = 64 * 2**20  # 20,000 rows of 8 columns unpack to about 8 MB


def formula_like(value: Any) -> bool:
    """True for a string a spreadsheet program would read as a formula (or DDE command)."""
    return isinstance(value, str) and value[:1] in _STARTS


# --- writing -------------------------------------------------------------------------------------------


def csv_value(value: Any) -> Any:
    """``value`` as written to CSV: formula-like strings get a leading apostrophe."""
    return "'" + value if formula_like(value) else value


class CsvWriter:
    """``csv.writer`` that writes formula-like strings as text."""

    def __init__(self, stream: IO[str], **fmt: Any) -> None:
        self._writer = csv.writer(stream, **fmt)

    def writerow(self, row: Iterable[Any]) -> None:
        """Write one row."""
        self._writer.writerow([csv_value(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        """Write many rows."""
        for row in rows:
            self.writerow(row)


def xlsx_cell(sheet: Any, value: Any, number_format: str | None = None, font: Font | None = None) -> Any:
    """A cell for ``sheet.append``: a text cell for formula-like strings, a styled cell when asked, else the value."""
    text = formula_like(value)
    if not text and font is None and (number_format is None or value is None):
        return value
    cell = WriteOnlyCell(sheet, value=value)
    if text:
        cell.data_type = "s"  # openpyxl types every "=..." string as a formula
        cell.quotePrefix = True
    elif number_format is not None and value is not None:
        cell.number_format = number_format
    if font is not None:
        cell.font = font
    return cell


def append_row(sheet: Any, values: Iterable[Any], formats: Sequence[str | None] = (), bold: bool = False) -> None:
    """Append one row to an openpyxl sheet (write-only or not), formula-like strings as text."""
    if not bold and not any(formats):
        sheet.append([xlsx_cell(sheet, v) if isinstance(v, str) and v[:1] in _STARTS else v for v in values])
        return
    font = BOLD if bold else None
    sheet.append([xlsx_cell(sheet, value, formats[i] if i < len(formats) else None, font)
                  for i, value in enumerate(values)])


def new_workbook(write_only: bool = True) -> Workbook:
    """An empty workbook (write-only streams rows to disk; a normal one can be edited)."""
    return Workbook(write_only=write_only)


def workbook_bytes(book: Workbook) -> bytes:
    """The workbook saved as .xlsx bytes."""
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def sheet_bytes(title: str, header: Sequence[Any], rows: Iterable[Iterable[Any]]) -> bytes:
    """A one-sheet workbook (bold header) as .xlsx bytes."""
    book = new_workbook()
    sheet = book.create_sheet(title)
    append_row(sheet, header, bold=True)
    for row in rows:
        append_row(sheet, row)
    return workbook_bytes(book)


# --- reading -------------------------------------------------------------------------------------------


def open_workbook(data: bytes, max_unpacked: int = MAX_UNPACKED_BYTES) -> Workbook:
    """A read-only (streaming) workbook, or ValidationError when the bytes are not an xlsx file.

    An xlsx is a zip archive: one that would unpack to more than ``max_unpacked`` bytes is refused from its
    directory, before anything is decompressed.
    """
    try:
        unpacked = sum(info.file_size for info in ZipFile(io.BytesIO(data)).infolist())
    except (BadZipFile, OSError, ValueError) as err:
        raise ValidationError("The file is not an xlsx workbook (not a zip archive); save it from Excel "
                              "as .xlsx.", {"file": "not xlsx"}) from err
    if unpacked > max_unpacked:
        raise ValidationError(f"The workbook unpacks to {unpacked // 2**20} MB, more than the {max_unpacked // 2**20}"
                              " MB accepted; split the file.", {"file": "too large"})
    try:
        return load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as err:  # openpyxl raises many kinds (zip, XML, key, value errors) for a bad file
        kind = "not a zip archive" if isinstance(err, BadZipFile) else type(err).__name__
        raise ValidationError(f"The file is not an xlsx workbook ({kind}); save it from Excel as .xlsx.",
                              {"file": "not xlsx"}) from err


def declared_rows(sheet: Any) -> int | None:
    """The row count the sheet's ``<dimension>`` declares (None when absent): read without loading rows."""
    try:
        max_row = sheet.max_row
    except Exception:  # a malformed dimension reference  # noqa: BLE001
        return None
    return max_row if isinstance(max_row, int) else None


def stream_rows(sheet: Any, max_rows: int, name: str = "", header: bool = False) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """(row number, values) of a read-only sheet, refusing a sheet of more than ``max_rows`` data rows (plus
    one ``header`` row when told).

    The declared dimension is checked before the first row is read; a sheet that hides or understates its
    size is stopped while streaming at the first row past the cap. Callers validate rows as they come and
    write nothing until the whole sheet is read, so a refusal leaves no partial import.
    """
    label = f"Sheet {name!r}" if name else "The sheet"
    limit = max_rows + (1 if header else 0)
    too_many = ValidationError(f"{label} has more than {max_rows} rows; at most {max_rows} are accepted. "
                               "Split the file.", {"file": "too many rows"})
    declared = declared_rows(sheet)
    if declared is not None and declared > limit:
        raise too_many
    if hasattr(sheet, "reset_dimensions"):
        sheet.reset_dimensions()  # a dimension declaring fewer rows than the sheet holds would hide the rest
    for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
        if number > limit:
            raise too_many
        yield number, tuple(values or ())
