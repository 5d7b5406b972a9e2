"""Check characters of the identifiers the domain relies on, and numbers as people type them."""

# GB 32100-2015: the 31-character alphabet (no I, O, Z, S, V) and position weights.
CREDIT_CODE_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_CODE_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
#: The largest row id (PostgreSQL ``integer``). A bigger number never names a row, and binding it
#: to an integer column fails on PostgreSQL (and past 2^63 on SQLite), so input stops at this bound.
ID_MAX = 2**31 - 1


def is_ascii_digits(text: str) -> bool:
    """True for a non-empty run of 0-9 only. Why not ``str.isdigit``: it is also true for "²"
    and other Unicode digits that ``int()`` refuses, which turned typed input into 500s."""
    return text.isascii() and text.isdigit()


def whole_number(text: str | None, maximum: int = ID_MAX) -> int | None:
    """A whole number from 0 to ``maximum`` typed in ASCII digits (surrounding spaces allowed), else None."""
    text = (text or "").strip()
    if not is_ascii_digits(text) or len(text) > len(str(maximum)):
        return None
    number = int(text)
    return number if number <= maximum else None


def credit_code_check_char(first17: str) -> str:
    """Return the check character for the first 17 characters of a credit code.

    :raise ValueError: when a character is outside the GB 32100 alphabet.
    """
    total = 0
    for char, weight in zip(first17, CREDIT_CODE_WEIGHTS):
        value = CREDIT_CODE_CHARSET.find(char)
        if value < 0:
            raise ValueError(f"invalid character {char!r}")
        total += value * weight
    return CREDIT_CODE_CHARSET[(31 - total % 31) % 31]


def is_valid_credit_code(code: str) -> bool:
    """True for an 18-character unified social credit code with a valid check character."""
    if not isinstance(code, str) or len(code) != 18:
        return False
    try:
        return credit_code_check_char(code[:17]) == code[17]
    except ValueError:
        return False


def gtin_check_digit(body: str) -> int:
    """Return the GS1 mod-10 check digit for the digits before it (weights 3,1,3,... from the right)."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return (10 - total % 10) % 10


def is_valid_gtin(gtin: str) -> bool:
    """True for a GTIN-8/12/13/14 of digits whose check digit is right."""
    if not isinstance(gtin, str) or not is_ascii_digits(gtin) or len(gtin) not in (8, 12, 13, 14):
        return False
    return gtin_check_digit(gtin[:-1]) == int(gtin[-1])


def gtin14(gtin: str) -> str:
    """Zero-pad a valid GTIN to the 14 digits GS1 Digital Link uses."""
    return gtin.zfill(14)
