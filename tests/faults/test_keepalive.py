"""Idle keep-alive connections outlive the clients' pools (5 s in httpx and the SDKs), so no client
sends a request on a connection the server is closing at that very moment.

Found under load (`benchmarks/bench_load.py`): with uvicorn's 5 s default, about one request in two
thousand failed with a reset before any byte came back, and a gateway meeting the same race on
its way to a neuron took the neuron for dead.
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import pytest

from cortex.testing import start_gateway_process

from .servers import KEY, fake_neuron, gateway_config, start_neurons

pytestmark = pytest.mark.e2e

POOL_EXPIRY_S = 5.0  # httpx's default keepalive_expiry


def _request(sock: socket.socket, host: str, path: str) -> bytes:
    sock.sendall(f"GET {path} HTTP/1.1\r\nhost: {host}\r\nx-api-key: {KEY}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += _recv(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += _recv(sock)
    return head


def _recv(sock: socket.socket) -> bytes:
    piece = sock.recv(65536)
    assert piece, "the server closed the idle connection"
    return piece


def test_idle_connections_stay_open_longer_than_client_pools_keep_them() -> None:
    nodes = start_neurons({"a": fake_neuron("a", ["m1"])})
    gateway = start_gateway_process(gateway_config(nodes))
    sockets = []
    try:
        for url, path in ((gateway.url, "/v1/models"), (nodes["a"].url, "/health")):
            parts = urlsplit(url)
            sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
            assert _request(sock, parts.netloc, path).startswith(b"HTTP/1.1 200")
            sockets.append((sock, parts.netloc, path))
        time.sleep(POOL_EXPIRY_S + 1.0)  # idle past the pools' expiry
        for sock, host, path in sockets:
            assert _request(sock, host, path).startswith(b"HTTP/1.1 200")  # same connection
    finally:
        for sock, _, _ in sockets:
            sock.close()
        gateway.stop()
        nodes["a"].stop()
