"""Reading a hostile zip safely, without extracting it: which entries may be read at all
(`entry_problem`), each entry's bytes streamed and inflated here with every cap checked on
the real data (`read_capped`: declared size, CRC-32, compression ratio, a total budget), and
the entry count taken from the end record before `zipfile` parses the directory. No private
`zipfile` API is used."""

from __future__ import annotations

import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path

from ..sandbox import Limits
from .report import LMSImportError

MAX_ZIP_BYTES = 4 << 30          # the zip file itself
MAX_ENTRIES = 10_000             # entries in the zip (read from its end record before anything else)
MAX_ENTRY_BYTES = Limits().submission_bytes  # one notebook: the grader's own limit
MAX_TOTAL_BYTES = 2 << 30        # uncompressed bytes read from the whole zip
MAX_RATIO = 200                  # expanded / compressed size, checked past RATIO_FLOOR bytes
RATIO_FLOOR = 1 << 20
CHUNK = 1 << 16


def entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Why an entry must not be read at all (path, type, encryption, declared size)."""
    name = info.filename
    if "\x00" in name or any(ord(c) < 32 for c in name):
        return "the name contains control characters"
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "absolute path (zip-slip)"
    if any(p == ".." for p in parts):
        return "path with '..' (zip-slip)"
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode:
        ftype = stat.S_IFMT(mode)
        if ftype == stat.S_IFLNK:
            return "symbolic link"
        if ftype not in (0, stat.S_IFREG, stat.S_IFDIR):
            return "not a regular file (device, pipe or socket)"
    if info.flag_bits & 0x1:
        return "encrypted entry"
    if info.file_size > MAX_ENTRY_BYTES:
        return f"too large ({info.file_size >> 20} MiB declared; limit {MAX_ENTRY_BYTES >> 20} MiB)"
    return None


def submission_entries(infos) -> list[zipfile.ZipInfo]:
    """The entries that name submissions: not rejected (`entry_problem`), not folders, not
    the files a Mac or Windows leaves (``__MACOSX/``, ``._*``, ``.DS_Store``, ``Thumbs.db``)."""
    out = []
    for info in infos:
        name = info.filename
        base = name.replace("\\", "/").rsplit("/", 1)[-1]
        if (entry_problem(info) or info.is_dir() or name.startswith("__MACOSX/") or base.startswith("._")
                or base in (".DS_Store", "Thumbs.db")):
            continue
        out.append(info)
    return out


class Budget:
    def __init__(self) -> None:
        self.total = 0


def read_capped(fh, info: zipfile.ZipInfo, zip_size: int, budget: Budget) -> tuple[bytes | None, str | None]:
    """The entry's bytes, or (None, why). The compressed data is read from the archive and
    inflated here, in chunks, with the output capped at the declared size (and
    `MAX_ENTRY_BYTES`): an entry whose header understates what it expands to -- a zip bomb --
    is stopped as soon as it passes its declared size; the size, the CRC-32 and the
    compression ratio are checked on the real data."""
    try:
        fh.seek(info.header_offset)
        head = fh.read(30)
        if len(head) != 30 or head[:4] != b"PK\x03\x04":
            return None, "corrupt entry (no local header where the directory points)"
        method, = struct.unpack("<H", head[8:10])
        n, m = struct.unpack("<HH", head[26:30])
        start = info.header_offset + 30 + n + m
        if method != info.compress_type:
            return None, "corrupt entry (its local header and the zip directory disagree)"
        if start + info.compress_size > zip_size:
            return None, "corrupt entry (its data runs past the end of the zip)"
        if method == zipfile.ZIP_DEFLATED:
            dec = zlib.decompressobj(-15)
        elif method == zipfile.ZIP_STORED:
            dec = None
        else:
            return None, f"unsupported compression method {method} (LMS zips use deflate)"
        fh.seek(start)
        limit = min(MAX_ENTRY_BYTES, info.file_size)
        left = info.compress_size
        out = bytearray()
        bomb = (f"expands past its declared size ({info.file_size} bytes): rejected as a zip bomb, "
                "nothing of it was written")
        while left > 0:
            raw = fh.read(min(CHUNK, left))
            if not raw:
                return None, "corrupt entry (the zip is truncated)"
            left -= len(raw)
            if dec is None:
                data = raw
            else:
                data = dec.decompress(raw, limit + 1 - len(out))
                if dec.unconsumed_tail:  # more output than the cap allows
                    return None, bomb
            out += data
            budget.total += len(data)
            if len(out) > limit:
                return None, bomb
            if len(out) > RATIO_FLOOR and len(out) > MAX_RATIO * max(1, info.compress_size):
                return None, (f"compression ratio over {MAX_RATIO}:1 ({info.compress_size} bytes expand past "
                              f"{len(out)}): rejected as a zip bomb")
            if budget.total > MAX_TOTAL_BYTES:
                return None, f"the zip expands past {MAX_TOTAL_BYTES >> 20} MiB in all: the rest is not read"
        if dec is not None and not dec.eof:
            return None, "corrupt entry (the compressed data ends early)"
    except (zlib.error, OSError, struct.error, ValueError) as e:
        return None, f"corrupt entry ({type(e).__name__}: {str(e)[:80]})"
    if len(out) != info.file_size:
        return None, f"corrupt entry (declared {info.file_size} bytes, holds {len(out)})"
    if zlib.crc32(out) & 0xFFFFFFFF != info.CRC:
        return None, "corrupt entry (CRC-32 mismatch)"
    return bytes(out), None


_EOCD = struct.Struct("<4s4H2LH")        # end of central directory record (22 bytes + comment)
_ZIP64_LOCATOR = struct.Struct("<4sLQL")  # zip64 end-of-central-directory locator (20 bytes)
_ZIP64_EOCD = struct.Struct("<4sQ2H2L2Q2Q")  # zip64 end-of-central-directory record (56 bytes)


def count_entries(fh) -> int | None:
    """The number of entries the zip's end record declares (APPNOTE 4.3.16, and 4.3.14-15
    for zip64), read from the file's last 64 KiB before `zipfile` reads the directory, so a
    zip that declares millions of entries is refused before they are parsed. None when no
    end record is found (zipfile then reports the zip as unreadable)."""
    try:
        size = fh.seek(0, 2)
        tail_len = min(size, _EOCD.size + 0xFFFF)
        fh.seek(size - tail_len)
        tail = fh.read(tail_len)
    except OSError:
        return None
    at = len(tail)
    while True:  # the record whose comment runs exactly to the end (a comment may imitate one)
        at = tail.rfind(b"PK\x05\x06", 0, at)
        if at < 0:
            return None
        if at + _EOCD.size <= len(tail) and at + _EOCD.size + _EOCD.unpack_from(tail, at)[-1] == len(tail):
            break
    entries = _EOCD.unpack_from(tail, at)[4]
    if entries != 0xFFFF:
        return entries
    loc = at - _ZIP64_LOCATOR.size  # zip64: the locator sits just before the end record
    if loc < 0 or tail[loc:loc + 4] != b"PK\x06\x07":
        return entries
    offset = _ZIP64_LOCATOR.unpack_from(tail, loc)[2]
    try:
        fh.seek(offset)
        rec = fh.read(_ZIP64_EOCD.size)
    except (OSError, ValueError, OverflowError):
        return None
    if len(rec) != _ZIP64_EOCD.size or rec[:4] != b"PK\x06\x06":
        return None
    return _ZIP64_EOCD.unpack(rec)[7]


def open_zip(fh, path: Path) -> zipfile.ZipFile:
    """`fh` as a `zipfile.ZipFile`, after checking the declared entry count (`MAX_ENTRIES`);
    hostile bytes are an `LMSImportError` (one line), never a traceback."""
    n = count_entries(fh)
    if n is not None and n > MAX_ENTRIES:
        raise LMSImportError(f"{path} has {n} entries (limit {MAX_ENTRIES}); nothing was imported")
    fh.seek(0)
    try:
        zf = zipfile.ZipFile(fh)
    except Exception as e:  # hostile bytes: BadZipFile, struct/Unicode errors, NotImplementedError ...
        raise LMSImportError(f"{path} is not a readable zip file ({type(e).__name__}: {str(e)[:120]})") from None
    if len(zf.infolist()) > MAX_ENTRIES:
        zf.close()
        raise LMSImportError(f"{path} has {len(zf.infolist())} entries (limit {MAX_ENTRIES}); nothing was imported")
    return zf
