"""Registry of the 1,110 脱贫村 listed in 专栏2 of the Xiangxi 14th five-year plan.

The list is parsed from ``core/data/plan_zhuanlan2.txt``, a verbatim copy of the plan text
(PDF extraction, with its irregularities). A village is identified by (county, township, name):
the same name occurs in different townships of one county.
"""

from __future__ import annotations

import functools
import pathlib
import re
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

DEMONSTRATION = "demonstration"
KEY_SUPPORT = "key_support"
CONSOLIDATION_1 = "consolidation_1"
CONSOLIDATION_2 = "consolidation_2"

ZONE_LABELS: dict[str, str] = {
    DEMONSTRATION: "乡村振兴示范区",
    KEY_SUPPORT: "乡村振兴重点帮扶区",
    CONSOLIDATION_1: "巩固拓展区Ⅰ型",
    CONSOLIDATION_2: "巩固拓展区Ⅱ型",
}

COUNTIES: tuple[str, ...] = ("吉首市", "凤凰县", "花垣县", "保靖县", "古丈县", "泸溪县", "永顺县", "龙山县")

DATA_FILE = pathlib.Path(__file__).parent / "data" / "plan_zhuanlan2.txt"


class PlanVillage(NamedTuple):
    county: str
    township: str
    name: str
    zone: str


@dataclass
class StatedCounts:
    zones: dict[str, int] = field(default_factory=dict)
    counties: dict[tuple[str, str], int] = field(default_factory=dict)


# "吉首市：9个村" — half-width colon and spaces tolerated.
_COUNTY_RE = re.compile(r"^(?P<county>[^\s:：（）()、；;]+?[市县])\s*[:：]\s*(?P<n>\d+)\s*个村")
# Zone total, either alone ("共135个村") or inline ("…巩固拓展区Ⅰ型：193个村").
_ZONE_COUNT_RE = re.compile(r"(?:共|[:：])\s*(?P<n>\d+)\s*个村")
# Township heading; one or more opening/closing parentheses because the plan doubles some
# ("（（河溪镇）"), and half-width ones are accepted too.
_TOWNSHIP_RE = re.compile(r"[（(]+(?P<township>[^（）()]*)[）)]+")
# Entry separators. Besides 、 and ； the plan once uses a full-width colon between entries
# ("坡脚村：（长乐乡）") and ends lists with 。; runs of them yield no empty entries ("桐木村、；").
_SEP_RE = re.compile(r"[、；;，,：:。.]+")
_WS_RE = re.compile(r"\s+")
_PENDING = "pending"  # "巩固拓展区" heading seen, Ⅰ/Ⅱ type not yet known


def _zone_of(text: str) -> str | None:
    """Return the zone code named by a heading, _PENDING, or None if it is not a heading."""
    if "示范区" in text:
        return DEMONSTRATION
    if "重点帮扶" in text:
        return KEY_SUPPORT
    if "巩固拓展" in text:
        # Check Ⅱ before Ⅰ: an ASCII "II" also contains "I".
        if "Ⅱ" in text or "II" in text:
            return CONSOLIDATION_2
        if "Ⅰ" in text or "I" in text:
            return CONSOLIDATION_1
        return _PENDING
    return None


def _events(text: str) -> Iterator[tuple[str, str | None, str, int | None]]:
    """Yield (kind, zone, county_or_body, number) events from the 专栏2 text in order."""
    zone: str | None = None
    county: str | None = None
    run: list[str] = []  # consecutive one-character lines

    def lines() -> Iterator[str]:
        for raw in text.splitlines():
            line = raw.strip()
            # The box title ("专栏2  差异化推进巩固拓展…") mentions 巩固拓展 but is not a zone.
            if not line or line.startswith("#") or line.startswith("专栏"):
                continue
            # The note after the lists restates the zone totals ("一、乡村振兴示范区：共135个村");
            # no villages follow, and reading it would count the totals twice.
            if line.startswith("注"):
                return
            yield line
        return

    for line in [*lines(), None]:
        # Zone headings are typeset vertically, one character per line ("乡/村/振/兴/示/范/区").
        # Collect such runs; a run that names no zone is a wrapped fragment of a list instead.
        if line is not None and len(line) == 1:
            run.append(line)
            continue
        if run:
            joined, run = "".join(run), []
            heading = _zone_of(joined)
            if heading is not None:
                zone, county = heading, None
                yield ("zone", zone, joined, None)
            elif county is not None:
                yield ("body", zone, joined, None)
            elif zone is not None:
                raise ValueError(f"unrecognised text in 专栏2: {joined!r}")
        if line is None:
            break

        m = _COUNTY_RE.match(line)
        if m:
            if zone is None or zone == _PENDING:
                raise ValueError(f"county line before its zone is known: {line!r}")
            county = m["county"]
            yield ("county", zone, county, int(m["n"]))
            continue

        has_list_marks = any(ch in line for ch in "（(、；")
        heading = None if has_list_marks else _zone_of(line)
        if heading is not None:
            # A more specific heading ("…巩固拓展区Ⅰ型：193个村") refines a pending one.
            zone, county = heading, None
            count = _ZONE_COUNT_RE.search(line)
            yield ("zone", zone, line, int(count["n"]) if count else None)
            continue

        m = _ZONE_COUNT_RE.match(line)
        if m and not has_list_marks and county is None and zone is not None:
            yield ("zone_count", zone, line, int(m["n"]))
            continue

        if county is not None:
            # Anything else inside a county is its list, possibly wrapped across several lines.
            yield ("body", zone, line, None)
        elif zone is not None:
            raise ValueError(f"unrecognised line in 专栏2: {line!r}")
        # Lines before the first zone (the 专栏 title) are ignored.


def _parse_block(zone: str, county: str, body: str) -> Iterator[PlanVillage]:
    """Yield the villages of one county's list within one zone."""
    # PDF extraction may break a line anywhere, even inside a name, so continuation lines are
    # joined with nothing; entries are delimited by explicit punctuation only.
    body = _WS_RE.sub("", body)
    headings = list(_TOWNSHIP_RE.finditer(body))
    if not headings:
        if _SEP_RE.sub("", body):
            raise ValueError(f"{county}: list without township heading: {body!r}")
        return
    if _SEP_RE.sub("", body[: headings[0].start()]):
        raise ValueError(f"{county}: villages before first township: {body!r}")
    for i, h in enumerate(headings):
        township = h["township"]
        if not township:
            raise ValueError(f"{county}: empty township heading in {body!r}")
        end = headings[i + 1].start() if i + 1 < len(headings) else len(body)
        # A heading can follow a name with no separator at all ("拔古村（永茂镇）"), so names
        # are the text between headings, split on separators.
        for name in _SEP_RE.split(body[h.end() : end]):
            if not name:
                continue
            if any(ch in name for ch in "（）()"):
                raise ValueError(f"{county}/{township}: unbalanced parenthesis in {name!r}")
            yield PlanVillage(county, township, name, zone)


def parse_plan_villages(text: str) -> list[PlanVillage]:
    """Parse 专栏2 text into PlanVillage records in plan order."""
    villages: list[PlanVillage] = []
    block: tuple[str, str] | None = None
    body: list[str] = []

    def flush() -> None:
        if block is not None:
            villages.extend(_parse_block(block[0], block[1], "".join(body)))

    for kind, zone, value, _n in _events(text):
        if kind == "body":
            body.append(value)
            continue
        flush()
        body = []
        block = (zone, value) if kind == "county" else None
    flush()
    return villages


def parse_stated_counts(text: str) -> StatedCounts:
    """Parse the plan's own stated totals per zone and per (zone, county)."""
    stated = StatedCounts()
    for kind, zone, value, n in _events(text):
        if n is None or zone == _PENDING:
            continue
        if kind in ("zone", "zone_count"):
            if zone in stated.zones and stated.zones[zone] != n:
                raise ValueError(f"conflicting totals for {zone}: {stated.zones[zone]} vs {n}")
            stated.zones[zone] = n
        elif kind == "county":
            key = (zone, value)
            if key in stated.counties:
                raise ValueError(f"duplicate county line for {key}")
            stated.counties[key] = n
    return stated


def load_plan_text() -> str:
    """Return the packaged verbatim 专栏2 text."""
    return DATA_FILE.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def load_plan_villages() -> tuple[PlanVillage, ...]:
    """Return the parsed packaged village list (cached; a tuple so callers cannot mutate it)."""
    return tuple(parse_plan_villages(load_plan_text()))
