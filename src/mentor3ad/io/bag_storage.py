"""rosbag2 storage files: the integrity of MCAP and SQLite containers (used by :mod:`mentor3ad.io.bags`).

MCAP integrity (the MCAP specification's CRC-32 fields, zlib's polynomial): every Chunk carries the CRC
of its uncompressed records, DataEnd the CRC of every byte before it (magic, header, data records), the
Footer the CRC of the summary section up to and including the footer's two offsets; 0 means "not
computed" and is not checked. :func:`add_mcap_crcs` fills them in place for a file written without
(``rosbags`` writes 0), :func:`verify_mcap` walks the records and raises naming the chunk and byte
offset of a mismatch or of a truncation. SQLite files (rosbag2's sqlite3 storage) have no checksums:
:func:`verify_sqlite` runs ``PRAGMA quick_check`` (page and b-tree structure).
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Tuple, Union

from ..errors import BagError

MCAP_MAGIC = b"\x89MCAP0\r\n"
_CHUNK, _DATA_END, _FOOTER = 0x06, 0x0F, 0x02


def _decompress(compression: str) -> Callable[[bytes], bytes]:
    if compression == "":
        return lambda data: data
    try:
        from rosbags.rosbag2.storage_mcap import DECOMPRESSORS
    except ImportError:  # pragma: no cover - rosbags is a dependency
        DECOMPRESSORS = {}
    if compression not in DECOMPRESSORS:
        raise BagError(f"unsupported MCAP chunk compression {compression!r}")
    return lambda data: DECOMPRESSORS[compression](data, 0)


def _chunk_crc(content: bytes, where: str) -> Tuple[int, int]:
    """(stored, computed) CRC of a Chunk record's uncompressed records."""
    try:
        size, stored = struct.unpack_from("<QI", content, 16)
        (name_length,) = struct.unpack_from("<I", content, 28)
        compression = content[32:32 + name_length].decode()
        (length,) = struct.unpack_from("<Q", content, 32 + name_length)
        records = content[40 + name_length:40 + name_length + length]
        if len(records) != length:
            raise ValueError("records exceed the chunk")
        data = _decompress(compression)(records)
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise BagError(f"{where}: malformed chunk record ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - decompressors raise their own types
        raise BagError(f"{where}: chunk does not decompress ({type(exc).__name__}: {exc})") from None
    if len(data) != size:
        raise BagError(f"{where}: chunk holds {len(data)} bytes, its header says {size}")
    return stored, zlib.crc32(data)


def _mcap_walk(handle: BinaryIO, path: Path, on_chunk: Callable[[int, int, bytes], bytes]) -> Tuple[int, int, int]:
    """Walk the data section; ``on_chunk(index, offset, content)`` may return changed content (same size).
    -> (DataEnd offset, stored data-section CRC, computed data-section CRC)."""
    size = os.fstat(handle.fileno()).st_size
    if handle.read(8) != MCAP_MAGIC:
        raise BagError(f"{path}: not an MCAP file (bad magic at byte 0)")
    offset, crc, chunks = 8, zlib.crc32(MCAP_MAGIC), 0
    while True:
        head = handle.read(9)
        if len(head) < 9:
            raise BagError(f"{path}: truncated at byte {offset} of {size}: the data section has no end (DataEnd)")
        opcode, length = head[0], struct.unpack("<Q", head[1:])[0]
        if offset + 9 + length > size:
            raise BagError(f"{path}: truncated or corrupt: the record at byte {offset} (opcode 0x{opcode:02x}) "
                           f"claims {length} bytes, the file has {size - offset - 9} left")
        content = handle.read(length)
        if opcode == _DATA_END:
            stored = struct.unpack_from("<I", content)[0] if length >= 4 else 0
            return offset, stored, crc
        if opcode == _CHUNK:
            content = on_chunk(chunks, offset, content)
            chunks += 1
        crc = zlib.crc32(content, zlib.crc32(head, crc))
        offset += 9 + length


def _summary_crc(handle: BinaryIO, path: Path) -> Tuple[int, int, int]:
    """(footer offset, stored summary CRC, computed summary CRC)."""
    size = os.fstat(handle.fileno()).st_size
    footer = size - 8 - 29
    handle.seek(footer)
    raw = handle.read(37)
    if len(raw) != 37 or raw[0] != _FOOTER or raw[29:] != MCAP_MAGIC:
        raise BagError(f"{path}: truncated or corrupt: no MCAP footer at byte {footer}")
    summary_start, _, stored = struct.unpack_from("<QQI", raw, 9)
    if not summary_start:
        return footer, stored, 0
    if not 8 <= summary_start <= footer:
        raise BagError(f"{path}: corrupt footer: summary offset {summary_start} outside the file")
    handle.seek(summary_start)
    crc = zlib.crc32(handle.read(footer - summary_start))
    return footer, stored, zlib.crc32(raw[:25], crc)


def add_mcap_crcs(path: Union[str, Path]) -> Path:
    """Fill the chunk, data-section and summary CRCs of an MCAP file in place (see module docstring)."""
    path = Path(path)

    def patch(index: int, offset: int, content: bytes) -> bytes:
        _, computed = _chunk_crc(content, f"{path}: chunk {index} at byte {offset}")
        handle.seek(offset + 9 + 24)
        handle.write(struct.pack("<I", computed))
        handle.seek(offset + 9 + len(content))
        return content[:24] + struct.pack("<I", computed) + content[28:]

    with open(path, "r+b") as handle:
        data_end, _, crc = _mcap_walk(handle, path, patch)
        handle.seek(data_end + 9)
        handle.write(struct.pack("<I", crc))
        handle.flush()
        footer, _, summary = _summary_crc(handle, path)
        if summary:
            handle.seek(footer + 25)
            handle.write(struct.pack("<I", summary))
        handle.flush()
        os.fsync(handle.fileno())
    return path


def verify_mcap(path: Union[str, Path]) -> int:
    """Check an MCAP file's structure and CRCs (BagError naming the chunk / byte offset); returns the
    number of chunks whose CRC was verified (chunks with CRC 0 carry none)."""
    path = Path(path)
    verified = []

    def check(index: int, offset: int, content: bytes) -> bytes:
        where = f"{path}: chunk {index} at byte {offset}"
        stored, computed = _chunk_crc(content, where)
        if stored and stored != computed:
            raise BagError(f"{where} (to byte {offset + 9 + len(content)}) is corrupt: CRC-32 of its records "
                           f"is {computed:08x}, recorded {stored:08x}")
        verified.append(bool(stored))
        return content

    with open(path, "rb") as handle:
        data_end, stored, crc = _mcap_walk(handle, path, check)
        if stored and stored != crc:
            raise BagError(f"{path} is corrupt between byte 8 and {data_end} (outside the chunks: message "
                           f"indexes or unchunked records): data-section CRC {crc:08x}, recorded {stored:08x}")
        footer, stored, crc = _summary_crc(handle, path)
        if stored and stored != crc:
            raise BagError(f"{path}: its summary (index) section before byte {footer} is corrupt: CRC {crc:08x}, "
                           f"recorded {stored:08x}")
    return sum(verified)


def verify_sqlite(path: Union[str, Path]) -> None:
    """``PRAGMA quick_check`` of an SQLite file, read-only (BagError with the first problems)."""
    import sqlite3

    path = Path(path)
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = [" ".join(str(row[0]).split()) for row in connection.execute("PRAGMA quick_check(5)")]
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise BagError(f"{path} is not a readable SQLite database: {' '.join(str(exc).split())}") from None
    if rows != ["ok"]:
        raise BagError(f"{path} is corrupt (SQLite quick_check: {'; '.join(rows)[:300]})")


__all__ = ["add_mcap_crcs", "verify_mcap", "verify_sqlite", "MCAP_MAGIC"]
