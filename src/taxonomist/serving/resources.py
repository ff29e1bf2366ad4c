"""The optional parts of a server -- message router, shopper profiles, search index --, each loaded on first use
from the folder its setting names (each pulls in its own dependencies)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path as FilePath
from typing import Any

from .limits import ServiceError
from .settings import ServeSettings

__all__ = ["Resources"]


def _load_router(folder: FilePath) -> Any:
    from ..apps.routing import MessageRouter

    return MessageRouter.load(folder)


def _load_profiles(folder: FilePath) -> Any:
    from ..apps.profiles import ProfileStore

    return ProfileStore.load(folder)


def _load_search(folder: FilePath) -> Any:
    from ..apps.search import SearchIndex

    return SearchIndex.load(folder)


# the optional parts of a server (loaded on first use: each pulls in its own dependencies): setting, loader,
# what it is, how to make one
_RESOURCES: dict[str, tuple[str, Callable[[FilePath], Any], str, str]] = {
    "router": ("router_dir", _load_router, "message router", "train one with taxonomist messages train"),
    "profiles": ("profiles_dir", _load_profiles, "shopper profiles",
                 "build them from behaviour events with taxonomist users build"),
    "search": ("search_dir", _load_search, "search index", "build one over the catalogue with taxonomist search build"),
}


class Resources:
    """The optional parts this server's settings name, loaded on first use."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._resources: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, kind: str) -> Any:
        """An optional part of the server (``router``, ``search``, ``profiles``) from the folder its setting names,
        loaded on first use; 404 when the setting is not given (a feature this server does not offer)."""
        setting, loader, what, hint = _RESOURCES[kind]
        folder = getattr(self.settings, setting)
        if folder is None:
            raise ServiceError(404, f"this server has no {what}: {hint} and set TAXONOMIST_{setting.upper()}")
        with self._lock:
            if kind not in self._resources:
                self._resources[kind] = loader(folder)
            return self._resources[kind]
