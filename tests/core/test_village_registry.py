import re
from collections import Counter

import pytest

from core.village_registry import (
    COUNTIES,
    ZONE_LABELS,
    PlanVillage,
    load_plan_text,
    load_plan_villages,
    parse_plan_villages,
    parse_stated_counts,
)

ZONE_ORDER = ["demonstration", "key_support", "consolidation_1", "consolidation_2"]


@pytest.fixture(scope="module")
def villages():
    return load_plan_villages()


@pytest.fixture(scope="module")
def stated():
    return parse_stated_counts(load_plan_text())


def _raw_county_lines():
    """Every `县：N个村` line of the lists, read with a plain regex independent of the parser."""
    text = load_plan_text().split("\n注")[0]
    return [(m[1], int(m[2])) for m in re.finditer(r"^(\S+?[市县])：(\d+)个村\s*$", text, re.M)]


def test_labels_and_counties():
    assert ZONE_LABELS == {
        "demonstration": "乡村振兴示范区",
        "key_support": "乡村振兴重点帮扶区",
        "consolidation_1": "巩固拓展区Ⅰ型",
        "consolidation_2": "巩固拓展区Ⅱ型",
    }
    assert COUNTIES == ("吉首市", "凤凰县", "花垣县", "保靖县", "古丈县", "泸溪县", "永顺县", "龙山县")


def test_data_file_has_provenance_line():
    first = load_plan_text().splitlines()[0]
    assert first.startswith("# Source:") and "专栏2" in first


def test_total_is_1110(villages):
    assert len(villages) == 1110
    assert all(isinstance(v, PlanVillage) for v in villages)


def test_zone_totals_match_plan(villages, stated):
    actual = Counter(v.zone for v in villages)
    expected = {"demonstration": 135, "key_support": 369, "consolidation_1": 193, "consolidation_2": 413}
    assert dict(actual) == expected
    assert stated.zones == expected


def test_note_totals_agree_with_headings():
    # The note after the lists restates the totals; it must agree and must not be double counted.
    note = load_plan_text().split("\n注")[1]
    assert [int(n) for n in re.findall(r"共(\d+)个村", note)] == [135, 369, 606, 193, 413]


def test_county_counts_match_every_county_line(villages, stated):
    raw = _raw_county_lines()
    assert len(raw) == 32
    expected = {}
    for i, (county, n) in enumerate(raw):
        expected[(ZONE_ORDER[i // 8], county)] = n
    assert stated.counties == expected
    actual = Counter((v.zone, v.county) for v in villages)
    assert dict(actual) == expected
    for zone in ZONE_ORDER:
        assert sum(n for (z, _), n in expected.items() if z == zone) == stated.zones[zone]


def test_counties_known(villages):
    assert {v.county for v in villages} == set(COUNTIES)


def test_no_duplicate_village_keys(villages):
    keys = Counter((v.county, v.township, v.name) for v in villages)
    assert [k for k, n in keys.items() if n > 1] == []


def test_yongshun_four_tuanjie(villages):
    tj = [v for v in villages if v.county == "永顺县" and v.name == "团结村"]
    assert len(tj) == 4
    assert {v.township for v in tj} == {"石堤镇", "万坪镇", "毛坝乡", "两岔乡"}


def test_names_without_cun_kept_as_written(villages):
    keys = {(v.county, v.township, v.name) for v in villages}
    assert ("泸溪县", "洗溪镇", "布条坪") in keys
    assert ("永顺县", "首车镇", "龙潭") in keys
    assert ("永顺县", "万坪镇", "兴隆") in keys
    assert ("永顺县", "泽家镇", "西那") in keys
    odd = sorted(v.name for v in villages if not v.name.endswith(("村", "社区")))
    assert odd == sorted(["布条坪", "龙潭", "兴隆", "西那"])


def test_names_and_townships_clean(villages):
    bad = re.compile(r"[（）()、；;：:，,。\s]")
    for v in villages:
        for s in (v.name, v.township):
            assert s and not bad.search(s), v


def test_township_suffixes(villages):
    # Checked against the real data: every township is a 镇, 乡 or 街道.
    assert all(v.township.endswith(("镇", "乡", "街道")) for v in villages)


def test_irregular_spots_parsed(villages):
    keys = {(v.zone, v.county, v.township, v.name) for v in villages}
    # "（（河溪镇）楠木村"
    assert ("key_support", "吉首市", "河溪镇", "楠木村") in keys
    # "桐木村、；（石栏镇）"
    assert ("consolidation_1", "花垣县", "民乐镇", "桐木村") in keys
    assert ("consolidation_1", "花垣县", "石栏镇", "朋岩村") in keys
    # "坡脚村：（长乐乡）龙桥村"
    assert ("consolidation_1", "花垣县", "雅酉镇", "坡脚村") in keys
    assert ("consolidation_1", "花垣县", "长乐乡", "龙桥村") in keys
    # "大坝村、（迁陵镇）三联村"
    assert ("key_support", "保靖县", "清水坪镇", "大坝村") in keys
    assert ("key_support", "保靖县", "迁陵镇", "三联村") in keys
    # "拔古村（永茂镇）樟木村" (no separator before the heading)
    assert ("consolidation_2", "永顺县", "泽家镇", "拔古村") in keys
    assert ("consolidation_2", "永顺县", "永茂镇", "樟木村") in keys
    # 泸溪县's list line is followed by 永顺县's county line with no blank line between
    assert ("key_support", "泸溪县", "小章乡", "大水坪村") in keys


def test_plan_order(villages):
    assert villages[0] == PlanVillage("吉首市", "峒河街道", "上佬村", "demonstration")
    assert villages[-1] == PlanVillage("龙山县", "召市镇", "前卫村", "consolidation_2")


SYNTHETIC = """# comment line: ignored
专栏2  标题巩固拓展
\t乡

村

振

兴

示

范

区


\t共6个村

吉首市：4个村
（（河溪镇）楠木村、桐木村、；(丹青
镇) 大 兴
村：（太平镇））深坳
村
。
凤凰县：2个村
（沱江镇）龙潭、杜田村（山江镇）板畔村
\t脱

贫

巩

固

拓

展

区


\t脱贫攻坚成果巩固拓展区Ⅱ型：1个村

龙山县：1个村
（里耶镇）
巴沙村
注：到2025年
一、乡村振兴示范区：共6个村
"""


def test_synthetic_traps():
    got = parse_plan_villages(SYNTHETIC)
    assert got == [
        PlanVillage("吉首市", "河溪镇", "楠木村", "demonstration"),
        PlanVillage("吉首市", "河溪镇", "桐木村", "demonstration"),
        PlanVillage("吉首市", "丹青镇", "大兴村", "demonstration"),
        PlanVillage("吉首市", "太平镇", "深坳村", "demonstration"),
        PlanVillage("凤凰县", "沱江镇", "龙潭", "demonstration"),
        PlanVillage("凤凰县", "沱江镇", "杜田村", "demonstration"),
        PlanVillage("凤凰县", "山江镇", "板畔村", "demonstration"),
        PlanVillage("龙山县", "里耶镇", "巴沙村", "consolidation_2"),
    ]
    stated = parse_stated_counts(SYNTHETIC)
    assert stated.zones == {"demonstration": 6, "consolidation_2": 1}
    assert stated.counties == {
        ("demonstration", "吉首市"): 4,
        ("demonstration", "凤凰县"): 2,
        ("consolidation_2", "龙山县"): 1,
    }


def test_list_without_township_rejected():
    text = "乡村振兴示范区\n共1个村\n吉首市：1个村\n楠木村\n"
    with pytest.raises(ValueError):
        parse_plan_villages(text)
