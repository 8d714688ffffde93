"""Reading one-sentence-a-line text files, plain or gzip."""

import gzip
import os
import zlib
from typing import Sequence, Union

from jaxdistill.errors import DataError

PathLike = Union[str, os.PathLike]

_GZIP_MAGIC = b'\x1f\x8b'


def _read_bytes(path: PathLike) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic bytes."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f'data file not found: {path}') from None
    except IsADirectoryError:
        raise DataError(f'data file {path} is a directory') from None
    except OSError as e:
        raise DataError(f'cannot read data file {path}: {e}') from None
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f'{path}: corrupt gzip data ({e})') from None
    return data


def read_lines(path: PathLike) -> list[str]:
    """Lines of a UTF-8 text file (plain or gzip), without line endings.

    Splits on '\\n' only (and strips a trailing '\\r'), so Unicode line
    separators inside a sentence never break the alignment of parallel files.

    Raises:
      DataError: the file is missing, empty or not valid UTF-8 (the message
        names the 1-based line and the byte offset in the decompressed file).
    """
    data = _read_bytes(path)
    if not data:
        raise DataError(f'{path} is empty')
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        line = data.count(b'\n', 0, e.start) + 1
        raise DataError(
            f'{path} line {line}: invalid UTF-8 (byte offset {e.start})'
        ) from None
    if text.startswith('\ufeff'):
        text = text[1:]
    lines = text.split('\n')
    if lines[-1] == '':
        lines.pop()
    return [l[:-1] if l.endswith('\r') else l for l in lines]


def read_parallel(paths: Sequence[PathLike]) -> list[tuple[str, ...]]:
    """Aligned lines of several files: [(line_of_file0, line_of_file1, ...)].

    Raises:
      DataError: any file is unreadable, or the files' line counts differ.
    """
    if not paths:
        raise DataError('read_parallel needs at least one file')
    columns = [read_lines(p) for p in paths]
    counts = [len(c) for c in columns]
    if len(set(counts)) > 1:
        detail = ', '.join(f'{p} has {n} lines' for p, n in zip(paths, counts))
        raise DataError(f'parallel files are not aligned: {detail}')
    return list(zip(*columns))
