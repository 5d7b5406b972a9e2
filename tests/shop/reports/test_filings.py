"""The annual reserved-share filing (issue #12): per unit and for officials, CSV and XLSX, with the
reports' own figures to the fen, and only for those who may see the unit."""
import csv
import io
from urllib.parse import quote

from openpyxl import load_workbook

from core.models import Role
from tests.certification.factories import certified_product
from tests.shop.helpers import place
from tests.traceability.factories import batch


def _paid_canteen_order(client, make, buyer, quantity=10):
    tea = certified_product(make, price_fen=12_345)
    batch(tea, quantity=100)
    order = place(client, make, buyer, (tea, quantity), payment_method="bank_transfer", purchase_order_no="XZJG-7")
    finance = make.headers(make.user(Role.FINANCE))
    assert client.post(f"/api/v1/orders/{order['id']}/confirm-transfer", headers=finance,
                       json={"amount_fen": order["total_fen"], "reference": "B-7"}).status_code == 200
    assert client.post(f"/api/v1/orders/{order['id']}/refund", headers=finance,
                       json={"amount_fen": 1_001, "reason": "短少"}).status_code == 200
    return order


def test_a_unit_files_its_year_with_the_reports_figures(client, make):
    buyer = make.user(Role.CANTEEN_BUYER)
    order = _paid_canteen_order(client, make, buyer)
    headers = make.headers(buyer)
    share = client.get(f"/api/v1/budget-units/{buyer.budget_unit_id}/reserved-share", headers=headers).get_json()
    assert share["purchased_fen"] == 123_450 - 1_001
    response = client.get(f"/api/v1/budget-units/{buyer.budget_unit_id}/reserved-share?format=csv", headers=headers)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    text = response.data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert ["已采购脱贫地区农副产品（元）", "1224.49"] in rows
    assert any(row[0] == order["number"] and row[2] == "XZJG-7" and row[-1] == "1224.49" for row in rows if len(row) > 2)
    xlsx = client.get(f"/api/v1/budget-units/{buyer.budget_unit_id}/reserved-share?format=xlsx", headers=headers)
    book = load_workbook(io.BytesIO(xlsx.data))
    assert book.sheetnames == ["汇总", "月度", "订单"]
    orders = list(book["订单"].iter_rows(min_row=2, values_only=True))
    assert orders[0][0] == order["number"] and float(orders[0][-1]) == 1224.49
    assert sum(float(row[1]) for row in book["月度"].iter_rows(min_row=2, values_only=True)) == 1224.49


def test_officials_get_every_unit_and_others_get_nothing(client, make):
    buyer = make.user(Role.CANTEEN_BUYER)
    _paid_canteen_order(client, make, buyer)
    official = make.headers(make.user(Role.OFFICIAL))
    book = load_workbook(io.BytesIO(client.get("/api/v1/reports/reserved-shares?format=xlsx", headers=official).data))
    units = list(book["各单位"].iter_rows(min_row=2, values_only=True))
    assert [row[0] for row in units] == [buyer.budget_unit_id] and float(units[0][5]) == 1224.49
    assert client.get("/api/v1/reports/reserved-shares?format=pdf", headers=official).status_code == 422
    other_unit = make.headers(make.user(Role.CANTEEN_BUYER))
    assert client.get(f"/api/v1/budget-units/{buyer.budget_unit_id}/reserved-share?format=csv",
                      headers=other_unit).status_code == 404
    assert client.get("/api/v1/reports/reserved-shares?format=csv", headers=other_unit).status_code == 403


def test_the_pages_link_the_filings(client, make):
    buyer = make.user(Role.CANTEEN_BUYER)
    _paid_canteen_order(client, make, buyer)
    client.post("/login", data={"email": buyer.email, "password": "password123"})
    html = client.get(f"/reports/canteens/{buyer.budget_unit_id}").get_data(as_text=True)
    assert "年度报备表" in html
    response = client.get(f"/reports/canteens/{buyer.budget_unit_id}/filing.xlsx")
    assert response.status_code == 200
    assert quote("预留份额年度报备") in response.headers["Content-Disposition"]
    assert load_workbook(io.BytesIO(response.data)).sheetnames == ["汇总", "月度", "订单"]


def test_control_characters_in_a_filter_or_a_unit_name_do_not_break_the_xlsx_files(client, make):
    """Found by the OpenAPI fuzz: openpyxl refuses a cell with a control character, which made
    ``?format=xlsx&township=a%0Cb`` (the filter is written on the 说明 sheet) a 500; a budget unit
    name with one did the same to the filing."""
    official = make.headers(make.user(Role.OFFICIAL))
    response = client.get("/api/v1/reports/village-sales?format=xlsx&township=%E9%BB%98%0C%E6%88%8E", headers=official)
    assert response.status_code == 200
    about = load_workbook(io.BytesIO(response.data))["说明"]
    assert "默戎" in [row[1] for row in about.iter_rows(values_only=True) if row[0] == "范围"][0]
    make.budget_unit(name="测试\x0b食堂")
    response = client.get("/api/v1/reports/reserved-shares?format=xlsx", headers=official)
    assert response.status_code == 200
    cells = [value for sheet in load_workbook(io.BytesIO(response.data)) for row in sheet.iter_rows(values_only=True)
             for value in row]
    assert "测试食堂" in cells
