"""INCRBYFLOAT arithmetic done the way redis does it, to the last digit.

redis parses both operands with ``strtold``, adds them as x87 80-bit ``long
double`` values (64-bit significand) and prints the sum with ``%.17Lf``,
trailing zeros removed. A Python ``float`` has 53 bits, so it would print
other digits (redis turns ``1e10 + 10.6`` into ``10000000010.59999999962747097``).
Here each value is an exact :class:`~fractions.Fraction` rounded to the
nearest 80-bit long double (round half to even, subnormals and overflow
included), which reproduces redis's replies exactly.
"""

from __future__ import annotations

import re
from fractions import Fraction

#: redis's MAX_LONG_DOUBLE_CHARS: longer operands are no floats, longer results print as "".
MAX_LONG_DOUBLE_CHARS = 5 * 1024
_SIGNIFICAND_BITS = 64
_MIN_EXP = -16445  # exponent of the smallest subnormal (2**-16445)
_OVERFLOW = Fraction(2**16384)  # the first value beyond the largest long double
_DIGITS_CHUNK = 4000  # stay under Python's int <-> str digit limit
_CHUNK_SCALE: int = 10**_DIGITS_CHUNK

_DECIMAL = re.compile(rb"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?")
_HEX = re.compile(rb"([+-]?)0[xX]([0-9a-fA-F]*)(?:\.([0-9a-fA-F]*))?(?:[pP]([+-]?[0-9]+))?")
_INFINITY = re.compile(rb"([+-]?)(?:inf|infinity)", re.IGNORECASE)
_SPACE = b" \t\n\v\f\r"


class Infinite:
    """An infinite operand (``strtold`` accepts ``inf``); any sum with it is an error."""

    __slots__ = ()


INFINITE = Infinite()


def _int10(digits: bytes) -> int:
    digits = digits.lstrip(b"0")
    if len(digits) <= _DIGITS_CHUNK:
        return int(digits or b"0")
    head = digits[:-_DIGITS_CHUNK]
    return _int10(head) * _CHUNK_SCALE + int(digits[-_DIGITS_CHUNK:])


def _str10(number: int) -> str:
    if number < _CHUNK_SCALE:
        return str(number)
    high, low = divmod(number, _CHUNK_SCALE)
    return _str10(high) + str(low).zfill(_DIGITS_CHUNK)


def _exponent(digits: bytes | None, limit: int) -> int:
    """A decimal exponent, clamped to +-``limit`` (beyond it every value over/underflows)."""
    if not digits:
        return 0
    sign = -1 if digits[:1] == b"-" else 1
    body = digits.lstrip(b"+-").lstrip(b"0")
    if len(body) > 7:
        return sign * limit
    return sign * min(int(body or b"0"), limit)


def round_long_double(value: Fraction) -> Fraction | None:
    """``value`` rounded to the nearest x87 long double; None when that overflows."""
    if value == 0:
        return value
    negative = value < 0
    num, den = abs(value.numerator), value.denominator
    exp = num.bit_length() - den.bit_length()
    if (num < den << exp) if exp >= 0 else (num << -exp < den):
        exp -= 1  # now 2**exp <= |value| < 2**(exp + 1)
    shift = max(exp - (_SIGNIFICAND_BITS - 1), _MIN_EXP)
    if shift >= 0:
        den <<= shift
    else:
        num <<= -shift
    mantissa, rest = divmod(num, den)
    if 2 * rest > den or (2 * rest == den and mantissa & 1):
        mantissa += 1
    result = Fraction(mantissa << shift) if shift >= 0 else Fraction(mantissa, 1 << -shift)
    if result >= _OVERFLOW:
        return None
    return -result if negative else result


def parse_long_double(text: bytes) -> Fraction | Infinite | None:
    """redis's ``string2ld``: the long double in ``text``, or None when it is not a valid float.

    Like ``strtold`` it takes decimal and hex (``0x1.8p3``) forms and
    ``inf``/``infinity``; like redis it refuses leading blanks, trailing
    bytes, NaN, overflow and values so small they round to zero. The C
    string ends at a NUL byte.
    """
    if not text or len(text) >= MAX_LONG_DOUBLE_CHARS or text[0] in _SPACE:
        return None
    nul = text.find(b"\0")
    if nul >= 0:
        text = text[:nul]
    match = _HEX.fullmatch(text)
    if match is not None:
        sign, whole, frac, exp = match.groups()
        frac = frac or b""
        if not whole and not frac:
            return None
        mantissa = int(whole + frac or b"0", 16)
        if not mantissa:
            return Fraction(0)
        scale = _exponent(exp, 1 << 20) - 4 * len(frac)
        magnitude = mantissa.bit_length() + scale
        if magnitude > 16400 or magnitude < _MIN_EXP - 2:
            return None
        value = Fraction(mantissa) * (Fraction(2) ** scale)
    else:
        match = _DECIMAL.fullmatch(text)
        if match is None:
            inf = _INFINITY.fullmatch(text)
            return INFINITE if inf is not None else None
        sign, whole, frac, exp = match.groups()
        frac = frac or b""
        if not whole and not frac:
            return None
        mantissa = _int10(whole + frac)
        if not mantissa:
            return Fraction(0)
        scale = _exponent(exp, 1 << 20) - len(frac)
        magnitude = len(_str10(mantissa)) + scale
        if magnitude > 4940 or magnitude < -4960:
            return None
        value = Fraction(mantissa) * (Fraction(10) ** scale)
    rounded = round_long_double(value)
    if rounded is None or rounded == 0:
        return None  # ERANGE: overflow, or underflow to zero
    return -rounded if sign == b"-" else rounded


def format_long_double(value: Fraction) -> bytes:
    """``%.17Lf`` with trailing zeros (and a bare point) removed, ``-0`` as ``0``: redis's
    human-friendly long double. A result longer than redis's buffer is ``b""``, as in redis."""
    scaled = abs(value) * 10**17
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest > scaled.denominator or (2 * rest == scaled.denominator and whole & 1):
        whole += 1
    digits = _str10(whole).rjust(18, "0")
    text = ("-" if value < 0 else "") + digits[:-17] + "." + digits[-17:]
    if len(text) + 1 > MAX_LONG_DOUBLE_CHARS:
        return b""
    text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    return text.encode()


class FloatError(ValueError):
    """INCRBYFLOAT's errors, with redis's messages."""


NOT_A_FLOAT = "value is not a valid float"
NAN_OR_INFINITY = "increment would produce NaN or Infinity"


def incr_by_float(current: bytes | None, increment: bytes) -> bytes:
    """The new value INCRBYFLOAT stores (and replies) for ``current`` (None: no key) + ``increment``."""
    base = Fraction(0) if current is None else parse_long_double(current)
    delta = parse_long_double(increment)
    if base is None or delta is None:
        raise FloatError(NOT_A_FLOAT)
    if isinstance(base, Infinite) or isinstance(delta, Infinite):
        raise FloatError(NAN_OR_INFINITY)
    total = round_long_double(base + delta)
    if total is None:
        raise FloatError(NAN_OR_INFINITY)
    return format_long_double(total)
