"""
A fake of the Enrow API on a loopback port, for tests and ``referee demo``.

It behaves as Enrow documents (``shared/seeds/000_97c8c0987ca0e0df.txt``
and ``shared/reference/apis.md`` §1), single endpoints only:

- every request needs an ``x-api-key`` header: 401 ``{"message": "No
  apikey found in the x-api-key headers"}`` without one, ``{"message":
  "This apikey is not valid"}`` with an unknown one;
- ``POST /email/find/single`` (``{fullname, company_domain}``) and ``POST
  /email/verify/single`` (``{email}``) start a search, reserve its credits
  (1 and 0.25) and answer 200 ``{"message": ..., "id": uuid,
  "credits_used": n}``; ``GET <same path>?id=`` answers 202
  ``{"qualification": "ongoing"}`` while the search runs (for a random
  duration), then 200 with ``qualification`` ``valid`` or ``invalid``;
- an unknown id on a GET is a 500 ``{"message": "Could not retrieve single
  ... results"}`` (Enrow never answers 404 for ids); a GET without ``id``
  is a 400 ``{"message": "Missing id in the query params"}``;
- more than *rate_limit* POSTs per key and endpoint in a **sliding** window
  of *rate_window* seconds (Enrow: 10 per second on each POST endpoint; GETs
  are not limited) are refused with 429 ``{"message": "Too Many
  Requests"}``, optionally with ``X-RateLimit-Reset`` (epoch seconds, whole,
  rounded up: when the oldest POST in the window leaves it); refused POSTs
  do not count against the window;
- a POST the balance cannot pay for is refused with 402 ``{"reason":
  "Insufficient credits", "success": false}``;
- any authenticated request may fail with a 500 or 503 at *fault_rate*
  (after the rate limit, before anything is created or charged);
- ``GET /account/info`` answers ``{"credits": n, "webhooks": []}``.

Credits are reserved when a search starts and never refunded (Enrow
refunds misses later, in bulk accounting this fake does not model).  All
randomness comes from ``random.Random`` streams seeded by *seed*, one per
endpoint (``POST /email/find/single``, ...): the n-th request to an
endpoint draws the same numbers whatever the order of the others, so a
concurrent workload with a fixed seed meets the same faults on its
searches' POSTs from run to run (a 429 draws nothing).
"""

from __future__ import annotations

import json
import math
import random
import sys
import threading
import time
import uuid
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final, Self
from urllib.parse import parse_qs, urlsplit

import attrs


if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


__all__ = ["FakeEnrow", "FakeEnrowStats"]

#: The key a :class:`FakeEnrow` accepts unless told otherwise.
DEFAULT_API_KEY: Final = "demo-key"

FINDER: Final = "/email/find/single"
VERIFIER: Final = "/email/verify/single"
ACCOUNT: Final = "/account/info"

#: What a search costs, by endpoint (Enrow's credits & billing page).
COSTS: Final[Mapping[str, float]] = {FINDER: 1.0, VERIFIER: 0.25}

_STARTED: Final = {
    FINDER: "Single search operating",
    VERIFIER: "Single verification operating",
}
_UNKNOWN_ID: Final = {
    FINDER: "Could not retrieve single search results",
    VERIFIER: "Could not retrieve single verification results",
}
_FAULT_BODIES: Final = {
    500: {"message": "Internal Server Error"},
    502: {"message": "Bad Gateway"},
    503: {"message": "Service Unavailable"},
    504: {"message": "Gateway Timeout"},
}


@attrs.frozen
class FakeEnrowStats:
    """
    What a :class:`FakeEnrow` has seen so far.

    Attributes:
        requests: How many requests were answered, by ``(endpoint,
            status)``; an endpoint is ``"POST /email/find/single"``.
        searches_started: Searches a POST started (and paid for).
        searches_finished: Searches whose result a GET has returned.
        credits_spent: Credits reserved by the searches started.
        credits_left: The balance.
    """

    requests: Mapping[tuple[str, int], int]
    searches_started: int
    searches_finished: int
    credits_spent: float
    credits_left: float

    @property
    def total(self) -> int:
        """
        How many requests were answered in all.
        """
        return sum(self.requests.values())

    def count(
        self, endpoint: str | None = None, status: int | None = None
    ) -> int:
        """
        How many requests to *endpoint* (any, if None) were answered with
        *status* (any, if None).
        """
        return sum(
            n
            for (e, s), n in self.requests.items()
            if (endpoint is None or e == endpoint)
            and (status is None or s == status)
        )


@attrs.define
class _Search:
    endpoint: str
    ready_at: float
    qualification: str
    email: str | None
    info: dict[str, Any]
    custom: Any
    served: bool = False


class FakeEnrow:
    """
    A real HTTP server on a loopback port that answers like the Enrow API;
    use it as a context manager::

        with FakeEnrow(seed=1, credits=10) as enrow:
            client = httpx.Client(
                base_url=enrow.url, headers={"x-api-key": enrow.api_key}
            )
            started = client.post(
                "/email/find/single",
                json={"fullname": "Ada Lovelace", "company_domain": "x.io"},
            )
            search_id = started.json()["id"]
            client.get("/email/find/single", params={"id": search_id})

    All the arguments are keyword-only.

    Args:
        api_keys: The keys accepted in ``x-api-key``; the first is
            :attr:`api_key`.
        credits: The starting balance.
        seed: Seeds every random draw (ids, durations, qualifications,
            faults).
        ongoing: The range, in seconds, a search stays ``ongoing`` for; each
            search draws its duration uniformly from it.
        valid_rate: The share of searches that end ``valid`` (the rest end
            ``invalid``).
        fault_rate: The share of authenticated requests answered with a
            random status from *fault_statuses* instead.
        fault_statuses: The statuses of faults.
        rate_limit: The most POSTs one key may send to one endpoint within
            *rate_window* seconds; None: no limit.
        rate_window: The length of the sliding window, in seconds.
        reset_header: Whether a 429 carries ``X-RateLimit-Reset``.
        host: The address to listen on.
        port: The port (0: any free one).
        clock: A monotonic clock in seconds, for search durations and the
            rate limit window.
    """

    def __init__(
        self,
        *,
        api_keys: tuple[str, ...] = (DEFAULT_API_KEY,),
        credits: float = 100.0,  # noqa: A002 - Enrow's word
        seed: int = 0,
        ongoing: tuple[float, float] = (0.05, 0.3),
        valid_rate: float = 0.7,
        fault_rate: float = 0.0,
        fault_statuses: tuple[int, ...] = (500, 503),
        rate_limit: int | None = 10,
        rate_window: float = 1.0,
        reset_header: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_keys:
            msg = "FakeEnrow needs at least one API key"
            raise ValueError(msg)
        if ongoing[0] < 0 or ongoing[1] < ongoing[0]:
            msg = f"ongoing must be a range (low, high) >= 0, got {ongoing!r}"
            raise ValueError(msg)
        self.api_keys = frozenset(api_keys)
        self.api_key = api_keys[0]
        self.ongoing = ongoing
        self.valid_rate = valid_rate
        self.fault_rate = fault_rate
        self.fault_statuses = fault_statuses
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.reset_header = reset_header
        self.clock = clock
        self.seed = seed
        self._rngs: dict[str, random.Random] = {}
        self._lock = threading.Lock()
        self._credits = float(credits)
        self._spent = 0.0
        self._searches: dict[str, _Search] = {}
        self._started = 0
        self._finished = 0
        self._requests: Counter[tuple[str, int]] = Counter()
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._httpd = _Server((host, port), _Handler)
        self._httpd.fake = self
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------

    @property
    def url(self) -> str:
        """
        The server's base URL: ``http://127.0.0.1:PORT``.
        """
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    base_url = url

    @property
    def port(self) -> int:
        """
        The port the server listens on.
        """
        return int(self._httpd.server_address[1])

    def start(self) -> Self:
        """
        Start serving in a daemon thread; returns self.
        """
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                # stop() waits for the loop to look up: keep that short.
                kwargs={"poll_interval": 0.01},
                name="FakeEnrow",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """
        Stop serving and close the listening socket.
        """
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *args: object) -> None:
        self.stop()

    # -- the account -----------------------------------------------------

    @property
    def credits(self) -> float:
        """
        The balance.
        """
        with self._lock:
            return self._credits

    def top_up(self, amount: float) -> None:
        """
        Add *amount* credits to the balance.
        """
        with self._lock:
            self._credits += amount

    def stats(self) -> FakeEnrowStats:
        """
        A snapshot of the counters.
        """
        with self._lock:
            return FakeEnrowStats(
                requests=dict(self._requests),
                searches_started=self._started,
                searches_finished=self._finished,
                credits_spent=self._spent,
                credits_left=self._credits,
            )

    # -- answering -------------------------------------------------------

    def answer(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        """
        The status, extra headers and JSON body of the answer to one
        request; *headers* has lower-case names.  Counted in :meth:`stats`.
        """
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        with self._lock:
            status, extra, payload = self._answer(
                method, path, parts.query, headers, body
            )
            self._requests[f"{method} {path}", status] += 1
        return status, extra, payload

    def _answer(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        key = headers.get("x-api-key")
        if not key:
            return (
                401,
                {},
                {"message": "No apikey found in the x-api-key headers"},
            )
        if key not in self.api_keys:
            return 401, {}, {"message": "This apikey is not valid"}
        routed = (method, path) in {
            ("POST", FINDER),
            ("POST", VERIFIER),
            ("GET", FINDER),
            ("GET", VERIFIER),
            ("GET", ACCOUNT),
        }
        if not routed:
            return 404, {}, {"message": f"Cannot {method} {path}"}
        if method == "POST":
            limited = self._rate_limited(key, path)
            if limited is not None:
                return limited
        rng = self._rng(f"{method} {path}")
        if self.fault_rate and rng.random() < self.fault_rate:
            status = rng.choice(self.fault_statuses)
            return status, {}, dict(_FAULT_BODIES.get(status, {}))
        if path == ACCOUNT:
            return 200, {}, {"credits": _number(self._credits), "webhooks": []}
        if method == "POST":
            return self._start(path, body, rng)
        return self._result(path, query)

    def _rng(self, endpoint: str) -> random.Random:
        """
        The random stream of *endpoint*: the n-th request to it draws the
        same numbers, whatever the order requests to other endpoints come
        in.
        """
        rng = self._rngs.get(endpoint)
        if rng is None:
            rng = self._rngs[endpoint] = random.Random(
                f"{self.seed}:{endpoint}"
            )
        return rng

    def _rate_limited(
        self, key: str, path: str
    ) -> tuple[int, dict[str, str], dict[str, Any]] | None:
        if self.rate_limit is None:
            return None
        now = self.clock()
        window = self._windows.setdefault((key, path), deque())
        while window and window[0] <= now - self.rate_window:
            window.popleft()
        if len(window) < self.rate_limit:
            window.append(now)
            return None
        extra: dict[str, str] = {}
        if self.reset_header:
            frees = window[0] + self.rate_window - now
            extra["X-RateLimit-Reset"] = str(math.ceil(time.time() + frees))
        return 429, extra, {"message": "Too Many Requests"}

    def _start(
        self, path: str, body: bytes, rng: random.Random
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        if not body.strip():
            return 400, {}, {"message": "Missing payload"}
        try:
            doc = json.loads(body)
        except ValueError:
            return 400, {}, {"message": "Invalid JSON input"}
        if not isinstance(doc, dict):
            return 400, {}, {"message": "Invalid JSON input"}
        # What the search is about: the address a finder would find, or
        # the one a verifier checks; None when the payload lacks it.
        target = _target(path, doc)
        if target is None:
            return 400, {}, {"message": "Missing payload"}
        cost = COSTS[path]
        if self._credits < cost:
            return (
                402,
                {},
                {"reason": "Insufficient credits", "success": False},
            )
        self._credits -= cost
        self._spent += cost
        self._started += 1
        search_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        valid = rng.random() < self.valid_rate
        low, high = self.ongoing
        ready_at = self.clock() + rng.uniform(low, high)
        info: dict[str, Any] = {}
        email: str | None = target
        if path == FINDER:
            info = {
                "fullname": doc["fullname"],
                "company_domain": doc.get("company_domain")
                or doc.get("company_name"),
            }
            email = target if valid else None
        search = _Search(
            path,
            ready_at,
            "valid" if valid else "invalid",
            email,
            info,
            doc.get("custom"),
        )
        self._searches[search_id] = search
        answer: dict[str, Any] = {
            "message": _STARTED[path],
            "id": search_id,
            "credits_used": _number(cost),
        }
        return 200, {}, answer

    def _result(
        self, path: str, query: str
    ) -> tuple[int, dict[str, str], dict[str, Any]]:
        ids = parse_qs(query).get("id")
        if not ids or not ids[0]:
            return 400, {}, {"message": "Missing id in the query params"}
        search = self._searches.get(ids[0])
        if search is None or search.endpoint != path:
            return 500, {}, {"message": _UNKNOWN_ID[path]}
        if self.clock() < search.ready_at:
            return 202, {}, {"qualification": "ongoing"}
        if not search.served:
            search.served = True
            self._finished += 1
        answer: dict[str, Any] = {
            "id": ids[0],
            "email": search.email,
            "qualification": search.qualification,
        }
        if path == FINDER:
            answer["info"] = dict(search.info)
        if search.custom is not None:
            answer["custom"] = search.custom
        return 200, {}, answer


def _target(path: str, doc: dict[str, Any]) -> str | None:
    """
    The address a search is about: for the finder, made up from the name
    and the domain (``ada.lovelace@x.io``); for the verifier, the one given.
    """
    if path == VERIFIER:
        email = doc.get("email")
        return email if isinstance(email, str) and email else None
    fullname = doc.get("fullname")
    domain = doc.get("company_domain") or doc.get("company_name")
    if not isinstance(fullname, str) or not isinstance(domain, str):
        return None
    local = ".".join(fullname.lower().split())
    return f"{local}@{domain.lower()}" if local else None


def _number(value: float) -> float | int:
    """
    *value* as JSON shows a balance: ``3`` rather than ``3.0``.
    """
    return int(value) if value == int(value) else value


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeEnrow

    def handle_error(self, request: Any, client_address: Any) -> None:
        """
        Keep quiet when a client drops its connection (as pools do on
        closing); print anything else, as socketserver does.
        """
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # The headers and the body go out in two writes; with Nagle's algorithm
    # the second waits for the client's delayed ACK, 40 ms a response.
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        """
        Keep quiet: the fake's counters say what happened.
        """

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra, payload = self.server.fake.answer(
            self.command, self.path, headers, body
        )
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # http.server dispatches on these names.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve  # noqa: N815
