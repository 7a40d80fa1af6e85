"""server.app: how the routers are mounted (the routes themselves: test_api.py)."""

from tests.helpers.loopback import http


def test_every_v1_operation_needs_a_token_and_no_other_does(server):
    """Enumerated from the OpenAPI document, so that a router mounted later without the
    token check (or with it where probes must not need it) fails here."""
    spec = http.get(f"{server.url}/openapi.json").json()
    seen = {"v1": 0, "open": 0}
    for path, operations in spec["paths"].items():
        for method in operations:
            r = http.request(method, f"{server.url}{path}")
            if path.startswith("/v1/"):
                assert r.status_code == 401, (method, path, r.text)
                assert r.json()["error"]["code"] == "unauthorized"
                seen["v1"] += 1
            else:
                assert r.status_code == 200, (method, path, r.text)
                seen["open"] += 1
    # /v1/model, /v1/detections, /v1/admin/reload, the 5 event routes, the 2 delivery-log
    # routes, /v1/cameras/{id}/preview, /v1/cameras/{id}/reference (PUT, GET, DELETE);
    # health, ready, metrics
    assert seen == {"v1": 14, "open": 3}
