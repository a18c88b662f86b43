"""PII detection and scrubbing on a table of positive and negative examples."""

from __future__ import annotations

import pytest

from review import pii

# (text, expected scrubbed text)
POSITIVE = [
    ("Write to jane.doe@example.org today.", "Write to [EMAIL] today."),
    ("mail: a_b+tag@mail.co.uk", "mail: [EMAIL]"),
    ("Call +44 20 7946 0958 now", "Call [PHONE] now"),
    ("Call (555) 123-4567.", "Call [PHONE]."),
    ("My number is 555-123-4567, thanks", "My number is [PHONE], thanks"),
    ("Phone 020 7946 0958.", "Phone [PHONE]."),
    ("Appelle le 06 12 34 56 78 ce soir.", "Appelle le [PHONE] ce soir."),
    ("Office: 555.123.4567", "Office: [PHONE]"),
    ("+14155552671", "[PHONE]"),
    ("Card 4111 1111 1111 1111 expires soon", "Card [CARD] expires soon"),
    ("card 4111-1111-1111-1111", "card [CARD]"),
    ("pay with 5555555555554444.", "pay with [CARD]."),
    ("Amex 378282246310005", "Amex [CARD]"),
    ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN [IBAN] please"),
    ("IBAN DE89370400440532013000.", "IBAN [IBAN]."),
    ("to FR14 2004 1010 0505 0001 3M02 606 BY friday", "to [IBAN] BY friday"),
    ("Server at 192.168.1.20.", "Server at [IP]."),
    ("from 8.8.8.8, then", "from [IP], then"),
    ("IPv6 2001:db8:85a3::8a2e:370:7334 is set", "IPv6 [IP] is set"),
    ("loopback ::1 and fe80::1", "loopback [IP] and [IP]"),
    (
        "full 2001:0db8:0000:0000:0000:ff00:0042:8329.",
        "full [IP].",
    ),
    (
        "Ask bob@example.com or call +1 415 555 2671.",
        "Ask [EMAIL] or call [PHONE].",
    ),
]

NEGATIVE = [
    "The meeting is on 2024-03-15 at 10:30.",
    "Born 15/03/1990 in Leeds.",
    "Deadline 03.15.2024",
    "Upgrade to version 2.10.4 or v1.2.3.4 today.",
    "Python 3.11.4 was released.",
    "Order #100234 and order ORD-55501234 shipped.",
    "Tracking id 1234567890123 (not a card).",
    "pi is about 3.14159 and e is 2.71828.",
    "sin(30°) = 0.5, so 2 × 0.5 = 1.",
    "The population grew from 1,000,000 to 1,250,000.",
    "Time 12:30:45 and ratio 16:9.",
    "C++ uses std::vector and Foo::bar.",
    "Invoice 4111 1111 1111 1112 has a bad checksum.",
    "Reference GB00WEST12345698765432 fails mod-97.",
    "The range 1990-2024 is long.",
    "Score 256.300.1.1 is not an address.",
    "Add 12345 and 67890.",
    "Years 1999 - 2005",
    "ISO 8601: 2024-03-15T10:30:00Z",
    "A 10 x 10 grid has 100 cells; 45 degrees; 90 %.",
    "user at example dot com",
    "x = 1.5e10 and y = 3.0",
    "Count along: 1 2 3 4 5 6 7 8 9 10.",
    "The sequence 12 15 18 21 24 27 grows by 3.",
    "Even numbers 2 4 6 8 10 12 14 16 18 20 22.",
    "Multiples of 100: 100 200 300 400 500.",
]


@pytest.mark.parametrize(("text", "expected"), POSITIVE)
def test_scrub_replaces_personal_data(text: str, expected: str) -> None:
    scrubbed, counts = pii.scrub(text)
    assert scrubbed == expected
    assert sum(counts.values()) == expected.count("[")


@pytest.mark.parametrize("text", NEGATIVE)
def test_scrub_leaves_non_personal_numbers(text: str) -> None:
    assert pii.scrub(text) == (text, {})
    assert pii.find(text) == []


def test_counts_per_kind() -> None:
    text = "a@b.org, c@d.org, 4111 1111 1111 1111, 10.0.0.1, +44 20 7946 0958"
    assert pii.count(text) == {"EMAIL": 2, "CARD": 1, "IP": 1, "PHONE": 1}


def test_card_is_not_also_a_phone() -> None:
    assert pii.find("4111 1111 1111 1111") == [(0, 19, "CARD")]


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4111111111111111", True), ("4111111111111112", False), ("79927398713", True)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert pii.luhn_valid(digits) is valid


@pytest.mark.parametrize(
    ("iban", "valid"),
    [
        ("GB82WEST12345698765432", True),
        ("GB83WEST12345698765432", False),
        ("DE89370400440532013000", True),
        ("XX00", False),
    ],
)
def test_iban(iban: str, valid: bool) -> None:
    assert pii.iban_valid(iban) is valid


def test_placeholders_are_not_detected_again() -> None:
    scrubbed, _ = pii.scrub("call +44 20 7946 0958 or mail x@y.org")
    assert pii.find(scrubbed) == []
