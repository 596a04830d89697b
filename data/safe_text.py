"""Untrusted text (vector names from files, prompts, generations) made safe to show or to write one record a line.

`printable` escapes what would act on a terminal or page instead of being read: C0/C1 control characters (ESC
sequences can recolor, retitle or clear a terminal; NUL and CR hide what follows), bidirectional overrides and
isolates (U+202E shows a string reversed, the "Trojan Source" trick) and lone surrogates (which cannot be encoded
and crash a UTF-8 writer). Each becomes a visible Python-style escape (`\\x1b`, `\\u202e`). `jsonl_line` is
`json.dumps` that also escapes U+2028/U+2029/U+0085, which `str.splitlines()` and some JSON readers treat as line
breaks, so a JSONL file has exactly one line per record for every reader.
"""

from __future__ import annotations

import json
import re

__all__ = ["is_encodable", "jsonl_line", "printable"]

_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_SURROGATES = "\ud800-\udfff"
_UNSAFE_ONE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}\u2028\u2029]")
_UNSAFE_MULTI_LINE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}{_SURROGATES}]")  # keeps \t and \n


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, keep_newlines: bool = False, limit: int | None = None) -> str:
    """`text` with control, bidi-override and surrogate characters escaped; cut to `limit` characters + "…"."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    return (_UNSAFE_MULTI_LINE if keep_newlines else _UNSAFE_ONE_LINE).sub(_escape, text)


def jsonl_line(obj: object) -> str:
    """One JSON record and its "\\n"; non-ASCII text stays readable, Unicode line separators are escaped."""
    line = json.dumps(obj, ensure_ascii=False, default=float)
    return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085") + "\n"


def is_encodable(text: str) -> bool:
    """False for text with lone surrogates (what JSON escapes like "\\ud800" decode to), which UTF-8 cannot encode
    and no tokenizer accepts."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
