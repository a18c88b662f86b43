"""Likely personal data in model output: detect it, count it, replace it with typed placeholders.

Detected kinds, each replaced by its placeholder:

- ``EMAIL``: ``name@example.org``.
- ``CARD``: payment card numbers, 13 to 19 digits (spaces or hyphens allowed between digits),
  issuer prefix 2-6, and a valid Luhn checksum.
- ``IBAN``: country code, check digits and account number (spaces allowed every four
  characters), valid ISO 13616 mod-97 checksum.
- ``IP``: IPv4 dotted quads (each octet 0-255) and IPv6 addresses (validated by `ipaddress`).
- ``PHONE``: ``+`` and 8-15 digits, or 10-15 digits in phone-style groups that start with a
  trunk ``0`` (``020 7946 0958``) or have the North American shape (``(555) 123-4567``);
  date-shaped numbers and lists of numbers are not phones.

The checks (Luhn, mod-97, octet ranges, digit counts) are what keep dates, version numbers,
order ids and maths (``3.14159``, ``2024-03-15``, ``v1.2.3``, ``#100234``) untouched. The
export scans every text it writes, and the detectors' regexes are slow on long prose, so
`could_contain` first rules out, at C speed, texts no detector can match.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

EMAIL = "EMAIL"
PHONE = "PHONE"
CARD = "CARD"
IBAN = "IBAN"
IP = "IP"
KINDS: tuple[str, ...] = (EMAIL, CARD, IBAN, IP, PHONE)

_EMAIL_RE = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])",
    re.ASCII,
)
# Digits with single spaces or hyphens between them; the Luhn check decides.
_CARD_RE = re.compile(r"(?<![\w.,-])[2-6]\d(?:[ -]?\d){11,17}(?![\w-]|[.,]\d)", re.ASCII)
# Country code, check digits, then groups; a trailing group may be short.
_IBAN_RE = re.compile(
    r"(?<![\w-])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?!\w)", re.ASCII
)
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
# Not after "v"/"." (v1.2.3.4, 1.2.3.4.5) and not followed by another ".digit".
_IPV4_RE = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)", re.ASCII)
_IPV6_RE = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|:)?(?![\w:])", re.ASCII
)
# A phone candidate: optional +, digits with phone-style separators, ending on a digit.
_PHONE_RE = re.compile(r"(?<![\w.,/+-])(?:\+|\(\+?)?\d[\d ().-]{5,22}\d(?![\w]|[.,/-]\d)", re.ASCII)
_DATE_RE = re.compile(
    r"\d{4}[-./ ]\d{1,2}[-./ ]\d{1,2}|\d{1,2}[-./ ]\d{1,2}[-./ ]\d{2,4}|\d{4}\s*[-/]\s*\d{2,4}",
    re.ASCII,
)
_NANP_RE = re.compile(r"\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}", re.ASCII)
_IBAN_LENGTHS = range(15, 35)


def luhn_valid(digits: str) -> bool:
    """The payment card checksum: doubling every second digit from the right, total % 10 == 0."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(compact: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to 10..35, mod 97 == 1."""
    if len(compact) not in _IBAN_LENGTHS or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(char, 36)) for char in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


def _card(match: re.Match[str]) -> tuple[int, int] | None:
    candidate = match.group()
    digits = candidate.replace(" ", "").replace("-", "")
    # Mixed separators ("4111 1111-1111") are not how cards are written, nor are short groups
    # ("2 4 6 8 10 12 14 16": a sequence of numbers); cards group by 4 (Amex 4-6-5).
    if " " in candidate and "-" in candidate:
        return None
    if min(len(group) for group in re.split(r"[ -]", candidate)) < 3:
        return None
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return match.span()
    return None


def _iban(match: re.Match[str]) -> tuple[int, int] | None:
    # The greedy match may have swallowed a following word; retry shorter at group boundaries.
    start, end = match.span()
    text = match.group()
    while True:
        if iban_valid(text.replace(" ", "")):
            return start, start + len(text)
        cut = text.rfind(" ")
        if cut <= 4:
            return None
        text = text[:cut]


def _ipv4(match: re.Match[str]) -> tuple[int, int] | None:
    return match.span()


def _ipv6(match: re.Match[str]) -> tuple[int, int] | None:
    candidate = match.group()
    if not any(char.isdigit() for char in candidate) or candidate.count(":") < 2:
        return None
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return None
    return match.span()


def _phone(match: re.Match[str]) -> tuple[int, int] | None:
    candidate = match.group()
    digits = sum(char.isdigit() for char in candidate)
    if candidate.count("(") != candidate.count(")") or "." in candidate and "(" in candidate:
        return None
    # One dot is a decimal ("1234 5678.25"), not a dotted phone number ("555.123.4567").
    if candidate.count(".") == 1:
        return None
    if _DATE_RE.fullmatch(candidate.strip("()+ ")):
        return None
    if candidate.startswith(("+", "(+")):
        return match.span() if 8 <= digits <= 15 else None
    # Without a country code a number must look like one: 10-15 digits in separated groups,
    # starting with a trunk "0" (020 7946 0958, 06 12 34 56 78) or shaped like a North American
    # number ((555) 123-4567). Lists of numbers ("12 15 18 21 24") are neither.
    groups = [group for group in re.split(r"[ ().-]+", candidate) if group]
    if not 10 <= digits <= 15 or len(groups) < 2:
        return None
    if not (candidate.lstrip("(").startswith("0") or _NANP_RE.fullmatch(candidate)):
        return None
    # Decimal maths like "3.14159 26535" and dotted ids are not phone numbers.
    if "." in candidate and not all(len(group) >= 2 for group in groups):
        return None
    return match.span()


@dataclass(frozen=True)
class _Detector:
    kind: str
    pattern: re.Pattern[str]
    check: Callable[[re.Match[str]], tuple[int, int] | None]
    could_match: Callable[[str], bool]


# Digits and the separators phone and card numbers allow become "0", capitals "U", the rest "x".
def _shape_table() -> bytes:
    table = bytearray(b"x" * 256)
    for char in b"0123456789 ()-":
        table[char] = ord("0")
    for char in range(ord("A"), ord("Z") + 1):
        table[char] = ord("U")
    return bytes(table)


_SHAPE_TABLE = _shape_table()
# Card and phone numbers need 8+ digits in one run of digits and " ().-": without a dot, 8+
# zeros in shape. A phone number with dots has at least two (one makes it a decimal), with only
# digits and separators between them and then up to its last digit, as IPv4 has; this pattern
# runs on the text itself, where a digit and a separator differ. IBAN needs two capitals then
# two digits. Each pattern starts with a literal, which `re` scans for fast.
_DOTTED_NUMBER = re.compile(rb"\.[\d ()-]*\.[\d ()-]*\d")
_IBAN_SHAPE = re.compile(rb"UU00")


def could_contain(text: str) -> bool:
    """False only when `find(text)` is certainly empty: cheap enough for every text exported.

    Each detector needs one of: an "@" (email); "::" or seven ":" (IPv6); one of the patterns
    above (non-ASCII bytes match none of them: the detectors match ASCII only). A pattern found
    in one text is found in several texts joined, so a whole dialogue can be checked at once.
    """
    if "@" in text:
        return True
    if ":" in text and ("::" in text or text.count(":") >= 7):
        return True
    data = text.encode()
    if _DOTTED_NUMBER.search(data) is not None:
        return True
    shape = data.translate(_SHAPE_TABLE)
    return b"00000000" in shape or _IBAN_SHAPE.search(shape) is not None


def _has_digit(text: str) -> bool:
    # Cheaper than a regex on long text: the digits most often present in prose come first.
    return any(digit in text for digit in "0123456789")


_DETECTORS: tuple[_Detector, ...] = (
    _Detector(EMAIL, _EMAIL_RE, lambda m: m.span(), lambda text: "@" in text),
    _Detector(IBAN, _IBAN_RE, _iban, _has_digit),
    _Detector(CARD, _CARD_RE, _card, _has_digit),
    _Detector(IP, _IPV4_RE, _ipv4, lambda text: "." in text),
    _Detector(IP, _IPV6_RE, _ipv6, lambda text: "::" in text or text.count(":") >= 7),
    _Detector(PHONE, _PHONE_RE, _phone, _has_digit),
)


def find(text: str) -> list[tuple[int, int, str]]:
    """Non-overlapping (start, end, kind) spans of likely personal data, in text order.

    Detectors run in a fixed priority (email, IBAN, card, IP, phone): a span claimed by an
    earlier one is not reused, so a card number is never also reported as a phone number.
    """
    if not could_contain(text):
        return []
    spans: list[tuple[int, int, str]] = []
    for detector in _DETECTORS:
        if not detector.could_match(text):
            continue
        for match in detector.pattern.finditer(text):
            span = detector.check(match)
            if span is None:
                continue
            start, end = span
            if any(start < taken_end and taken_start < end for taken_start, taken_end, _ in spans):
                continue
            spans.append((start, end, detector.kind))
    spans.sort()
    return spans


def count(text: str) -> Counter[str]:
    """How many of each kind `text` contains."""
    return Counter(kind for _, _, kind in find(text))


def scrub(text: str) -> tuple[str, Counter[str]]:
    """`text` with each detected span replaced by ``[KIND]``, and the replacements per kind."""
    spans = find(text)
    if not spans:
        return text, Counter()
    parts: list[str] = []
    cursor = 0
    for start, end, kind in spans:
        parts.append(text[cursor:start])
        parts.append(f"[{kind}]")
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts), Counter(kind for _, _, kind in spans)
