"""The http task against real local servers: refused destinations get no connection, the
allow-list admits them, redirects are not followed, replies are capped, and the connection
goes to the address that was checked."""

from __future__ import annotations

import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.domain.destinations import DestinationPolicy
from app.workers.http_task import DestinationRefused, HttpCallFailed, HttpTask, InvalidCall
from app.workers.registry import JobContext, NonRetryable
from tests.helpers import wait_until

Respond = Callable[[BaseHTTPRequestHandler], None]
MiB = 1_048_576
CHUNK = b"x" * 65_536


def reply_json(handler: BaseHTTPRequestHandler, status: int = 200) -> None:
    body = b'{"ok": true}'
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, target: Target, address: tuple[str, int], family: int) -> None:
        self.target = target
        self.address_family = family
        super().__init__(address, target.handler())

    def server_bind(self) -> None:
        # HTTPServer's own would look the address up in DNS, which this machine may not have.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "test", self.server_address[1]

    def get_request(self) -> tuple[Any, Any]:
        sock, peer = super().get_request()
        self.target.peers.append(tuple(peer[:2]))
        if self.target.tls is not None:
            sock = self.target.tls.wrap_socket(sock, server_side=True)
        return sock, peer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up before the end is part of these tests


class Target:
    """A real HTTP server in a thread, recording every connection it accepts."""

    def __init__(
        self,
        respond: Respond = reply_json,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.respond = respond
        self.tls = tls
        self.peers: list[tuple[Any, ...]] = []
        self.requests: list[dict[str, str]] = []
        self.release = threading.Event()  # lets a handler that waits go
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.server = _Server(self, (host, port), family)
        self.host, self.port = host, self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/", host: str | None = None) -> str:
        name = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"http://{name}:{self.port}{path}"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target.requests.append({"path": self.path, "host": self.headers["Host"]})
                target.respond(self)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def connections(self) -> list[tuple[Any, ...]]:
        """Peers of the connections accepted so far. A probe connects last and is waited for;
        the kernel hands connections over in order, so none made before it is still pending."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.connect((self.host, self.port))
            me = tuple(probe.getsockname()[:2])
            wait_until(lambda: me in self.peers)
        return [peer for peer in self.peers if peer != me]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Target]]:
    started: list[Target] = []

    def start(*args: Any, **kwargs: Any) -> Target:
        started.append(Target(*args, **kwargs))
        return started[-1]

    yield start
    for target in started:
        target.stop()


def context(seconds: float = 60) -> JobContext:
    return JobContext(uuid.uuid4(), "default", 1, 0, time.time() + seconds)


def dns(answers: dict[str, list[str]]) -> Callable[..., list[tuple[Any, ...]]]:
    """A resolver in socket.getaddrinfo's shape that knows only `answers`."""

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port),
            )
            for a in answers[host]
        ]

    return getaddrinfo


def call(task: HttpTask, url: str, **payload: Any) -> Any:
    return task({"url": url, "method": "GET", **payload}, context())


@pytest.mark.parametrize(
    ("host", "answers"),
    [
        ("127.0.0.1", {}),
        ("localhost", {}),  # the machine's own resolver
        ("loopback.example", {"loopback.example": ["127.0.0.1"]}),
        ("mixed.example", {"mixed.example": ["93.184.216.34", "127.0.0.1"]}),
        ("mapped.example", {"mapped.example": ["::ffff:127.0.0.1"]}),
    ],
)
def test_loopback_destinations_are_refused_without_a_connection(
    serve: Callable[..., Target], host: str, answers: dict[str, list[str]]
) -> None:
    target = serve()
    task = HttpTask(resolver=dns(answers)) if answers else HttpTask()
    with pytest.raises(DestinationRefused, match="refused by the destination policy") as refused:
        call(task, target.url("/secret", host=host))
    assert isinstance(refused.value, NonRetryable)
    assert "127.0.0.1" not in str(refused.value).replace(host, "")  # no address is named
    assert target.connections() == []


def test_ipv6_loopback_is_refused_without_a_connection(serve: Callable[..., Target]) -> None:
    target = serve(host="::1")
    with pytest.raises(DestinationRefused, match="refused by the destination policy"):
        call(HttpTask(), target.url())
    assert target.connections() == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00::1]:8080/",
        "http://0.0.0.0:6379/",
        "http://2130706433:6379/",  # 127.0.0.1 as one number
        "http://internal.example/",
    ],
)
def test_internal_destinations_are_refused(url: str) -> None:
    task = HttpTask(resolver=dns({"internal.example": ["10.1.2.3"], "2130706433": ["127.0.0.1"]}))
    with pytest.raises(DestinationRefused, match="refused by the destination policy"):
        call(task, url)


def test_a_refused_port_reads_the_same_whether_open_or_closed(serve: Callable[..., Target]) -> None:
    target = serve()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_url = f"http://127.0.0.1:{closed.getsockname()[1]}/"
        errors = []
        for url in [target.url(), closed_url]:
            with pytest.raises(DestinationRefused) as refused:
                call(HttpTask(), url)
            errors.append(str(refused.value).replace(url, "<url>"))
    assert errors[0] == errors[1] == "GET <url> is refused by the destination policy"


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8", "localhost", "::ffff:127.0.0.1"])
def test_the_allow_list_admits_a_local_server(serve: Callable[..., Target], allow: str) -> None:
    target = serve()
    task = HttpTask(DestinationPolicy.parse(allow))
    host = "localhost" if allow == "localhost" else "127.0.0.1"
    assert call(task, target.url("/ok", host=host)) == {"status": 200, "body": {"ok": True}}
    assert len(target.connections()) == 1
    assert target.requests == [{"path": "/ok", "host": f"{host}:{target.port}"}]


def test_an_allowed_name_does_not_allow_its_address(serve: Callable[..., Target]) -> None:
    target = serve()
    task = HttpTask(DestinationPolicy.parse("localhost"))
    with pytest.raises(DestinationRefused):
        call(task, target.url())
    assert target.connections() == []


def test_an_allowed_name_is_called_with_its_own_host_header(serve: Callable[..., Target]) -> None:
    target = serve()
    task = HttpTask(
        DestinationPolicy.parse("hooks.internal.example"),
        resolver=dns({"hooks.internal.example": ["127.0.0.1"]}),
    )
    url = target.url("/hook", host="hooks.internal.example")
    # A tenant's Host header would reach other virtual hosts of the allowed server: replaced.
    assert call(task, url, headers={"host": "admin.internal"})["status"] == 200
    assert target.requests == [{"path": "/hook", "host": f"hooks.internal.example:{target.port}"}]


def test_every_address_of_an_allowed_name_is_tried_in_turn(serve: Callable[..., Target]) -> None:
    target = serve()
    with socket.socket() as closed:  # an address with nothing listening on the port
        closed.bind(("127.0.0.2", target.port))
        task = HttpTask(
            DestinationPolicy.parse("127.0.0.0/8"),
            resolver=dns({"two.example": ["127.0.0.2", "127.0.0.1"]}),
        )
        assert call(task, target.url(host="two.example"))["status"] == 200
    assert len(target.connections()) == 1


def test_a_redirect_is_not_followed(serve: Callable[..., Target]) -> None:
    elsewhere = serve()

    def redirect(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", elsewhere.url("/internal"))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    target = serve(redirect)
    task = HttpTask(DestinationPolicy.parse("127.0.0.0/8"))
    with pytest.raises(HttpCallFailed, match=r"-> 302 \(redirect not followed\)") as failed:
        call(task, target.url())
    assert not isinstance(failed.value, NonRetryable)  # a later attempt may be answered
    assert len(target.connections()) == 1
    assert elsewhere.connections() == []


def test_a_large_reply_fails_at_the_cap_without_being_held(serve: Callable[..., Target]) -> None:
    def ten_megabytes(handler: BaseHTTPRequestHandler) -> None:
        # No Content-Length: the reply ends when the connection does, so only reading finds
        # its size.
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        try:
            for _ in range(10 * MiB // len(CHUNK)):
                handler.wfile.write(CHUNK)
        except OSError:
            pass  # the task hung up at the cap

    target = serve(ten_megabytes)
    task = HttpTask(DestinationPolicy.parse("127.0.0.1"))
    tracemalloc.start()
    try:
        with pytest.raises(HttpCallFailed, match=f"reply larger than {MiB} bytes"):
            call(task, target.url())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MiB  # about the cap, far from the 10 MiB the server offered


def test_a_declared_large_reply_fails_before_it_is_read(serve: Callable[..., Target]) -> None:
    def declared(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(10 * MiB))
        handler.end_headers()
        target.release.wait(30)

    target = serve(declared)
    task = HttpTask(DestinationPolicy.parse("127.0.0.1"), max_reply_bytes=1000)
    with pytest.raises(HttpCallFailed, match="reply larger than 1000 bytes"):
        call(task, target.url())


def test_the_timeout_is_capped_by_the_setting(serve: Callable[..., Target]) -> None:
    def silent(handler: BaseHTTPRequestHandler) -> None:
        target.release.wait(30)

    target = serve(silent)
    task = HttpTask(DestinationPolicy.parse("127.0.0.1"), max_timeout=0.3)
    began = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        call(task, target.url(), timeout=30)
    assert time.monotonic() - began < 10


def test_the_connection_goes_to_the_address_that_was_checked(
    serve: Callable[..., Target],
) -> None:
    allowed = serve(host="127.0.0.2")
    refused = serve(host="127.0.0.1", port=allowed.port)
    asked: list[str] = []

    def rebinding(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
        """Answers an allowed address once, then a refused one (DNS rebinding)."""
        asked.append(host)
        address = "127.0.0.2" if len(asked) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    task = HttpTask(DestinationPolicy.parse("127.0.0.2"), resolver=rebinding)
    assert call(task, allowed.url("/", host="rebind.example"))["status"] == 200
    assert asked == ["rebind.example"]
    assert len(allowed.connections()) == 1
    assert refused.connections() == []


@pytest.mark.parametrize(
    "payload",
    [
        {"url": "ftp://example.org/file"},
        {"url": "file:///etc/passwd"},
        {"url": "gopher://127.0.0.1:6379/_INFO"},
        {"url": "http:///path-only"},
        {"url": "http://[::1/"},
        {"url": "http://example.org:99999/"},
        {"url": "http://example.org/", "method": "GET /admin HTTP/1.1\r\n"},
        {"url": "http://example.org/", "headers": ["X-A: 1"]},
        {"url": "http://example.org/", "timeout": -1},
        {"no": "url"},
        "http://example.org/",
    ],
)
def test_a_malformed_call_fails_without_retries(payload: Any) -> None:
    with pytest.raises(InvalidCall) as invalid:
        HttpTask(resolver=dns({}))(payload, context())
    assert isinstance(invalid.value, NonRetryable)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for internal.example, made for this run."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=internal.example",
            "-addext", "subjectAltName=DNS:internal.example",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def test_https_checks_the_certificate_against_the_url_host(
    serve: Callable[..., Target], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    server_names: list[str | None] = []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    tls.sni_callback = lambda _sock, name, _ctx: server_names.append(name)
    target = serve(tls=tls)
    task = HttpTask(
        DestinationPolicy.parse("127.0.0.1"),
        resolver=dns({"internal.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]}),
        verify=ssl.create_default_context(cafile=str(cert)),
    )
    url = f"https://internal.example:{target.port}/tls"
    assert call(task, url) == {"status": 200, "body": {"ok": True}}
    assert server_names == ["internal.example"]
    assert target.requests == [{"path": "/tls", "host": f"internal.example:{target.port}"}]
    # Connected to the same address under another name, the certificate does not match.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        call(task, f"https://other.example:{target.port}/tls")
    assert len(target.requests) == 1
