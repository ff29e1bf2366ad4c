"""The limits a server keeps per client: a sliding-window count of events (:class:`Quota`: review items, served-log
records) and the server time and requests in flight of keyless clients (:class:`Budget`); and the error a refused
request raises (:class:`ServiceError`), which the app turns into the HTTP answer at the route edge."""

from __future__ import annotations

import collections
import threading
import time

__all__ = ["Budget", "Quota", "ServiceError"]


class ServiceError(Exception):
    """A request the service refuses: the HTTP status and the detail the route edge answers with."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code, self.detail, self.headers = status_code, detail, headers


class Quota:
    """At most ``n`` events per client in any 60 s (a sliding window of timestamps, per client)."""

    def __init__(self, window_s: float = 60.0, max_clients: int = 100_000) -> None:
        self.window_s, self.max_clients = window_s, max_clients
        self._seen: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str, wanted: int, n: int) -> int:
        """How many of ``wanted`` events ``client`` may have now (they are counted)."""
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > self.max_clients:  # forget idle clients
                self._seen = {c: q for c, q in self._seen.items() if q and q[-1] > now - self.window_s}
            q = self._seen.setdefault(client, collections.deque())
            while q and q[0] <= now - self.window_s:
                q.popleft()
            granted = max(0, min(wanted, n - len(q)))
            q.extend([now] * granted)
            return granted


class Budget:
    """Server time per client in any 60 s (seconds spent on its requests, charged when each ends), and requests
    in flight per client: what a keyless client may use of the model routes."""

    def __init__(self, window_s: float = 60.0, max_clients: int = 100_000) -> None:
        self.window_s, self.max_clients = window_s, max_clients
        self._spent: dict[str, collections.deque[tuple[float, float]]] = {}
        self._running: dict[str, int] = {}
        self._lock = threading.Lock()

    def enter(self, client: str, seconds: float, concurrency: int) -> None:
        """Count a request of ``client`` in, or :class:`ServiceError` 429 when it spent ``seconds`` in the last
        minute or has ``concurrency`` requests running."""
        now = time.monotonic()
        with self._lock:
            if len(self._spent) > self.max_clients:  # forget idle clients
                self._spent = {c: q for c, q in self._spent.items() if q and q[-1][0] > now - self.window_s}
            q = self._spent.setdefault(client, collections.deque())
            while q and q[0][0] <= now - self.window_s:
                q.popleft()
            spent = sum(t for _, t in q)
            if spent >= seconds:
                # the minute frees up as the oldest charges leave it
                free, wait = spent, 1.0
                for at, t in q:
                    free -= t
                    wait = at + self.window_s - now
                    if free < seconds:
                        break
                raise ServiceError(429, f"this client used {spent:.1f} s of server time in the last minute, the most "
                                        f"a client without an API key may ({seconds:g} s); retry in {wait:.0f} s, "
                                        "or send an API key ('Authorization: Bearer <key>')",
                                   headers={"Retry-After": str(max(1, int(wait + 0.999)))})
            if self._running.get(client, 0) >= concurrency:
                raise ServiceError(429, f"this client has {concurrency} requests running, the most a client "
                                        "without an API key may; wait for them, or send an API key",
                                   headers={"Retry-After": "1"})
            self._running[client] = self._running.get(client, 0) + 1

    def leave(self, client: str, seconds: float) -> None:
        with self._lock:
            self._running[client] -= 1
            if not self._running[client]:
                del self._running[client]
            self._spent.setdefault(client, collections.deque()).append((time.monotonic(), seconds))
