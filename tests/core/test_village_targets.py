"""Officials set villages' yearly sales targets (one at a time, or by spreadsheet), and every
report, page and API that shows a target follows; every change is audited, bad input changes nothing."""
import csv
import io

import pytest
import sqlalchemy as sa

from core import village_targets
from core.audit import AuditEvent, verify_chain
from core.errors import Forbidden, NotFound, ValidationFailed
from core.extensions import db
from core.models import Role, Village, VillageSalesTarget
from core.timeutil import shanghai_today

YEAR = shanghai_today().year


def _overrides() -> list[tuple[int, int, int]]:
    db.session.expire_all()
    return list(db.session.execute(sa.select(VillageSalesTarget.village_id, VillageSalesTarget.year,
                                             VillageSalesTarget.target_fen).order_by(VillageSalesTarget.id)))


def _target_events() -> list[AuditEvent]:
    return list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_type == "village")
                                   .order_by(AuditEvent.id)))


def _sign_in(client, user):
    client.post("/login", data={"email": user.email, "password": "password123"})


# ---------------------------------------------------------------- service

def test_an_official_sets_a_years_target_and_it_is_audited_once(make):
    official = make.user(Role.OFFICIAL)
    village = make.village("花垣县")
    change = village_targets.set_target(official, village.id, YEAR, {"target_fen": 20_000_000, "reason": "州里下达"})
    assert (change.before_fen, change.after_fen, change.written) == (15_000_000, 20_000_000, True)
    assert db.session.get(Village, village.id).target_for(YEAR) == 20_000_000
    assert db.session.get(Village, village.id).target_for(YEAR + 1) == 15_000_000, "other years keep the default"
    again = village_targets.set_target(official, village.id, YEAR, {"target_fen": 20_000_000})
    assert not again.written
    [event] = _target_events()
    assert (event.action, event.actor_id, event.comment) == ("sales_target_set", official.id, "州里下达")
    assert '"from_fen": 15000000' in event.data and '"to_fen": 20000000' in event.data
    assert verify_chain().ok


def test_clearing_goes_back_to_the_default_and_clearing_nothing_is_404(make):
    admin = make.user(Role.ADMIN)
    village = make.village()
    village_targets.set_target(admin, village.id, YEAR, {"target_fen": 0})
    change = village_targets.clear_target(admin, village.id, YEAR, "误设")
    assert (change.before_fen, change.after_fen) == (0, 15_000_000)
    assert _overrides() == []
    with pytest.raises(NotFound):
        village_targets.clear_target(admin, village.id, YEAR)
    assert [e.action for e in _target_events()] == ["sales_target_set", "sales_target_cleared"]


@pytest.mark.parametrize("role", [Role.COUNTY_REVIEWER, Role.PREFECTURE_REVIEWER, Role.FINANCE, Role.CONSUMER,
                                  Role.COOPERATIVE, Role.CANTEEN_BUYER])
def test_only_officials_and_admins_set_targets(make, role):
    with pytest.raises(Forbidden):
        village_targets.set_target(make.user(role), make.village().id, YEAR, {"target_fen": 1})
    assert _overrides() == []


@pytest.mark.parametrize("year, data, field", [
    (2020, {"target_fen": 1}, "year"),
    (2101, {"target_fen": 1}, "year"),
    (YEAR, {"target_fen": -1}, "target_fen"),
    (YEAR, {"target_fen": 10_000_000_001}, "target_fen"),
    (YEAR, {"target_fen": "150000"}, "target_fen"),
    (YEAR, {"target_fen": 1.5}, "target_fen"),
    (YEAR, {}, "target_fen"),
    (YEAR, {"target_fen": 1, "reason": "长" * 501}, "reason"),
])
def test_bad_years_and_amounts_are_refused_and_change_nothing(make, year, data, field):
    with pytest.raises(ValidationFailed) as error:
        village_targets.set_target(make.user(Role.OFFICIAL), make.village().id, year, data)
    assert field in error.value.fields
    assert _overrides() == [] and _target_events() == []


# ---------------------------------------------------------------- API

def test_api_sets_reads_and_clears_a_target_and_the_village_and_report_follow(client, make):
    official = make.user(Role.OFFICIAL)
    village = make.village("古丈县")
    url = f"/api/v1/villages/{village.id}/sales-targets/{YEAR}"
    response = client.put(url, json={"target_fen": 30_000_000}, headers=make.headers(official))
    assert response.status_code == 200
    assert response.get_json() == {"village_id": village.id, "year": YEAR, "target_fen": 30_000_000, "overridden": True}
    listing = client.get(f"/api/v1/villages/{village.id}/sales-targets").get_json()
    assert listing == {"village_id": village.id, "default_target_fen": 15_000_000,
                       "items": [{"year": YEAR, "target_fen": 30_000_000}]}
    assert client.get(f"/api/v1/villages/{village.id}").get_json()["sales_target_fen"] == 30_000_000
    report = client.get(f"/api/v1/reports/village-sales?year={YEAR}&county=古丈县&per_page=2000",
                        headers=make.headers(official)).get_json()
    [item] = [item for item in report["items"] if item["village_id"] == village.id]
    assert item["target_fen"] == 30_000_000

    cleared = client.delete(url, headers=make.headers(official))
    assert cleared.status_code == 200 and cleared.get_json()["target_fen"] == 15_000_000
    assert client.get(f"/api/v1/villages/{village.id}").get_json()["sales_target_fen"] == 15_000_000
    assert client.delete(url, headers=make.headers(official)).status_code == 404


def test_api_refuses_strangers_and_bad_input_with_the_contract_shape(client, make):
    village = make.village()
    url = f"/api/v1/villages/{village.id}/sales-targets/{YEAR}"
    assert client.put(url, json={"target_fen": 1}).status_code == 401
    reviewer = make.user(Role.COUNTY_REVIEWER)
    assert client.put(url, json={"target_fen": 1}, headers=make.headers(reviewer)).status_code == 403
    official = make.headers(make.user(Role.OFFICIAL))
    bad = client.put(url, json={"target_fen": -5}, headers=official)
    assert bad.status_code == 422
    assert bad.get_json()["error"]["fields"]["target_fen"]
    assert client.put(f"/api/v1/villages/{village.id}/sales-targets/1999", json={"target_fen": 1},
                      headers=official).status_code == 422
    assert client.put(url, data="not json", content_type="application/json", headers=official).status_code == 400
    assert client.put(f"/api/v1/villages/999999/sales-targets/{YEAR}", json={"target_fen": 1},
                      headers=official).status_code == 404
    assert _overrides() == []


# ---------------------------------------------------------------- spreadsheets

def _filled(csv_text: str, edits: dict[int, str]) -> str:
    """Fill the target column of the rows of these village ids and clear every other target cell,
    as a spreadsheet would save it (a "180,000" cell quoted)."""
    rows = list(csv.reader(io.StringIO(csv_text.lstrip("\ufeff"))))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(rows[0])
    for row in rows[1:]:
        writer.writerow(row[:6] + [edits.get(int(row[0]), "")])
    return out.getvalue()


def test_export_lists_every_village_with_its_target_and_import_sets_them_all_or_nothing(make):
    official = make.user(Role.OFFICIAL)
    first, second = db.session.scalars(sa.select(Village).where(Village.county == "泸溪县")
                                       .order_by(Village.id).limit(2)).all()
    exported = village_targets.export_csv(YEAR, "泸溪县")
    assert exported.startswith("\ufeff村ID,县市,乡镇,村,分区,年度,销售目标（元）")
    rows = exported.strip().splitlines()
    count = db.session.scalar(sa.select(sa.func.count()).select_from(Village).where(Village.county == "泸溪县"))
    assert len(rows) == count + 1
    assert rows[1].endswith(f",{YEAR},150000")

    filled = _filled(exported, {first.id: "180,000", second.id: "¥165000.50"})
    # Chinese Excel saves CSV in GBK: that must import too.
    report = village_targets.import_csv(official, filled.encode("gb18030"), reason="2026年度目标")
    assert report.ok and (report.rows, report.changed, report.unchanged) == (2, 2, 0)
    assert sorted(_overrides()) == sorted([(first.id, YEAR, 18_000_000), (second.id, YEAR, 16_500_050)])
    again = village_targets.import_csv(official, filled.encode("utf-8"))
    assert (again.rows, again.changed, again.unchanged) == (2, 0, 2)
    assert len(_target_events()) == 2


@pytest.mark.parametrize("mangle, message", [
    (lambda rows, v: rows.__setitem__(1, rows[1].replace(v.name, "别的村", 1)), "不符"),
    (lambda rows, v: rows.__setitem__(1, "999999" + rows[1][rows[1].index(","):]), "不存在"),
    (lambda rows, v: rows.__setitem__(1, rows[1].rsplit(",", 1)[0] + ",十五万"), "不是金额"),
    (lambda rows, v: rows.__setitem__(1, rows[1].rsplit(",", 1)[0] + ",-1"), "0 到 1 亿元"),
    (lambda rows, v: rows.__setitem__(1, rows[1].replace(f",{YEAR},", ",2019,")), "年度"),
    (lambda rows, v: rows.__setitem__(0, "id,county,township,village,zone,year,target"), "表头"),
])
def test_a_bad_row_anywhere_imports_nothing_and_says_which_line(make, mangle, message):
    official = make.user(Role.OFFICIAL)
    village = db.session.scalars(sa.select(Village).where(Village.county == "吉首市").order_by(Village.id)).first()
    other = db.session.scalars(sa.select(Village).where(Village.county == "吉首市").order_by(Village.id.desc())).first()
    rows = _filled(village_targets.export_csv(YEAR, "吉首市"), {village.id: "200000", other.id: "170000"}).splitlines()
    mangle(rows, village)
    report = village_targets.import_csv(official, "\r\n".join(rows).encode("utf-8"))
    assert not report.ok and any(message in error for error in report.errors), report.errors
    assert _overrides() == [] and _target_events() == []


def test_import_refuses_files_that_are_not_text_or_too_big(make):
    official = make.user(Role.OFFICIAL)
    with pytest.raises(ValidationFailed):
        village_targets.import_csv(official, b"\xff\xfe\x00\x00" * 10)
    with pytest.raises(ValidationFailed):
        village_targets.import_csv(official, b"a" * (village_targets.MAX_IMPORT_BYTES + 1))


def test_command_line_exports_and_imports_as_the_page_does(runner, make, tmp_path):
    village = make.village("龙山县")
    out = tmp_path / "targets.csv"
    result = runner.invoke(args=["targets", "export", "--year", str(YEAR), "--county", "龙山县", str(out)])
    assert result.exit_code == 0, result.output
    out.write_text(_filled(out.read_text(encoding="utf-8"), {village.id: "210000"}), encoding="utf-8")
    result = runner.invoke(args=["targets", "import", str(out), "--reason", "州政府文件"])
    assert result.exit_code == 0, result.output
    assert "1 个村的目标有变化" in result.output
    assert _overrides() == [(village.id, YEAR, 21_000_000)]
    [event] = _target_events()
    assert event.actor_id is None and event.comment == "州政府文件"

    bad = tmp_path / "bad.csv"
    bad.write_text("村ID,县市\n1,吉首市\n", encoding="utf-8")
    result = runner.invoke(args=["targets", "import", str(bad)])
    assert result.exit_code == 1


# ---------------------------------------------------------------- pages

def test_county_page_shows_each_villages_target_for_the_year(client, make):
    village = make.village("保靖县")
    village_targets.set_target(make.user(Role.ADMIN), village.id, YEAR, {"target_fen": 25_000_000})
    html = client.get(f"/villages/保靖县?year={YEAR}").get_data(as_text=True)
    assert "目标 ¥250,000.00（单独设定）" in html
    assert "目标 ¥150,000.00" in html
    assert "设定</a>" not in html, "visitors see targets but no edit links"
    next_year = client.get(f"/villages/保靖县?year={YEAR + 1}").get_data(as_text=True)
    assert "单独设定" not in next_year


def test_official_sets_and_clears_a_target_on_the_village_page(client, make):
    official = make.user(Role.OFFICIAL)
    _sign_in(client, official)
    village = make.village("永顺县")
    page = client.get(f"/villages/{village.id}/targets")
    assert page.status_code == 200 and f'value="{YEAR}"' in page.get_data(as_text=True)
    response = client.post(f"/villages/{village.id}/targets",
                           data={"year": str(YEAR), "target_yuan": "160,000", "reason": "示范村加码"})
    assert response.status_code == 302
    html = client.get(f"/villages/{village.id}/targets").get_data(as_text=True)
    assert "¥160,000.00" in html and "示范村加码" in html and official.display_name in html
    assert _overrides() == [(village.id, YEAR, 16_000_000)]

    bad = client.post(f"/villages/{village.id}/targets", data={"year": str(YEAR), "target_yuan": "很多"})
    assert bad.status_code == 422 and "请填写金额" in bad.get_data(as_text=True)
    assert client.post(f"/villages/{village.id}/targets/{YEAR}/clear").status_code == 302
    assert _overrides() == []


def test_target_pages_are_for_officials_and_admins_only(client, make):
    village = make.village()
    assert client.get(f"/villages/{village.id}/targets").status_code == 302  # to the sign-in page
    _sign_in(client, make.user(Role.COUNTY_REVIEWER))
    assert client.get(f"/villages/{village.id}/targets").status_code == 403
    assert client.post(f"/villages/{village.id}/targets", data={"year": str(YEAR), "target_yuan": "1"}).status_code == 403
    assert client.get("/village-targets").status_code == 403
    assert client.get(f"/village-targets.csv?year={YEAR}").status_code == 403
    assert _overrides() == []


def test_spreadsheet_round_trip_through_the_pages(client, make):
    _sign_in(client, make.user(Role.ADMIN))
    village = make.village("凤凰县")
    download = client.get(f"/village-targets.csv?year={YEAR}&county=凤凰县")
    assert download.status_code == 200 and download.mimetype == "text/csv"
    assert "filename*=UTF-8''" in download.headers["Content-Disposition"]
    filled = _filled(download.get_data(as_text=True), {village.id: "155000"})
    response = client.post("/village-targets", data={"file": (io.BytesIO(filled.encode("utf-8")), "目标.csv")},
                           content_type="multipart/form-data")
    assert response.status_code == 302
    assert "已导入 1 行" in client.get(response.headers["Location"]).get_data(as_text=True)
    assert _overrides() == [(village.id, YEAR, 15_500_000)]

    broken = filled.replace(village.name, "无此村", 1)
    response = client.post("/village-targets", data={"file": (io.BytesIO(broken.encode("utf-8")), "目标.csv")},
                           content_type="multipart/form-data")
    assert response.status_code == 422 and "未做任何修改" in response.get_data(as_text=True)
    missing = client.post("/village-targets", data={}, content_type="multipart/form-data")
    assert missing.status_code == 422


def test_an_untouched_spreadsheet_or_the_default_value_pins_nothing(make):
    official = make.user(Role.OFFICIAL)
    report = village_targets.import_csv(official, village_targets.export_csv(YEAR, "古丈县").encode("utf-8"))
    assert report.ok and report.changed == 0 and report.unchanged == report.rows > 0
    change = village_targets.set_target(official, make.village().id, YEAR, {"target_fen": 15_000_000})
    assert not change.written
    assert _overrides() == [] and _target_events() == []


def test_odd_digits_and_broken_csv_are_clear_errors_not_crashes(client, make):
    assert client.get("/villages/花垣县?year=²").status_code == 200  # falls back to this year
    official = make.user(Role.OFFICIAL)
    with pytest.raises(ValidationFailed) as error:
        village_targets.import_csv(official, ("村ID,县市,乡镇,村,分区,年度,销售目标（元）\r\n1,x,y,z,,2026,\""
                                              + "9" * 140_000 + "\"\r\n").encode("utf-8"))
    assert error.value.code == "invalid_csv"
    village = make.village()
    text = f"村ID,县市,乡镇,村,分区,年度,销售目标（元）\r\n¹,{village.county},{village.township},{village.name},,²,1\r\n"
    report = village_targets.import_csv(official, text.encode("utf-8"))
    assert not report.ok and "不存在" in report.errors[0]
    _sign_in(client, official)
    response = client.post(f"/villages/{village.id}/targets", data={"year": "²⁰²⁶", "target_yuan": "1"})
    assert response.status_code == 422 and _overrides() == []
