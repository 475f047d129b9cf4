"""shared.opensearch_http: every way of getting no HTTP answer from the domain becomes one of two errors.

Each failure is real: a local TCP or TLS peer on 127.0.0.1 that refuses, resets, hangs, speaks
garbage or cuts its answer short, and urllib3 reports it as it would in the Lambda.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path
from typing import Callable

import pytest
from botocore.credentials import Credentials

from shared import opensearch_http as http
from shared.opensearch_http import OpenSearchConnectionError, OpenSearchTimeout, OpenSearchTransportError

CREDS = Credentials("AKIDTEST", "secret-test-key", "token")


class Peer:
    """A one-behaviour TCP server on 127.0.0.1: `behave(connection)` runs for every accepted connection."""

    def __init__(self, behave: Callable[[socket.socket], None], *, tls: ssl.SSLContext | None = None) -> None:
        self.behave, self.tls = behave, tls
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._one, args=(connection,), daemon=True).start()

    def _one(self, connection: socket.socket) -> None:
        try:
            if self.tls is not None:
                connection = self.tls.wrap_socket(connection, server_side=True)
            self.behave(connection)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                connection.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(1)
        self.listener.close()


@pytest.fixture
def peer():
    started: list[Peer] = []

    def start(behave, **kwargs) -> Peer:
        started.append(Peer(behave, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.close()


def read_request(connection: socket.socket) -> bytes:
    connection.settimeout(2)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def reset(connection: socket.socket) -> None:
    """Closes with RST instead of FIN (SO_LINGER 0)."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def call(endpoint: str, timeout_s: float = 2.0):
    return http.signed_request(endpoint=endpoint, method="GET", path="/rag-documents", region="eu-west-1",
                               credentials=CREDS, timeout_s=timeout_s)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_refused_is_a_connection_error():
    with pytest.raises(OpenSearchConnectionError, match="GET /rag-documents: could not connect"):
        call(f"http://127.0.0.1:{free_port()}")


def test_reset_after_the_request_is_a_connection_error(peer):
    def behave(connection):
        read_request(connection)
        reset(connection)

    server = peer(behave)
    with pytest.raises(OpenSearchConnectionError, match="connection lost"):
        call(f"http://127.0.0.1:{server.port}")


def test_a_peer_that_hangs_is_a_timeout(peer):
    release = threading.Event()

    def behave(connection):
        read_request(connection)
        release.wait(5)

    server = peer(behave)
    try:
        with pytest.raises(OpenSearchTimeout, match="no answer within 0.2s") as error:
            call(f"http://127.0.0.1:{server.port}", timeout_s=0.2)
    finally:
        release.set()
    assert isinstance(error.value, TimeoutError)  # 504 by class, whoever maps it


def test_a_peer_that_speaks_garbage_is_a_connection_error(peer):
    def behave(connection):
        read_request(connection)
        connection.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")

    server = peer(behave)
    with pytest.raises(OpenSearchConnectionError, match="connection lost"):
        call(f"http://127.0.0.1:{server.port}")


def test_an_answer_cut_short_is_a_connection_error(peer):
    def behave(connection):
        read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"took\": 1")

    server = peer(behave)
    with pytest.raises(OpenSearchConnectionError):
        call(f"http://127.0.0.1:{server.port}")


def test_tls_to_a_plain_peer_is_a_tls_connection_error(peer):
    def behave(connection):
        connection.settimeout(2)
        connection.recv(4096)  # the ClientHello
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    server = peer(behave)
    with pytest.raises(OpenSearchConnectionError, match="TLS error") as error:
        call(f"https://127.0.0.1:{server.port}")
    import urllib3

    assert isinstance(error.value.__cause__, urllib3.exceptions.SSLError)


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> ssl.SSLContext:
    folder: Path = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
        check=True, capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return context


def test_an_untrusted_certificate_is_a_tls_connection_error(peer, self_signed):
    server = peer(lambda connection: read_request(connection), tls=self_signed)
    with pytest.raises(OpenSearchConnectionError, match="TLS error"):
        call(f"https://127.0.0.1:{server.port}")


def test_reset_during_the_tls_handshake_is_a_connection_error(peer):
    def behave(connection):
        connection.settimeout(2)
        connection.recv(16)
        reset(connection)

    server = peer(behave)
    with pytest.raises(OpenSearchConnectionError):
        call(f"https://127.0.0.1:{server.port}")


def test_callers_map_a_timeout_to_504_and_any_other_transport_error_to_502():
    """The error mapping matches these classes (shared.api.classify): a timeout is a TimeoutError,
    a connection error is not, and neither is an HTTP answer."""
    from shared import api

    assert api.classify(OpenSearchTimeout("PUT /i: no answer within 2s"))[0] == 504
    assert api.classify(OpenSearchConnectionError("PUT /i: could not connect"))[0] == 502
    assert api.classify(OpenSearchTransportError("PUT /i: transport error"))[0] == 502


@pytest.mark.parametrize("raw, expected", [
    (b'{"acknowledged": true}', {"acknowledged": True}),
    (b"<html>Bad gateway</html>", "<html>Bad gateway</html>"),
    (b"", None),
    (b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8"),
    (b"[" * 100_000, "[" * 100_000),  # nested past the parser's depth: kept as text, not a crash
])
def test_any_http_answer_is_returned_with_its_body_decoded_or_as_text(peer, raw, expected):
    def behave(connection):
        read_request(connection)
        connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(raw) + raw)

    server = peer(behave)
    response = call(f"http://127.0.0.1:{server.port}")
    assert response.status == 502 and not response.ok
    assert response.body == expected


@pytest.mark.parametrize("status, ok", [(199, False), (200, True), (204, True), (299, True), (300, False), (404, False)])
def test_ok_means_2xx(status, ok):
    assert http.OpenSearchResponse(status, None).ok is ok


def test_connect_timeout_is_capped_and_read_timeout_is_the_callers(monkeypatch):
    seen = {}

    class Pool:
        def request(self, method, url, body, headers, timeout):
            seen.update(url=url, connect=timeout.connect_timeout, read=timeout.read_timeout, headers=headers)
            raise http.urllib3.exceptions.ConnectTimeoutError("slow")

    monkeypatch.setattr(http, "_POOL", Pool())
    with pytest.raises(OpenSearchTimeout):
        call("search-x.eu-west-1.es.amazonaws.com/", timeout_s=12.0)
    assert seen["url"] == "https://search-x.eu-west-1.es.amazonaws.com/rag-documents"
    assert (seen["connect"], seen["read"]) == (5.0, 12.0)
    assert seen["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256")
    with pytest.raises(OpenSearchTimeout):
        call("https://h", timeout_s=1.5)
    assert (seen["connect"], seen["read"]) == (1.5, 1.5)


@pytest.mark.parametrize("error, kind, words", [
    (http.urllib3.exceptions.NewConnectionError(None, "refused"), OpenSearchConnectionError, "could not connect"),
    (http.urllib3.exceptions.NameResolutionError("h", None, socket.gaierror("no host")), OpenSearchConnectionError, "could not connect"),
    (http.urllib3.exceptions.ConnectTimeoutError("slow"), OpenSearchTimeout, "no answer within 3s"),
    (http.urllib3.exceptions.ReadTimeoutError(None, "/", "slow"), OpenSearchTimeout, "no answer within 3s"),
    (socket.timeout("slow"), OpenSearchTimeout, "no answer"),
    (http.urllib3.exceptions.SSLError("bad record"), OpenSearchConnectionError, "TLS error"),
    (http.urllib3.exceptions.ProtocolError("aborted", ConnectionResetError(104, "reset")), OpenSearchConnectionError, "connection lost"),
    (http.urllib3.exceptions.DecodeError("gzip"), OpenSearchConnectionError, "transport error"),
    (ConnectionResetError(104, "reset"), OpenSearchConnectionError, "transport error"),
])
def test_every_urllib3_failure_class_maps_to_one_transport_error(error, kind, words):
    mapped = http.transport_error(error, method="GET", path="/i", timeout_s=3.0)
    assert type(mapped) is kind
    assert str(mapped).startswith("GET /i: ") and words in str(mapped)
    if kind is OpenSearchConnectionError:  # the cause is named: the failure's class and its text
        assert str(mapped).endswith(f"({type(error).__name__}: {error})") or str(mapped).endswith("...)")


def test_long_reasons_are_cut():
    mapped = http.transport_error(http.urllib3.exceptions.SSLError("x" * 1000), method="GET", path="/i", timeout_s=1)
    assert len(str(mapped)) < 260 and str(mapped).endswith("...)")
