"""Reading user files safely: one clear error for every kind of bad file.

:func:`check_file` tells a missing file from a folder or a FIFO; :func:`open_npz`
opens an ``.npz`` archive after checking each member's ``.npy`` header (dtype, shape,
size against the bytes actually stored) so that a damaged or hostile file is refused
before anything is allocated; :class:`CsvReader` reads a CSV file in blocks of rows,
as NumPy string arrays, so that no reader keeps every row of a large file as Python
strings.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import math
import os
import stat
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["CHUNK_ROWS", "ArrayRows", "CsvReader", "check_file", "check_unchanged",
           "count_lines", "file_stamp", "npy_array", "npz_members", "open_npz", "parse_number"]

#: Rows per block: small enough that a block's Python strings stay a few MB.
CHUNK_ROWS = 8192
#: The longest ``.npy`` header accepted (NumPy's own default limit).
MAX_NPY_HEADER = 10_000
#: Cells longer than this make a block an object array rather than a fixed-width one.
_LONG_CELL = 64


def check_file(path: str | os.PathLike[str], what: str = "file") -> Path:
    """Return ``path`` as a Path if it is a regular file; else raise one clear error.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    IsADirectoryError
        A folder.
    ValueError
        A FIFO, socket or device (reading one would block or never end).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} not found.") from None
    except OSError as exc:
        raise OSError(f"cannot read {what} {path}: {exc.strerror or exc}.") from None
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"{what} {path} is a folder, not a file; name a file inside it.")
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
                "a socket" if stat.S_ISSOCK(mode) else "a device")
        raise ValueError(f"{what} {path} is {kind}, not a regular file; save the data to a file first.")
    return path


def parse_number(cell: str) -> float | None:
    """Return ``cell`` as a finite float, or None if it is not one."""
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------------------
# NPZ
# --------------------------------------------------------------------------------------


_NPZ_FIX = "save the arrays with np.savez(path, X=X, y=y)"


def file_stamp(path: Path) -> tuple[int, int]:
    """(size, modification time in ns) of ``path``, (-1, -1) if it is gone: what tells that a
    file read in two passes was rewritten in between."""
    try:
        info = os.stat(path)
    except OSError:
        return -1, -1
    return info.st_size, info.st_mtime_ns


def check_unchanged(path: Path, stamp: tuple[int, int] | None) -> None:
    """Raise one clear error if ``path`` no longer has the :func:`file_stamp` ``stamp``
    (None: it is known to have changed, say its header or its row count differs)."""
    if stamp is None or file_stamp(path) != stamp:
        raise ValueError(
            f"{path} changed while it was being read (its size, modification time or "
            "contents are not what they were on the first pass); keep the file unchanged "
            "while jacnet reads it, or copy it and read the copy.")


def _npz_damage(path: Path, exc: BaseException, fix: str = _NPZ_FIX) -> ValueError:
    return ValueError(f"{path} is a damaged .npz archive ({_reason(exc)}); {fix}.")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, zipfile.BadZipFile):
        text = str(exc)
        return ("its zip structure is broken: truncated or not a zip file" if "not a zip" in text
                else f"its zip structure is broken: {text}")
    if isinstance(exc, NotImplementedError):
        return "it uses a zip feature (version or compression method) NumPy cannot read"
    if isinstance(exc, (EOFError, zlib.error)):
        return "a member is truncated or its compressed data is corrupt"
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def _read_npy_header(handle: IO[bytes], path: Path, key: str, fix: str
                     ) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """Parse a ``.npy`` header at the handle's position (NumPy's parser, capped at
    MAX_NPY_HEADER): (shape, fortran_order, dtype), or one error naming the array."""
    try:
        version = np.lib.format.read_magic(handle)
        reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                  else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = reader(handle, max_header_size=MAX_NPY_HEADER)
    except (ValueError, SyntaxError, TypeError, EOFError, OverflowError, MemoryError,
            RecursionError, tokenize.TokenError) as exc:
        detail = "its header is longer than allowed" if "max_header_size" in str(exc) else \
            "its header is missing, truncated or does not parse"
        raise ValueError(f"{path}: array {key!r} is damaged ({detail}); {fix}.") from None
    if dtype.hasobject:
        raise ValueError(f"{path}: array {key!r} holds Python objects, which would need pickle "
                         "and are refused for safety; save plain numeric or string arrays.")
    if any(not isinstance(n, int) or n < 0 for n in shape):
        raise ValueError(f"{path}: array {key!r} is damaged (its header claims shape {shape}); "
                         f"{fix}.")
    # A zero in the shape makes any other dimension cost no stored bytes, so the size check
    # cannot catch it; no array NumPy can hold has more elements than this.
    if math.prod(n for n in shape if n) * max(dtype.itemsize, 1) > np.iinfo(np.intp).max:
        raise ValueError(f"{path}: array {key!r} is damaged (its header claims shape {shape}, "
                         f"more than any array can hold); {fix}.")
    return tuple(shape), bool(fortran), dtype


def _check_size(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype[Any],
                stored: int, fix: str, where: str = "the archive") -> None:
    claimed = math.prod(shape) * dtype.itemsize
    if claimed != stored:
        raise ValueError(
            f"{path}: array {key!r} is damaged: its header claims shape {shape} of {dtype} "
            f"({claimed} bytes) but {where} stores {stored} bytes; {fix}."
        )


def _check_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, fix: str
                  ) -> ArrayRows:
    """Check one ``.npy`` member's header: readable, no objects, and a claimed size that
    the stored bytes can hold (so that nothing huge is allocated for a hostile file)."""
    key = info.filename[:-4]
    with archive.open(info) as member:
        shape, fortran, dtype = _read_npy_header(member, path, key, fix)
        header_bytes = member.tell()
    _check_size(path, key, shape, dtype, info.file_size - header_bytes, fix)
    return ArrayRows(path, key, shape, dtype, fortran, fix, member=info.filename)


class ArrayRows:
    """One array of a ``.npy`` file or ``.npz`` member, read a block of rows at a time.

    Nothing is read on creation (the header was checked by :func:`npz_members` or
    :func:`npy_array`). :meth:`blocks` streams the rows through a buffer of about
    ``block_bytes``; :meth:`take` keeps only the rows asked for. Both read the stored
    bytes in one pass (a compressed member is decompressed as it goes), so memory is the
    block (about 1 MB) plus what is kept, whatever the number of rows. A Fortran-ordered array cannot
    be cut into rows as stored, and is read whole.

    Attributes
    ----------
    shape : tuple of int
    dtype : numpy.dtype
    """

    def __init__(self, path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype[Any],
                 fortran: bool, fix: str, member: str | None = None) -> None:
        self.path, self.key, self.shape, self.dtype = path, key, shape, dtype
        self.fortran, self.fix, self.member = fortran, fix, member
        self.stamp = file_stamp(path)  # the file as its header was checked

    @property
    def n_rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @contextlib.contextmanager
    def _data(self) -> Iterator[IO[bytes]]:
        """The stored bytes, positioned after the header; read errors as one line."""
        try:
            with contextlib.ExitStack() as stack:
                if self.member is None:
                    handle: IO[bytes] = stack.enter_context(open(self.path, "rb"))
                else:
                    archive = stack.enter_context(zipfile.ZipFile(self.path))
                    handle = stack.enter_context(archive.open(self.member))
                check_unchanged(self.path, self.stamp)
                header = _read_npy_header(handle, self.path, self.key, self.fix)
                if header != (self.shape, self.fortran, self.dtype):
                    check_unchanged(self.path, None)  # rewritten within the clock's grain
                yield handle
                check_unchanged(self.path, self.stamp)
        except ValueError:
            raise
        except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error, OSError,
                RuntimeError) as exc:
            raise _npz_damage(self.path, exc, self.fix) from None

    def _read(self, handle: IO[bytes], n_bytes: int) -> bytes:
        data = handle.read(n_bytes)
        if len(data) != n_bytes:
            raise _npz_damage(self.path, EOFError(f"array {self.key!r} is truncated"), self.fix)
        return data

    def read(self) -> np.ndarray:
        """The whole array."""
        with self._data() as handle:
            data = self._read(handle, math.prod(self.shape) * self.dtype.itemsize)
            try:
                handle.read(1)  # a stored member checks its CRC at the end
            except zipfile.BadZipFile as exc:
                raise _npz_damage(self.path, exc, self.fix) from None
        flat = np.frombuffer(data, dtype=self.dtype)
        return flat.reshape(self.shape, order="F" if self.fortran else "C").copy(order="K")

    def blocks(self, block_bytes: int = 1 << 20) -> Iterator[np.ndarray]:
        """The rows in order, in blocks of about ``block_bytes`` (at least one row each)."""
        if self.fortran or len(self.shape) == 0:
            yield self.read()
            return
        row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
        rows = max(1, block_bytes // max(row_bytes, 1))
        with self._data() as handle:
            try:
                for start in range(0, self.shape[0], rows):
                    count = min(rows, self.shape[0] - start)
                    block = np.frombuffer(self._read(handle, count * row_bytes), dtype=self.dtype)
                    yield block.reshape((count, *self.shape[1:]))
                handle.read(1)  # reach the end: a zip member checks its CRC there
            except zipfile.BadZipFile as exc:
                raise _npz_damage(self.path, exc, self.fix) from None

    def take(self, index: Any) -> np.ndarray:
        """Rows ``index`` (integers in [0, n_rows), any order), read in one pass."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        outside = (index < 0) | (index >= self.n_rows)
        if outside.any():
            raise IndexError(f"{self.path}: array {self.key!r} has {self.n_rows} rows; "
                             f"asked for row {int(index[outside][0])}.")
        out = np.empty((index.size, *self.shape[1:]), dtype=self.dtype)
        order = np.argsort(index, kind="stable")
        wanted = index[order]
        start = 0
        for block in self.blocks():
            stop = start + len(block)
            low, high = np.searchsorted(wanted, [start, stop])
            if high > low:
                out[order[low:high]] = block[wanted[low:high] - start]
            start = stop
        return out


def npz_members(path: str | os.PathLike[str], what: str = "data file", fix: str = _NPZ_FIX
                ) -> dict[str, ArrayRows]:
    """Every array of an ``.npz`` archive as :class:`ArrayRows`, headers checked, nothing read.

    Raises the same one-line ``ValueError`` as :func:`open_npz` for a bad archive.
    """
    path = check_file(path, what)
    _check_zip_magic(path, what, fix)
    try:
        with zipfile.ZipFile(path) as archive:
            return {rows.key: rows for rows in (
                _check_member(path, archive, info, fix) for info in archive.infolist()
                if info.filename.endswith(".npy"))}
    except ValueError:
        raise
    except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error, OSError,
            RuntimeError) as exc:
        raise _npz_damage(path, exc, fix) from None


def npy_array(path: str | os.PathLike[str], what: str = "data file",
              fix: str = "save the array with np.save(path, X)") -> ArrayRows:
    """A ``.npy`` file as :class:`ArrayRows`: its header checked against the file size."""
    path = check_file(path, what)
    with open(path, "rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise ValueError(f"{what} {path} is not a .npy file (it does not start like one); "
                             f"{fix}.")
        handle.seek(0)
        shape, fortran, dtype = _read_npy_header(handle, path, "X", fix)
        header_bytes = handle.tell()
    _check_size(path, "X", shape, dtype, path.stat().st_size - header_bytes, fix, "the file")
    return ArrayRows(path, "X", shape, dtype, fortran, fix)


def _check_zip_magic(path: Path, what: str, fix: str) -> None:
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic == b"\x93NUMPY":
        raise ValueError(f"{what} {path} is a .npy file (one array), not a .npz archive; {fix}.")
    if not magic.startswith(b"PK"):
        raise ValueError(f"{what} {path} is not a .npz archive (it does not start like a zip "
                         f"file); {fix}.")


def open_npz(path: str | os.PathLike[str], what: str = "data file", fix: str = _NPZ_FIX) -> Any:
    """Open an ``.npz`` archive (``allow_pickle=False``) after checking every member.

    Returns the ``NpzFile`` (a context manager). Raises ``ValueError`` naming what is
    wrong: a ``.npy`` file given for an archive, a broken zip, a damaged member header,
    object arrays, or a member whose header claims more data than it stores.
    """
    path = check_file(path, what)
    _check_zip_magic(path, what, fix)
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.endswith(".npy"):
                    _check_member(path, archive, info, fix)
        return np.load(path, allow_pickle=False)
    except ValueError:
        raise
    except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error, OSError,
            RuntimeError) as exc:
        raise _npz_damage(path, exc, fix) from None


def read_npz_arrays(archive: Any, path: Path, fix: str = _NPZ_FIX) -> dict[str, np.ndarray]:
    """Every array of an open archive; a failing checksum or truncated member is one error."""
    try:
        return {key: archive[key] for key in archive.files}
    except ValueError as exc:
        raise ValueError(f"{path} is a damaged .npz archive ({exc}); {fix}.") from None
    except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error, OSError) as exc:
        raise _npz_damage(path, exc, fix) from None


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def count_lines(path: Path) -> int:
    """Number of newline characters (plus one): an upper bound on the rows of a CSV file."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    count = 1
    try:
        with opener(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                count += block.count(b"\n")
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path} is not a readable gzip file ({_reason(exc)}).") from None
    return count


class CsvReader:
    """Read a CSV file block by block as 2-D NumPy string arrays (cells stripped).

    Use as a context manager: ``columns`` is known on entry, then :meth:`blocks` yields
    ``(cells, lines)``: ``cells`` of shape (rows, n_columns) and dtype ``str``, and the
    1-based line number of each row (for error messages). Blank lines are skipped; a
    row of the wrong length, a NUL byte or broken quoting is one ``ValueError`` naming
    the line.

    Parameters
    ----------
    path : Path
    delimiter : str
    header : bool
        True: the first non-blank row names the columns, and a first row of numbers is
        refused (it looks like data; pass ``header=False``). False: every row is data
        and the columns are named ``x1, x2, ...``.
    chunk_rows : int, optional
        Rows per block [CHUNK_ROWS].
    """

    def __init__(self, path: str | os.PathLike[str], *, delimiter: str = ",", header: bool = True,
                 chunk_rows: int | None = None,
                 no_header_hint: str = "header=False (on the command line: --no-header)") -> None:
        self.path = check_file(path, "data file")
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ValueError(f"delimiter must be a single character such as ','; got {delimiter!r}.")
        self.delimiter, self.header = delimiter, bool(header)
        self.chunk_rows = int(CHUNK_ROWS if chunk_rows is None else chunk_rows)
        self.no_header_hint = no_header_hint
        self.columns: list[str] = []
        self._stack = contextlib.ExitStack()
        self._pending: list[str] | None = None

    def __enter__(self) -> CsvReader:
        handle = self._stack.enter_context(_open_text(self.path))
        self._reader = csv.reader(handle, delimiter=self.delimiter)
        first = self._next_row()
        if first is None:
            self._stack.close()
            raise ValueError(f"{self.path} is empty; a CSV file needs a header row and data rows.")
        cells = [cell.strip() for cell in first]
        if self.header:
            if all(parse_number(cell) is not None for cell in cells):
                self._stack.close()
                raise ValueError(
                    f"the first line of {self.path} looks like data ({','.join(cells[:4])}"
                    f"{',...' if len(cells) > 4 else ''}), not a header naming the columns; "
                    f"add a header such as 'x1,x2,y', or pass {self.no_header_hint} to read "
                    "every line as data.")
            self.columns = cells
        else:
            self.columns = [f"x{j + 1}" for j in range(len(cells))]
            self._pending = first
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _next_row(self) -> list[str] | None:
        try:
            for row in self._reader:
                if row and any(cell.strip() for cell in row):
                    return row
        except csv.Error as exc:
            raise ValueError(f"{self.path}, line {self._reader.line_num}: not valid CSV "
                             f"({exc}).") from None
        except UnicodeDecodeError:
            raise ValueError(f"{self.path}, near line {self._reader.line_num + 1}: not UTF-8 "
                             "text; save the file as UTF-8 CSV.") from None
        except (EOFError, OSError, zlib.error) as exc:
            raise ValueError(f"{self.path} is a damaged gzip file ({_reason(exc)}).") from None
        return None

    @property
    def line_num(self) -> int:
        return int(self._reader.line_num)

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = len(self.columns)
        while True:
            rows: list[list[str]] = []
            lines: list[int] = []
            if self._pending is not None:
                rows.append(self._pending)
                lines.append(self.line_num)
                self._pending = None
            while len(rows) < self.chunk_rows:
                row = self._next_row()
                if row is None:
                    break
                rows.append(row)
                lines.append(self.line_num)
            if not rows:
                return
            for row, line in zip(rows, lines, strict=True):
                if len(row) != n:
                    raise ValueError(
                        f"{self.path}, line {line}: expected {n} fields (as in the "
                        f"{'header' if self.header else 'first row'}) but found {len(row)}. "
                        f"Check the delimiter (delimiter={self.delimiter!r}) and quoting.")
            longest = max(max(map(len, row), default=0) for row in rows)
            if longest <= _LONG_CELL:
                cells = np.char.strip(np.array(rows, dtype=str).reshape(len(rows), n))
            else:  # a fixed-width array would be rows x columns x the longest cell
                cells = np.empty((len(rows), n), dtype=object)
                cells[:] = [[cell.strip() for cell in row] for row in rows]
            yield cells, np.array(lines, dtype=np.int64)
            if len(rows) < self.chunk_rows:
                return


def column_floats(cells: np.ndarray, lines: np.ndarray, names: list[str], path: Path,
                  what: str = "feature") -> np.ndarray:
    """Convert a block of string cells to finite float64, or name the first bad cell."""
    try:
        values = cells.astype(np.float64)
    except ValueError:
        values = None
    if values is not None and np.isfinite(values).all():
        return values
    for i in range(cells.shape[0]):
        for k in range(cells.shape[1]):
            if parse_number(str(cells[i, k])) is None:
                raise ValueError(
                    f"{path}, line {int(lines[i])}, column {names[k]!r}: {what} value "
                    f"{str(cells[i, k])!r} is not a finite number. Features must be numeric; "
                    "fix or drop that row, or encode text columns as numbers.")
    raise AssertionError("unreachable: a cell failed to convert but none is bad")  # pragma: no cover
