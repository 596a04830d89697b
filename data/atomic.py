"""Atomic file output: write to a temp file beside the target, rename on success, remove it on failure.

An OSError while writing (disk full, read-only file system) becomes one UserInputError naming the target; the
target keeps its previous content (or stays absent).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from realize.data.errors import UserInputError


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path in the target's directory; it replaces `path` only if the block succeeds."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise UserInputError(f"{target}: cannot write here ({err.strerror or err})") from err
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, target)
    except OSError as err:  # disk full, read-only file system, quota: the target is left as it was
        Path(tmp).unlink(missing_ok=True)
        raise UserInputError(f"{target}: cannot write ({err.strerror or err}); nothing was written") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
