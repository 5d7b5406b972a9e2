"""履约评价 and product reviews (issue #12): after completion the buyer rates each supplying
cooperative (quality, delivery, service) once; the cooperative and its reviewers see the
ratings; buyers review products they received, shown publicly."""
from core.models import Role
from tests.certification.factories import certified_product
from tests.shop.helpers import completed_event, deliver, place
from tests.traceability.factories import batch


def _completed_online_order(client, make):
    tea = certified_product(make)
    batch(tea, quantity=10)
    buyer = make.user(display_name="李四")
    order = place(client, make, buyer, (tea, 2))
    assert deliver(client, completed_event(order)).status_code == 200
    coop = make.headers(make.user(Role.COOPERATIVE, cooperative=tea.cooperative))
    client.post(f"/api/v1/orders/{order['id']}/ship", headers=coop, json={"carrier": "顺丰", "tracking_number": "SF12345678"})
    return tea, buyer, order


RATING = {"quality": 5, "delivery": 4, "service": 4, "comment": "茶叶新鲜，送货准时"}


def test_a_buyer_rates_the_cooperative_once_after_completion(client, make):
    tea, buyer, order = _completed_online_order(client, make)
    url = f"/api/v1/orders/{order['id']}/ratings"
    body = {**RATING, "cooperative_id": tea.cooperative_id}
    early = client.post(url, headers=make.headers(buyer), json=body)
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "order_not_completed"
    assert client.post(f"/api/v1/orders/{order['id']}/confirm-receipt", headers=make.headers(buyer)).status_code == 200

    rated = client.post(url, headers=make.headers(buyer), json=body)
    assert rated.status_code == 201, rated.get_json()
    again = client.post(url, headers=make.headers(buyer), json=body)
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "already_rated"

    member = make.headers(make.user(Role.COOPERATIVE, cooperative=tea.cooperative))
    seen = client.get(f"/api/v1/cooperatives/{tea.cooperative_id}/ratings", headers=member).get_json()
    assert seen["count"] == 1 and seen["averages"] == {"quality": "5.0", "delivery": "4.0", "service": "4.0"}
    assert seen["items"][0]["comment"] == "茶叶新鲜，送货准时"
    county = tea.cooperative.village.county
    reviewer = make.headers(make.user(Role.COUNTY_REVIEWER, county=county))
    assert client.get(f"/api/v1/cooperatives/{tea.cooperative_id}/ratings", headers=reviewer).status_code == 200
    other_county = "凤凰县" if county != "凤凰县" else "古丈县"
    outsider = make.headers(make.user(Role.COUNTY_REVIEWER, county=other_county))
    assert client.get(f"/api/v1/cooperatives/{tea.cooperative_id}/ratings", headers=outsider).status_code == 404
    other_coop = make.headers(make.user(Role.COOPERATIVE))
    assert client.get(f"/api/v1/cooperatives/{tea.cooperative_id}/ratings", headers=other_coop).status_code == 404


def test_ratings_are_checked(client, make):
    tea, buyer, order = _completed_online_order(client, make)
    client.post(f"/api/v1/orders/{order['id']}/confirm-receipt", headers=make.headers(buyer))
    url = f"/api/v1/orders/{order['id']}/ratings"
    for wrong in ({**RATING, "cooperative_id": tea.cooperative_id, "quality": 6},
                  {**RATING, "cooperative_id": tea.cooperative_id, "delivery": 0},
                  {**RATING, "cooperative_id": tea.cooperative_id, "service": "5"},
                  {**RATING, "cooperative_id": tea.cooperative_id, "stars": 5},
                  {"cooperative_id": tea.cooperative_id}):
        assert client.post(url, headers=make.headers(buyer), json=wrong).status_code == 422, wrong
    foreign = make.cooperative()
    assert client.post(url, headers=make.headers(buyer), json={**RATING, "cooperative_id": foreign.id}).status_code == 404
    stranger = make.user()
    assert client.post(url, headers=make.headers(stranger),
                       json={**RATING, "cooperative_id": tea.cooperative_id}).status_code == 404


def test_product_reviews_are_public_with_the_reviewer_masked(client, make):
    tea, buyer, order = _completed_online_order(client, make)
    client.post(f"/api/v1/orders/{order['id']}/confirm-receipt", headers=make.headers(buyer))
    url = f"/api/v1/orders/{order['id']}/reviews"
    assert client.post(url, headers=make.headers(buyer), json={"product_id": tea.id, "rating": 4,
                                                                "comment": "回甘明显"}).status_code == 201
    assert client.post(url, headers=make.headers(buyer), json={"product_id": tea.id, "rating": 5}).status_code == 409
    public = client.get(f"/api/v1/products/{tea.id}/reviews").get_json()
    assert public["count"] == 1 and public["average"] == "4.0"
    assert public["items"][0]["reviewer"] == "李**" and public["items"][0]["comment"] == "回甘明显"
    assert "buyer_id" not in public["items"][0] and "reviewer_id" not in public["items"][0]
    assert client.get("/api/v1/products/999999/reviews").status_code == 404
