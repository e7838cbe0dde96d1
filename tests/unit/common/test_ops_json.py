"""Service pages of the ops endpoint (``Lifecycle.serve_json``) and the registration gauge."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from services.common.lifecycle import Lifecycle
from services.common.metrics import Metrics
from services.common.ops import OpsServer
from services.common.settings import Settings


async def test_a_service_page_is_served_as_json() -> None:
    lc = Lifecycle("sipagent", Settings())
    registered = True
    lc.serve_json("registrations", lambda: {"registrations": [{"state": "registered"}]})
    lc.metrics.track_registration("main", lambda: registered)
    server = OpsServer(lc.state, lc.metrics)
    async with TestClient(TestServer(server.make_app())) as client:
        response = await client.get("/registrations")
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.json() == {"registrations": [{"state": "registered"}]}
        assert (await client.get("/nothing-here")).status == 404
        assert (await client.get("/readyz")).status == 503  # the fixed pages still win
        metrics = await (await client.get("/metrics")).text()
        assert 'bridge_registration_registered{trunk="main"} 1.0' in metrics
        registered = False
        metrics = await (await client.get("/metrics")).text()
        assert 'bridge_registration_registered{trunk="main"} 0.0' in metrics


def test_no_registration_gauge_without_registrations() -> None:
    assert b"bridge_registration_registered{" not in Metrics().exposition()
