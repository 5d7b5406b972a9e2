"""Money is integer fen end to end; this is the one place that formats it for people."""


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
