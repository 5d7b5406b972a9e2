"""Money is integer fen end to end; this is the one place that formats it for people and reads
what people type."""
import re

#: A yuan amount as people type it: digits, at most two decimals (separators and ¥/元 are dropped).
_YUAN = re.compile(r"^(-?)(\d{1,16})(?:\.(\d{1,2}))?$")


def format_yuan(fen: int | None) -> str:
    """Format an amount in fen as ``¥1,234.56`` (negative amounts keep their sign)."""
    if fen is None:
        return "—"
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(int(fen)), 100)
    return f"{sign}¥{yuan:,}.{cents:02d}"


def format_wan_yuan(fen: int) -> str:
    """Format fen as 万元 with one decimal, for headline figures (¥150,000 → 15.0万元)."""
    return f"{fen / 1_000_000:.1f}万元"


def parse_yuan(text: str | None) -> int | None:
    """Parse a yuan amount typed on a form or in a spreadsheet ("1,200,000.5", "¥150000元") into
    integer fen; None if it is not one.

    A leading minus is kept so that validation can answer "不能为负数" rather than "not a number".
    """
    cleaned = re.sub(r"[\s,，¥￥元]", "", text or "")
    match = _YUAN.match(cleaned)
    if not match:
        return None
    sign, whole, cents = match.groups()
    fen = int(whole) * 100 + int((cents or "").ljust(2, "0"))
    return -fen if sign else fen
