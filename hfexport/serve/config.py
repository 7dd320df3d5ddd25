"""The server's settings: limits for every request, and batching settings per model."""

from __future__ import annotations

from dataclasses import dataclass, field

from hfexport.errors import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ModelSettings:
    """Dynamic batching for one encoder model. None: the bundle's own (its recipe's evaluation batch
    size, the batch its throughput was validated at) or the server default."""

    max_batch_size: int | None = None
    max_wait_ms: float | None = None

    def __post_init__(self):
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ConfigError(f"max batch size must be >= 1 (got {self.max_batch_size})")
        if self.max_wait_ms is not None and not 0 <= self.max_wait_ms <= 10_000:
            raise ConfigError(f"max wait must be within 0-10000 ms (got {self.max_wait_ms})")


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    # Dynamic batching (encoder tasks). batching=False: each request alone (its own texts still go
    # through max_batch_size at a time, as the runtime batches them).
    batching: bool = True
    max_batch_size: int | None = None  # texts per model call; None: each bundle's evaluation batch size, else 32
    max_wait_ms: float = 5.0
    models: dict[str, ModelSettings] = field(default_factory=dict)  # per model name, over the two above
    # Limits. Beyond them a request gets a 4xx in OpenAI's error shape.
    max_body_bytes: int = 4 * 1024 * 1024
    max_inputs: int = 2048  # texts in one request (OpenAI's embeddings limit)
    max_queue: int = 256  # requests waiting per model; more get 429
    timeout_s: float = 60.0  # per request, waiting included; then 504
    truncate: bool = False  # cut inputs over the model's max length instead of refusing them (400)
    generation_concurrency: int = 1  # generations run at once per text-generation model
    threads: int | None = None  # backend threads per model [default: the bundle's profile]
    spin: bool = False  # let idle backend threads spin (see load_models)
    shutdown_grace_s: float = 30.0  # SIGTERM: how long in-flight requests may take to finish

    def __post_init__(self):
        for name in ("max_body_bytes", "max_inputs", "max_queue", "generation_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if self.timeout_s <= 0:
            raise ConfigError(f"timeout must be > 0 seconds (got {self.timeout_s})")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be within 0-65535 (got {self.port})")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("the API key is empty")
        ModelSettings(self.max_batch_size, self.max_wait_ms)  # the same checks

    def batching_for(self, name: str, bundle_batch_size: int | None) -> tuple[int, float]:
        """(max batch size, max wait in seconds) for one model: its own flag, the global flag, the bundle's."""
        own = self.models.get(name, ModelSettings())
        size = own.max_batch_size or self.max_batch_size or bundle_batch_size or 32
        wait = own.max_wait_ms if own.max_wait_ms is not None else self.max_wait_ms
        return int(size), float(wait) / 1000.0


def parse_per_model(values: tuple[str, ...] | list[str], kind: type, what: str) -> tuple[object | None, dict]:
    """`--flag N` (every model) and `--flag NAME=N` (one model) -> (global value, {name: value})."""
    default, per_model = None, {}
    for raw in values:
        name, _, number = raw.rpartition("=")
        try:
            value = kind(number)
        except ValueError:
            raise ConfigError(f"{what}: expected a number or NAME=NUMBER (got {raw!r})") from None
        if name:
            per_model[name] = value
        else:
            default = value
    return default, per_model
