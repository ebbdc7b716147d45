"""Files every host can read: kept in the database (``stored_files`` + 1 MiB ``stored_file_chunks``), never on
one host's disk, so a file a worker made on one host downloads through the web process of any other.

    stored = save_file(session, group_id, "report_export", "usage-12.xlsx", XLSX, open(path, "rb"))
    for chunk in iter_chunks(session, stored.id): ...          # a download, chunk by chunk

Both tables are under row-level security: the web app reads its group's files only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, insert, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from .extensions import db
from .models import TenantMixin, utcnow

CHUNK_BYTES = 1024 * 1024
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class StoredFile(TenantMixin, db.Model):
    """A file's description; its bytes are in :class:`StoredFileChunk` rows."""

    __tablename__ = "stored_files"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    content_type: Mapped[str] = mapped_column(String(120), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False, default=utcnow)


class StoredFileChunk(TenantMixin, db.Model):
    """One chunk (``seq`` from 0) of a stored file's bytes."""

    __tablename__ = "stored_file_chunks"
    file_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("stored_files.id", ondelete="CASCADE"),
                                         primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


def save_file(session: Session, group_id: int, kind: str, name: str, content_type: str,
              source: BinaryIO) -> StoredFile:
    """Store ``source``'s bytes (read chunk by chunk) as a file of ``group_id``; the caller commits."""
    stored = StoredFile(group_id=group_id, kind=kind, name=name, content_type=content_type, size=0, sha256="")
    session.add(stored)
    session.flush()
    digest, size, seq = hashlib.sha256(), 0, 0
    while chunk := source.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
        # a Core insert: no ORM object keeps the chunk in the session, so memory stays at one chunk
        session.execute(insert(StoredFileChunk).values(group_id=group_id, file_id=stored.id, seq=seq, data=chunk))
        seq += 1
    stored.size, stored.sha256 = size, digest.hexdigest()
    session.flush()
    return stored


def iter_chunks(session: Session, file_id: int) -> Iterator[bytes]:
    """The file's bytes, one chunk per query (memory stays at one chunk, whatever the file's size)."""
    seq = 0
    while True:
        data = session.execute(select(StoredFileChunk.data).where(StoredFileChunk.file_id == file_id,
                                                                  StoredFileChunk.seq == seq)).scalar()
        if data is None:
            return
        yield bytes(data)
        seq += 1
