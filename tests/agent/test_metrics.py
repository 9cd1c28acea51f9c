"""/metrics, /healthz, /readyz and JSON logs."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request

from nodefeatures.cluster.metrics import JsonFormatter, Metrics, StatusServer


def fetch(port: int, path: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_status_server_endpoints() -> None:
    metrics = Metrics()
    state = {"alive": True, "ready": False}
    server = StatusServer(metrics, lambda: state["alive"], lambda: state["ready"], 0,
                          "127.0.0.1").start()
    try:
        assert fetch(server.port, "/healthz") == (200, "ok\n")
        assert fetch(server.port, "/readyz") == (503, "no successful pass yet\n")
        state["ready"] = True
        assert fetch(server.port, "/readyz") == (200, "ok\n")
        state["alive"] = False
        assert fetch(server.port, "/healthz")[0] == 503
        metrics.request("patch", "409")
        metrics.passes.labels("ok").inc()
        metrics.nvml_initialized(True)
        status, body = fetch(server.port, "/metrics")
        assert status == 200
        assert 'nodefeatures_api_requests_total{code="409",verb="patch"} 1.0' in body
        assert 'nodefeatures_passes_total{result="ok"} 1.0' in body
        assert "nodefeatures_nvml_initialized 1.0" in body
        assert fetch(server.port, "/other")[0] == 404
    finally:
        server.stop()


def test_nvml_gauge_is_absent_until_a_source_reports_it() -> None:
    metrics = Metrics()
    metrics.nvml_initialized(None)
    assert b"nvml" not in metrics.render()


def test_json_log_lines_carry_extra_fields() -> None:
    record = logging.LogRecord("nodefeatures.cluster.agent", logging.WARNING, __file__, 1,
                               "updated node %s", ("n1",), None)
    record.node = "n1"
    record.changes = {"a": [None, "1"]}
    data = json.loads(JsonFormatter().format(record))
    assert data["msg"] == "updated node n1"
    assert data["level"] == "warning"
    assert data["node"] == "n1"
    assert data["changes"] == {"a": [None, "1"]}
    assert data["time"].endswith("+00:00")
