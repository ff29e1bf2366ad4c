"""Service settings: ``TAXONOMIST_*`` environment variables or a ``.env`` file (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ServeSettings"]


class ServeSettings(BaseSettings):
    """What ``taxonomist serve`` runs with. Every field is ``TAXONOMIST_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="TAXONOMIST_", env_file=".env", extra="ignore")

    model_dir: Path = Field(Path("model"), description="A model bundle, or a model store: a folder of bundles (versions).")
    model_version: str | None = Field(None, description="The version to serve from a store (default: the version a reload last recorded in the review store, else the newest).")
    model_poll_s: float = Field(5.0, ge=0.0, description="Seconds between looks at the version a reload recorded in the review store, which every server sharing the store then serves (0: never look).")
    review_db: str | Path = Field("taxonomist-review.db", description="The review queue and feedback: a SQLite file, or a "
                                                           "postgresql://user@host/db URL that several servers share.")
    review_db_sync: Literal["NORMAL", "FULL"] = Field(
        "NORMAL", description="SQLite synchronous mode: NORMAL survives a killed server, FULL also a power loss (slower).")
    monitor_keyless: bool = Field(False, description="With API keys configured: count keyless classify requests in the drift window too (off by default: anyone without a key could move the public /v1/monitor).")
    review_threshold: float = Field(0.5, ge=0.0, le=1.0, description="Leaf confidence below which a prediction is queued for review.")
    audit_rate: float = Field(0.01, ge=0.0, le=1.0, description="Share of confident predictions also queued, as an audit sample.")
    review_max_pending: int = Field(10_000, ge=0, description="Most pending review items; beyond it new ones are not queued (counted in taxonomist_review_not_queued_total).")
    review_quota_per_minute: int = Field(60, ge=0, description="Most review items one client (IP address) may add per minute; classify is not limited, only what it stores.")
    review_max_image_bytes: int = Field(100_000, ge=0, description="A photo larger than this (decoded) is not stored with its review item.")
    review_read_requires_key: bool = Field(True, description="Reading the review queue (products as customers or sellers sent them) needs an API key.")
    audit_seed: int | None = Field(None, description="Seed of the audit sampling (tests).")
    log_predictions: bool = Field(True, description="Record each served prediction in the review store (time, version, PII-scrubbed title, leaf, confidence) for `taxonomist monitor`; `taxonomist review purge` deletes old records.")
    served_log_quota_per_minute: int = Field(1_000, ge=0, description="Most served predictions one keyless client (IP address) adds to the prediction log per minute; the rest are answered, not logged (taxonomist_served_not_logged_total). Keyed clients are not limited.")
    served_log_max_rows: int = Field(1_000_000, ge=1, description="The prediction log keeps at most this many records, the newest (about 0.5 KB each).")
    keyless_seconds_per_minute: float = Field(30.0, gt=0.0, description="Server time (wall-clock seconds spent on its requests) one client without an API key may use of the model routes (classify, queries, messages, search, users, demand) per minute; past it, 429 with Retry-After. Keyed clients are not limited.")
    keyless_concurrency: int = Field(8, ge=1, description="Requests one client without an API key may have running on the model routes at once (more: 429).")
    shadow_model: Path | None = Field(None, description="A candidate bundle that answers every classified product in the background (shadow mode): its agreement with the served model is in GET /v1/monitor and taxonomist_shadow_*; nothing it says is returned.")
    monitor_window: int = Field(5_000, ge=1, description="Served predictions the drift monitor compares with the model's reference (GET /v1/monitor).")
    max_batch: int = Field(256, ge=1, description="Most products in one /v1/classify request (more: 413).")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Largest request body (more: 413).")
    max_text_chars: int = Field(5_000, ge=16, description="Longest query or message, and a lower limit for product texts than the one catalogue files are read with (title 2,000, others 20,000); more: 422.")
    max_image_bytes: int = Field(1_000_000, ge=1024, description="Largest base64-decoded image in a request.")
    image_root: Path | None = Field(None, description="Image paths in requests must resolve inside this folder.")
    microbatch_window_ms: float = Field(3.0, ge=0.0, description="How long the first request of a micro-batch waits for others.")
    microbatch_max: int = Field(64, ge=1, description="Most products the encoders see in one micro-batch.")
    inline_max_chars: int = Field(10_000, ge=0, description="A micro-batch with more characters of text runs its "
                                  "sparse stage in a thread instead of on the event loop (health probes and other "
                                  "requests are not held up by one large request).")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Bearer keys for write/admin endpoints (comma-separated); none = writes refused.")
    read_requires_key: bool = Field(False, description="Also require a key for classify / read endpoints.")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Allowed CORS origins (comma-separated); none = CORS off.")
    retrain_data: Path | None = Field(None, description="The original training catalogue, for POST /v1/admin/retrain.")
    router_dir: Path | None = Field(None, description="A message router (taxonomist messages train), for POST /v1/messages/route.")
    profiles_dir: Path | None = Field(None, description="Shopper profiles (taxonomist users build), for GET /v1/users/{id}/profile and /recommendations.")
    search_dir: Path | None = Field(None, description="A search index of the catalogue (taxonomist search build), for POST /v1/search.")

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):
            return [s.strip() for s in v.split(",") if s.strip()]
        return v

    @field_validator("api_keys")
    @classmethod
    def _no_empty_key(cls, v: list[str]) -> list[str]:
        # an empty key would match a request that sends none (a shell variable left unset: --api-key "$KEY")
        if any(not k.strip() for k in v):
            raise ValueError("an empty API key was given (was a shell variable unset?); give a non-empty key, or none "
                             "to get a random one for this run")
        return v
