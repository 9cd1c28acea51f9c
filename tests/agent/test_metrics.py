"""/metrics, /healthz, /readyz and JSON logs."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
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


def test_a_check_can_say_what_is_wrong() -> None:
    server = StatusServer(Metrics(), lambda: "the watch has failed\n",
                          lambda: "not confined: fix it\n", 0, "127.0.0.1").start()
    try:
        assert fetch(server.port, "/healthz") == (503, "the watch has failed\n")
        assert fetch(server.port, "/readyz") == (503, "not confined: fix it\n")
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


def _idle_sockets(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        held.append(sock)
    return held


def test_idle_connections_neither_block_probes_nor_cost_threads() -> None:
    metrics = Metrics()
    server = StatusServer(metrics, lambda: True, lambda: False, 0, "127.0.0.1").start()
    threads = threading.active_count()
    held: list[socket.socket] = []
    try:
        held = _idle_sockets(server.port, 500)  # an attacker holding idle connections
        for path, expected in (("/healthz", (200, "ok\n")),
                               ("/readyz", (503, "no successful pass yet\n"))):
            started = time.monotonic()
            assert fetch(server.port, path) == expected
            assert time.monotonic() - started < 1.0
        assert threading.active_count() <= threads + 1, threading.active_count() - threads
        assert server.open_connections <= server.max_connections
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_an_idle_connection_is_closed_after_the_timeout() -> None:
    server = StatusServer(Metrics(), lambda: True, lambda: True, 0, "127.0.0.1",
                          timeout=0.3).start()
    try:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # never finishes its request
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed by the server
        assert 0.2 <= time.monotonic() - started < 2.0
        sock.close()
        assert fetch(server.port, "/healthz") == (200, "ok\n")
    finally:
        server.stop()


def test_malformed_requests_get_an_answer_and_the_server_keeps_serving() -> None:
    server = StatusServer(Metrics(), lambda: True, lambda: True, 0, "127.0.0.1").start()
    try:
        for request, status in ((b"garbage\r\n\r\n", b"400"),
                                (b"POST /healthz HTTP/1.1\r\n\r\n", b"405"),
                                (b"GET /" + b"x" * 9000, b"431")):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(request)
                assert sock.recv(100).split(b" ")[1] == status
        assert fetch(server.port, "/healthz") == (200, "ok\n")
    finally:
        server.stop()


def test_a_connection_shed_while_its_request_is_waiting_does_not_break_the_round() -> None:
    # A burst of new connections past the cap closes the oldest, which may be one the same
    # selector round reported readable; the rest of the round (other probes) must go on.
    server = StatusServer(Metrics(), lambda: True, lambda: True, 0, "127.0.0.1",
                          max_connections=1)  # not started: rounds are run here, one by one
    try:
        oldest = socket.create_connection(("127.0.0.1", server.port), timeout=2)
        server._round()
        assert server.open_connections == 1
        newer = socket.create_connection(("127.0.0.1", server.port), timeout=2)
        time.sleep(0.05)  # the listener is ready before the oldest connection's request
        oldest.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        time.sleep(0.05)
        server._round()  # accepts `newer`, sheds `oldest`, then meets its readiness
        newer.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
        for _ in range(5):
            server._round()
        assert newer.recv(100).startswith(b"HTTP/1.1 200")
        oldest.close()
        newer.close()
    finally:
        server.stop()


def test_ready_gauge_follows_the_readiness_check_at_each_scrape() -> None:
    # /readyz is for the kubelet; the same answer as a series lets an alert say which
    # node's agent cannot write, and why is in the /readyz body and the log.
    metrics = Metrics()
    assert metrics.registry.get_sample_value("nodefeatures_ready") == 0
    state: dict[str, bool | str] = {"ready": "not confined\n"}
    server = StatusServer(metrics, lambda: True, lambda: state["ready"], 0, "127.0.0.1").start()
    try:
        assert "nodefeatures_ready 0.0" in fetch(server.port, "/metrics")[1]
        state["ready"] = True
        assert "nodefeatures_ready 1.0" in fetch(server.port, "/metrics")[1]
        state["ready"] = False
        assert "nodefeatures_ready 0.0" in fetch(server.port, "/metrics")[1]
    finally:
        server.stop()


def test_a_failing_readiness_check_reads_as_not_ready_and_the_scrape_still_answers() -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    metrics = Metrics()
    server = StatusServer(metrics, lambda: True, broken, 0, "127.0.0.1").start()
    try:
        status, body = fetch(server.port, "/metrics")
        assert status == 200
        assert "nodefeatures_ready 0.0" in body
    finally:
        server.stop()


def test_the_config_metrics_are_in_the_agents_own_registry() -> None:
    # Every run builds a LiveConfig; its metrics belong with the rest, so what the
    # dashboard and alerts may use is all in Metrics().
    metrics = Metrics()
    assert metrics.registry.get_sample_value("nodefeatures_config_rejected") == 0
    metrics.config_reloads.labels("applied").inc()
    assert metrics.registry.get_sample_value(
        "nodefeatures_config_reloads_total", {"result": "applied"}) == 1


def test_confined_is_absent_until_the_agent_has_probed() -> None:
    # An agent that never writes to a Node (core.noPublish, --output-file) has no
    # confinement to report; a 0 there would read as "refuses to write" and alert.
    metrics = Metrics()
    assert b"nodefeatures_confined " not in metrics.render()
    metrics.confined.set(0)
    assert metrics.registry.get_sample_value("nodefeatures_confined") == 0
    metrics.confined.set(1)
    assert metrics.registry.get_sample_value("nodefeatures_confined") == 1
    assert metrics.render().count(b"# TYPE nodefeatures_confined gauge") == 1
