"""The built-in `http` task: call a URL for a tenant, within the destination policy.

The URL's host is resolved once and every address it resolves to is checked
(`app.domain.destinations`); then the request is sent to a checked address itself, with the
URL's host in the Host header and, for https, as the TLS server name (SNI) that the
certificate is verified against. DNS is never asked again between the check and the connect,
so an answer that changes (DNS rebinding) cannot move the connection. A refused destination
gets no connection attempt, and its error names no address.

Redirects are not followed, the reply is read up to a cap, and nothing is taken from the
environment (proxies, .netrc, certificate paths).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any

from app.domain.destinations import DestinationPolicy, IPAddress
from app.settings import Settings
from app.workers.registry import JobContext, NonRetryable

if TYPE_CHECKING:
    # Imported by the functions that call a URL: every worker process registers this task at
    # start, and httpx is a tenth of a second of that start for a fleet that may never use it.
    import httpx

# socket.getaddrinfo's shape: (host, port, family, type, ...) -> [(family, type, proto,
# canonname, sockaddr)], sockaddr[0] being the address. Tests pass a resolver of their own.
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

DEFAULT_TIMEOUT = 10.0
_METHOD = re.compile(r"^[A-Za-z]{1,20}$")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HttpCallFailed(Exception):
    """The call did not succeed: the target could not be reached, answered outside 2xx, or
    sent too much or too slowly. The attempt fails and the job is retried."""


class DestinationRefused(NonRetryable):
    """The URL's host is refused by the destination policy: an operator can admit an internal
    host or network with HTTP_TASK_ALLOW."""


class InvalidCall(NonRetryable):
    """The payload is not a call the http task can make: it needs `url` (http or https) and
    may have `method`, `headers` (strings), `json` and `timeout` (seconds)."""


@dataclass(frozen=True)
class Call:
    """A tenant's payload, checked."""

    method: str
    url: httpx.URL
    headers: dict[str, str]
    json: Any
    timeout: float

    @property
    def host(self) -> str:
        return self.url.raw_host.decode("ascii")

    @property
    def port(self) -> int:
        return self.url.port or _DEFAULT_PORTS[self.url.scheme]

    def describe(self) -> str:
        """Method and URL for an error message, without any credentials in the URL."""
        return f"{self.method} {self.url.copy_with(username=None, password=None)}"


def parse_call(payload: Any) -> Call:
    import httpx

    if not isinstance(payload, dict) or not isinstance(payload.get("url"), str):
        raise InvalidCall("http task needs a payload with a 'url'")
    try:
        url = httpx.URL(payload["url"])
    except httpx.InvalidURL as exc:
        raise InvalidCall(f"invalid url: {exc}") from None
    if url.scheme not in _DEFAULT_PORTS:
        raise InvalidCall("the url's scheme must be http or https")
    if not url.raw_host or not 0 < (url.port or 80) <= 65535:
        raise InvalidCall("the url needs a host and a port between 1 and 65535")
    method = payload.get("method", "POST")
    if not isinstance(method, str) or not _METHOD.match(method):
        raise InvalidCall("'method' must be an HTTP method name")
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InvalidCall("'headers' must map header names to string values")
    timeout = payload.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidCall("'timeout' must be a positive number of seconds")
    return Call(method.upper(), url, headers, payload.get("json"), float(timeout))


def resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    """The addresses of `host` in the resolver's order, each once. An address literal is
    its own answer and asks nobody."""
    try:
        return [ip_address(host)]
    except ValueError:
        pass
    try:
        answers = resolver(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise HttpCallFailed(f"could not resolve {host}") from None
    addresses: list[IPAddress] = []
    for *_, sockaddr in answers:
        address = ip_address(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise HttpCallFailed(f"could not resolve {host}")
    return addresses


@dataclass(frozen=True)
class HttpTask:
    """The `http` task: call payload.url with payload.method (POST), headers, json and timeout
    (10 s). A status outside 2xx (a redirect included: none is followed) or a reply over the
    cap fails the attempt; the result is the reply's status and body (JSON when it parses,
    else text)."""

    policy: DestinationPolicy = field(default_factory=DestinationPolicy)
    max_reply_bytes: int = 1_048_576
    max_timeout: float = 30.0
    resolver: Resolver = socket.getaddrinfo
    verify: ssl.SSLContext | bool = True  # tests trust a certificate of their own

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpTask:
        return cls(
            settings.http_task_policy,
            settings.http_task_max_reply_bytes,
            settings.http_task_max_timeout_seconds,
        )

    def __call__(self, payload: Any, job: JobContext) -> dict[str, Any]:
        import httpx

        call = parse_call(payload)
        timeout = min(call.timeout, self.max_timeout, max(job.deadline - time.time(), 0.1))
        deadline = time.monotonic() + timeout
        addresses = self.checked_addresses(call)
        with (
            httpx.Client(
                timeout=timeout, follow_redirects=False, trust_env=False, verify=self.verify
            ) as client,
            _send(client, call, addresses) as reply,
        ):
            if reply.is_redirect:
                raise HttpCallFailed(
                    f"{call.describe()} -> {reply.status_code} (redirect not followed)"
                )
            if not reply.is_success:
                raise HttpCallFailed(f"{call.describe()} -> {reply.status_code}")
            body = self.read_capped(reply, deadline, timeout)
            status, encoding = reply.status_code, reply.encoding or "utf-8"
        try:
            return {"status": status, "body": json.loads(body)}
        except ValueError:
            return {"status": status, "body": body.decode(encoding, errors="replace")}

    def checked_addresses(self, call: Call) -> list[IPAddress]:
        """Where the call may connect: every address of its host, once all are allowed."""
        addresses = resolve(call.host, call.port, self.resolver)
        if not self.policy.allows(call.host, addresses):
            raise DestinationRefused(f"{call.describe()} is refused by the destination policy")
        return addresses

    def read_capped(self, reply: httpx.Response, deadline: float, timeout: float) -> bytes:
        """The reply's body, failing as soon as it passes the cap or the deadline: only about
        the cap is ever held in memory."""
        limit = self.max_reply_bytes
        declared = reply.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise HttpCallFailed(f"reply larger than {limit} bytes")
        body = bytearray()
        for chunk in reply.iter_bytes():
            body += chunk
            if len(body) > limit:
                raise HttpCallFailed(f"reply larger than {limit} bytes")
            if time.monotonic() > deadline:
                raise HttpCallFailed(f"reply took longer than {timeout:g} s")
        return bytes(body)


@contextmanager
def _send(client: httpx.Client, call: Call, addresses: list[IPAddress]) -> Iterator[httpx.Response]:
    """Send the call to the first of `addresses` that accepts a connection (as a socket would
    try each address of a name in turn), and stream its reply."""
    import httpx

    # The Host header is always the URL's: a tenant's own would reach other virtual hosts of
    # an allowed server.
    headers = {k: v for k, v in call.headers.items() if k.lower() != "host"}
    headers["Host"] = call.url.netloc.decode("ascii")
    extensions: dict[str, Any] = {}
    if not _is_address(call.host):
        extensions["sni_hostname"] = call.host  # and the certificate is checked against it
    for index, address in enumerate(addresses):
        request = client.build_request(
            call.method,
            call.url.copy_with(host=str(address)),
            headers=headers,
            json=call.json,
            extensions=extensions,
        )
        try:
            reply = client.send(request, stream=True)
        except httpx.ConnectError:
            if index == len(addresses) - 1:
                raise
            continue
        try:
            yield reply
        finally:
            reply.close()
        return


def _is_address(host: str) -> bool:
    try:
        ip_address(host)
    except ValueError:
        return False
    return True
