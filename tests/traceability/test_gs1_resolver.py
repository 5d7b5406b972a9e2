"""GS1 resolver behaviour on trace URLs (issue #13): a linkset (RFC 9264) for resolver clients,
307 redirects to one link type, a resolver description; none of them counts as a consumer scan."""
import pytest
import sqlalchemy as sa

from core.extensions import db
from tests.traceability.helpers import path_of
from tests.traceability.test_views import PHONE, coop, gtin_batch, plain_batch, urls_of  # noqa: F401 (fixtures)
from traceability import services

VOC = "https://gs1.org/voc/"


def _count(client, url) -> int:
    return client.get(path_of(url), headers={"Accept": "application/json", **PHONE}).get_json()["scans"]["count"]


@pytest.mark.parametrize("which", ["gtin_batch", "plain_batch"])
@pytest.mark.parametrize("how", ["accept", "query"])
def test_a_linkset_names_product_certificate_and_traceability_links(client, request, which, how):
    batch = request.getfixturevalue(which)
    url = urls_of(batch)["item"]
    path = path_of(url)
    if how == "accept":
        response = client.get(path, headers={"Accept": "application/linkset+json"})
    else:
        response = client.get(path + "&linkType=linkset")
    assert response.status_code == 200 and response.mimetype == "application/linkset+json"
    [links] = response.get_json()["linkset"]
    assert links["anchor"].endswith(path.split("?")[0] + "?s=" + path.split("?s=")[1].split("&")[0])
    assert links[VOC + "pip"][0]["href"].endswith(f"/products/{batch.product.id}")
    assert links[VOC + "certificationInfo"][0]["href"].endswith(f"/catalogue/{batch.product.id}")
    assert links[VOC + "traceability"][0]["href"] == links["anchor"]
    assert links[VOC + "pip"][0]["hreflang"] == ["zh-CN"] and links[VOC + "pip"][0]["title"]
    assert response.headers["Cache-Control"] == "no-store"


def test_resolver_requests_are_not_counted_as_scans(client, gtin_batch):
    url = urls_of(gtin_batch)["batch"]
    assert _count(client, url) == 1
    client.get(path_of(url), headers={"Accept": "application/linkset+json"})
    client.get(path_of(url) + "&linkType=linkset")
    client.get(path_of(url) + "&linkType=gs1:pip")
    assert _count(client, url) == 2  # only the two consumer scans


def test_link_type_pip_and_certification_info_redirect_with_307(client, gtin_batch):
    path = path_of(urls_of(gtin_batch)["batch"])
    pip = client.get(path + "&linkType=gs1:pip")
    assert pip.status_code == 307 and pip.headers["Location"].endswith(f"/products/{gtin_batch.product.id}")
    info = client.get(path + "&linkType=gs1:certificationInfo")
    assert info.status_code == 307 and info.headers["Location"].endswith(f"/catalogue/{gtin_batch.product.id}")


def test_a_forged_code_gets_no_linkset(client, gtin_batch):
    path = path_of(urls_of(gtin_batch)["batch"])
    forged = path.replace("?s=", "?s=x")
    response = client.get(forged + "&linkType=linkset")
    assert response.status_code == 404
    assert client.get(forged + "&linkType=gs1:pip").status_code == 404


def test_the_resolver_describes_itself(client):
    body = client.get("/.well-known/gs1resolver").get_json()
    assert body["supportedPrimaryKeys"] == ["gtin"] and body["resolverRoot"].startswith("http")
    assert "gs1:pip" in body["supportedLinkType"][0]["types"]
