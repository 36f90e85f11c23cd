"""A parser for protobuf's text format as Caffe writes it (``.prototxt``), without protobuf.

It builds a schema-less tree: a :class:`Message` maps each field name to the list of its
values, in file order (a repeated key appends). ``name { ... }`` (or ``name: { ... }``,
``name < ... >``) gives a sub-message; ``name: value`` a scalar: a ``str`` for quoted
strings, an :class:`Ident` for bare words (enum names, ``true``), an ``int`` or a ``float``.
The consumer's small schema decides singular/repeated and types (:meth:`Message.one`,
:meth:`Message.enum`...). Handled: ``#`` comments, CRLF, a BOM, single or double quotes with C
escapes and adjacent-literal concatenation, hex/octal ints, ``1e-4``, ``.5``, ``1.0f``, ``inf``,
``nan``, ``-`` apart from its number, ``,``/``;`` after a field, ``name: [a, b]`` lists.
Extension syntax (``[ext.name]``) never occurs in Caffe files and is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from shoal.importers.caffe.errors import CaffeError


class Ident(str):
    """A bare word in value position: an enum name or a boolean."""


_TOKEN = re.compile(r"""
    (?P<space>[\s\ufeff]+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[+-]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[fF]?))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[:{}<>\[\],;\-])
""", re.VERBOSE)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b",
            "f": "\f", "v": "\v", "?": "?"}


class Message:
    """A parsed message: field name → values in order."""

    def __init__(self) -> None:
        self.fields: dict[str, list[Any]] = {}

    def add(self, name: str, value: Any) -> None:
        self.fields.setdefault(name, []).append(value)

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    def all(self, name: str) -> list[Any]:
        """Every value of a field (a repeated field), in order; empty when absent."""
        return list(self.fields.get(name, []))

    def one(self, name: str, default: Any = None) -> Any:
        """The value of a singular field (the last one given), or ``default``."""
        values = self.fields.get(name)
        return values[-1] if values else default

    def message(self, name: str) -> Message:
        """A sub-message, or an empty one when absent (its fields then take their defaults)."""
        value = self.one(name)
        if value is None:
            return Message()
        if not isinstance(value, Message):
            raise CaffeError(f"field {name!r} should be a message ({name} {{ ... }}), got {value!r}")
        return value

    def number(self, name: str, default: float | None = None) -> float | None:
        value = self.one(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CaffeError(f"field {name!r} should be a number, got {value!r}")
        return value

    def integer(self, name: str, default: int | None = None) -> int | None:
        value = self.number(name, default)
        if value is None:
            return None
        if isinstance(value, float) and not value.is_integer():
            raise CaffeError(f"field {name!r} should be an integer, got {value!r}")
        return int(value)

    def integers(self, name: str) -> list[int]:
        out = []
        for value in self.all(name):
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or isinstance(value, float) and not value.is_integer()):
                raise CaffeError(f"field {name!r} should hold integers, got {value!r}")
            out.append(int(value))
        return out

    def floats(self, name: str) -> list[float]:
        out = []
        for value in self.all(name):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CaffeError(f"field {name!r} should hold numbers, got {value!r}")
            out.append(float(value))
        return out

    def flag(self, name: str, default: bool) -> bool:
        value = self.one(name)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise CaffeError(f"field {name!r} should be true or false, got {value!r}")

    def text(self, name: str, default: str = "") -> str:
        value = self.one(name, default)
        if not isinstance(value, str) or isinstance(value, Ident):
            raise CaffeError(f"field {name!r} should be a quoted string, got {value!r}")
        return str(value)

    def enum(self, name: str, values: tuple[str, ...], default: str) -> str:
        """An enum field by name or number; ``values`` in enum-number order."""
        value = self.one(name)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(values):
            return values[value]
        if isinstance(value, str) and value in values:
            return str(value)
        raise CaffeError(f"field {name!r} has {value!r}; expected one of {', '.join(values)}")


def _tokens(text: str) -> Iterator[tuple[str, str, int]]:
    pos, line = 0, 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise CaffeError(f"line {line}: cannot read {text[pos:pos + 20]!r}")
        kind = match.lastgroup or ""
        value = match.group()
        if kind != "space":
            yield kind, value, line
        line += value.count("\n")
        pos = match.end()


def _unescape(literal: str, line: int) -> str:
    body, out, i = literal[1:-1], [], 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt in "xX":
            digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:])
            if not digits:
                raise CaffeError(f"line {line}: bad \\x escape in {literal}")
            out.append(chr(int(digits.group(), 16)))
            i += 2 + len(digits.group())
        elif nxt in "01234567":
            digits = re.match(r"[0-7]{1,3}", body[i + 1:])
            assert digits is not None
            out.append(chr(int(digits.group(), 8)))
            i += 1 + len(digits.group())
        else:
            raise CaffeError(f"line {line}: unknown escape \\{nxt} in {literal}")
    # Bytes written as escapes form UTF-8 sequences: decode them as the file's text.
    try:
        return "".join(out).encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return "".join(out)


def _number(token: str) -> int | float:
    sign = -1 if token.startswith("-") else 1
    body = token.lstrip("+-")
    if body[:2].lower() == "0x":
        return sign * int(body, 16)
    if re.fullmatch(r"0[0-7]+", body):
        return sign * int(body, 8)
    if re.fullmatch(r"\d+", body):
        return sign * int(body)
    return sign * float(body.rstrip("fF"))


class _Parser:
    def __init__(self, text: str, where: str) -> None:
        self.tokens = list(_tokens(text))
        self.pos = 0
        self.where = where

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        token = self.peek()
        if token is None:
            raise CaffeError(f"{self.where} ends in the middle of a message (a '}}' is missing)")
        self.pos += 1
        return token

    def fail(self, token: tuple[str, str, int], expected: str) -> CaffeError:
        return CaffeError(f"{self.where}, line {token[2]}: expected {expected}, got {token[1]!r}")

    def message(self, close: str | None) -> Message:
        msg = Message()
        while True:
            token = self.peek()
            if token is None:
                if close is not None:
                    raise CaffeError(f"{self.where} ends before its closing {close!r}")
                return msg
            if token[1] == close and token[0] == "punct":
                self.pos += 1
                return msg
            kind, name, line = self.take()
            if kind == "punct" and name == "[":
                raise CaffeError(f"{self.where}, line {line}: extension fields ([...]) are not part of Caffe's format")
            if kind != "ident":
                raise self.fail(token, "a field name")
            self.field(msg, name)
            nxt = self.peek()
            if nxt is not None and nxt[1] in (",", ";"):
                self.pos += 1

    def field(self, msg: Message, name: str) -> None:
        token = self.take()
        colon = token[1] == ":" and token[0] == "punct"
        if colon:
            token = self.take()
        if token[0] == "punct" and token[1] in "{<":
            msg.add(name, self.message("}" if token[1] == "{" else ">"))
            return
        if token[0] == "punct" and token[1] == "[":
            while True:
                item = self.take()
                if item[1] == "]":
                    return
                if item[0] == "punct" and item[1] in "{<":
                    msg.add(name, self.message("}" if item[1] == "{" else ">"))
                else:
                    msg.add(name, self.scalar(item))
                sep = self.take()
                if sep[1] == "]":
                    return
                if sep[1] != ",":
                    raise self.fail(sep, "',' or ']'")
        if not colon:
            raise self.fail(token, f"':' or '{{' after {name!r}")
        msg.add(name, self.scalar(token))

    def scalar(self, token: tuple[str, str, int]) -> Any:
        kind, value, line = token
        if kind == "punct" and value == "-":  # "- 3": the sign apart from its number
            nxt = self.take()
            if nxt[0] == "number":
                return -_number(nxt[1])
            if nxt[0] == "ident" and nxt[1].lower() in ("inf", "infinity", "nan"):
                return -float(nxt[1])
            raise self.fail(nxt, "a number after '-'")
        if kind == "number":
            return _number(value)
        if kind == "string":
            parts = [_unescape(value, line)]
            while (nxt := self.peek()) is not None and nxt[0] == "string":
                parts.append(_unescape(self.take()[1], nxt[2]))
            return "".join(parts)
        if kind == "ident":
            if value.lower() in ("inf", "infinity", "nan"):
                return float(value)
            if value in ("true", "True", "t"):
                return True
            if value in ("false", "False", "f"):
                return False
            return Ident(value)
        raise self.fail(token, "a value")


def parse_prototxt(text: str, where: str = "the prototxt") -> Message:
    """Parse a ``.prototxt`` (any Caffe message in text format) into a :class:`Message` tree.

    >>> net = parse_prototxt('name: "n" layer { name: "a" type: "ReLU" bottom: "x" top: "x" }')
    >>> net.message("layer").text("type")
    'ReLU'

    Raises:
        CaffeError: the text is not in protobuf's text format (the message gives the line).
    """
    return _Parser(text, where).message(None)
