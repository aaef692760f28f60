"""Every knob of the service, read from the environment (prefix `TRANSLATOR_`) by pydantic-settings.

    TRANSLATOR_MAX_WAIT_MS=10 TRANSLATOR_LENGTH_BUCKETS=16,32,64 translator serve

Lists take commas (`TRANSLATOR_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider`) or JSON.
`HOST` and `PORT` are honoured as well as `TRANSLATOR_HOST`/`TRANSLATOR_PORT`, because container
platforms set `PORT`. `README.md` lists every field with the description written here.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from engine.sessions import RuntimeOptions

CommaList = Annotated[tuple[str, ...], NoDecode]
CommaInts = Annotated[tuple[int, ...], NoDecode]
CommaSecrets = Annotated[tuple[SecretStr, ...], NoDecode]  # shown as '**********' in any repr or log line


def split_list(value: object) -> object:
    """"a,b" or '["a", "b"]' (environment) → a list; anything else is left to pydantic."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
MAX_AUTO_WORKERS = 4  # TRANSLATOR_INFERENCE_WORKERS=-1: beyond this, more threads per worker rather than more copies


def usable_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may run on: its affinity, capped by a CPU quota (docker --cpus, a Kubernetes limit),
    which the affinity does not show."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = cpu_max.read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


class Settings(BaseSettings):
    # No setting takes infinity or NaN: "inf" seconds or ratios pass `gt=0` and break the server later.
    model_config = SettingsConfigDict(env_prefix="TRANSLATOR_", extra="ignore", frozen=True, populate_by_name=True,
                                      allow_inf_nan=False)

    # --- serving ---------------------------------------------------------------------------------
    models_dir: Path = Field(Path("models"), description="Directory of model packages, one sub-directory per language pair (`models/en-de/`).")
    host: str = Field("127.0.0.1", validation_alias=AliasChoices("TRANSLATOR_HOST", "HOST"),
                      description="Address to listen on (`HOST` also works; the container image uses 0.0.0.0).")
    port: int = Field(8000, ge=0, le=65535, validation_alias=AliasChoices("TRANSLATOR_PORT", "PORT"),
                      description="TCP port to listen on (`PORT` also works).")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="Log level of the service and uvicorn.")
    access_log: bool = Field(True, description=(
        "Log a line per HTTP request (uvicorn's access log, at info level); off, a busy server's log keeps to warnings and "
        "errors. /metrics counts every request by route and status either way (its cost, measured: README, Settings)."))
    shutdown_timeout_s: float = Field(30.0, gt=0, description=(
        "On SIGTERM: seconds to let in-flight requests finish (uvicorn's graceful shutdown) and then to drain the batch queue."))
    keep_alive_s: float = Field(75.0, gt=0, description=(
        "Seconds an idle keep-alive connection stays open. Longer than a load balancer's or client pool's idle timeout, "
        "so that the server never closes a connection just as the client reuses it (a connection error under load)."))

    # --- ONNX Runtime ------------------------------------------------------------------------------
    providers: CommaList = Field(("CPUExecutionProvider",), description=(
        "ONNX Runtime execution providers in order of preference; the CPU is always appended as the fallback."))
    strict_providers: bool = Field(False, description="Refuse to start when the first provider cannot run a model, instead of falling back with a warning.")
    intra_op_threads: int = Field(-1, ge=-1, description=(
        "ONNX Runtime threads per inference worker: -1 = the CPUs this process may use less one, which the event loop needs, "
        "shared among the workers (at least 1; measured on 2 cores: README, Load benchmark); 0 = ONNX Runtime's own default "
        "(one per physical core)."))
    inference_workers: int = Field(-1, ge=-1, description=(
        "Copies of every model that translate batches at the same time, each in sessions of its own, in a process or a "
        "thread (TRANSLATOR_INFERENCE_WORKER_KIND; batch scheduler). -1 = one per CPU this process may use, at most "
        f"{MAX_AUTO_WORKERS} (measured on 2 cores: README, Load benchmark); 1 with the continuous scheduler, which decodes in "
        "one thread, or with CUDA first among the providers (one GPU)."))
    inference_worker_kind: Literal["auto", "process", "thread"] = Field("auto", description=(
        "What an inference worker is: a process of its own (its Python between decoder steps never waits for the event "
        "loop's GIL; about 95 MiB more per worker at its peak) or a thread of the server (about 20 MiB per copy of a "
        "shipped model). auto = process with the batch scheduler on the CPU (measured on 2 cores: README, Load "
        "benchmark), thread with the continuous scheduler (it decodes in the server) or CUDA first among the providers."))
    worker_awake_ms: float = Field(5.0, ge=0, le=1000, description=(
        "After a batch sent while nothing else was queued and the other workers were idle (a lone client), an inference "
        "worker process stays awake this long for the next one (polling, yielding its CPU to anything else runnable) "
        "before it sleeps: a CPU that went idle comes back slower (measured at one connection: README, Load benchmark). "
        "0 = sleep at once. Worker processes only."))
    warmup: bool = Field(True, description="Run every model once at its largest shapes before /ready reports ready.")
    cpu_mem_arena: bool = Field(True, description=(
        "ONNX Runtime's CPU memory arena: keeps freed blocks for reuse (resident memory holds its peak); "
        "off, every tensor goes back to the allocator (in docs/reliability.md's soak: lower and flatter, no slower)."))
    spin_wait: bool = Field(False, description=(
        "Let idle ONNX Runtime threads spin between calls (slightly faster decoding steps; on a few cores it starves "
        "the request-handling thread, so refusals and health checks slow down under load)."))
    attention_kernels: bool = Field(True, description=(
        "On the CPU, run attention on the engine's own kernels (built at install where a C++ compiler is present) "
        "instead of ONNX Runtime's: the same results up to float rounding, beam search about 10–15 % faster "
        "(README, Benchmark)."))
    shrink_arena: bool = Field(False, description=(
        "Give unused arena memory back after every inference call (in docs/reliability.md's soak: higher and "
        "noisier resident memory than with the arena on or off)."))

    # --- batching ----------------------------------------------------------------------------------
    scheduler: Literal["continuous", "batch"] = Field("batch", description=(
        "batch: a batch of one length bucket runs until its last sentence ends while the next one fills (each sentence is "
        "answered the step it ends). continuous: "
        "one running batch per model and search setting; waiting sentences join it at every decoder step and finished "
        "ones leave and are answered at once (measured against each other: README, Load benchmark)."))
    cache_token_budget: int = Field(8192, ge=1, description=(
        "continuous: most cache slots the running batch may need (per sentence: beams × output limit, ~6 KiB each for "
        "the shipped models); it bounds the running batch's key/value cache memory. One sentence over it still runs."))
    batch_token_budget: int = Field(2048, ge=1, description=(
        "Most padded source tokens in one batch (sentences × longest sentence). A longer single sentence still runs alone."))
    max_batch_sentences: int = Field(32, ge=1, description=(
        "Most sentences in one batch (continuous: in the running batch); 1 turns cross-request batching off."))
    max_wait_ms: float = Field(0.0, ge=0, description=(
        "batch: how long the oldest waiting sentence may wait for others to fill its batch while the model is idle "
        "(continuous starts at once: later arrivals join at the next step)."))
    length_buckets: CommaInts = Field((16, 32, 64, 128), description=(
        "batch: upper edges (source tokens) of the length buckets: only sentences of one bucket share a batch, which keeps "
        "padding low; longer sentences form one last bucket (continuous: sources of any length share a step)."))
    queue_limit: int = Field(512, ge=1, description=(
        "Most sentences waiting for a batch across all models; beyond it requests are refused at once (429/503 + Retry-After)."))
    request_deadline_s: float = Field(30.0, gt=0, description=(
        "A request still unanswered after this many seconds is answered with an error and its waiting sentences leave the queue."))
    retry_after_s: int = Field(1, ge=0, description="Value of the Retry-After header sent with overload errors.")

    # --- input limits ------------------------------------------------------------------------------
    max_text_chars: int = Field(5000, ge=1, validation_alias=AliasChoices("TRANSLATOR_MAX_TEXT_CHARS", "TRANSLATOR_CHAR_LIMIT"),
                                description=(
        "Most characters in one text (`TRANSLATOR_CHAR_LIMIT` also works, LibreTranslate's name); a longer one is a 400 error. "
        "A text is cut into sentences, each translated on its own, so any text up to this limit is translated whole."))
    max_sentences_per_request: int = Field(256, ge=1, description=(
        "Most sentences (after segmentation) in one request's texts, and never more than TRANSLATOR_QUEUE_LIMIT; more is a 400 error."))
    max_texts_per_request: int = Field(64, ge=1, description="Most texts in one request.")
    max_body_bytes: int = Field(1 << 20, ge=1, description="Most bytes in a request body, enforced before parsing (413).")

    # --- decoding ----------------------------------------------------------------------------------
    default_beam_size: int = Field(4, ge=1, description="Beam size when a request names none (1 = greedy).")
    max_beam_size: int = Field(8, ge=1, description="Largest beam size a request may ask for.")
    max_alternatives: int = Field(4, ge=0, description="Most alternative translations a request may ask for.")
    max_length_ratio: float = Field(1.5, gt=0, le=100, description="Output limit = ratio × source tokens + 10 (and at most a request's max_length).")
    max_output_tokens: int = Field(512, ge=1, description="Largest max_length a request may ask for (the model's position table caps it too).")

    # --- access -------------------------------------------------------------------------------------
    api_keys: CommaSecrets = Field((), description=(
        "API keys for the translation routes, sent as `Authorization: Bearer KEY`, `X-API-Key: KEY` or LibreTranslate's "
        "`api_key` field; empty (and no keys file) = no key needed. Missing: 401 (LibreTranslate routes: 403); wrong: 403."))
    api_keys_file: Path | None = Field(None, description=(
        "A file of further API keys, one per line (`#` starts a comment), read at start-up; unreadable or empty refuses the start."))
    rate_limit_per_s: float = Field(0.0, ge=0, description=(
        "Requests per second each API key (without keys: each client address) may send to the translation routes; "
        "0 = no limit. Over it: 429 with Retry-After."))
    rate_limit_burst: int = Field(20, ge=1, description="Requests a key may send at once before the per-second rate applies (token bucket size).")
    key_policy: Literal["required", "libretranslate"] = Field("required", description=(
        "With API keys configured: `required` = every translation route needs a valid key (ours, the default); "
        "`libretranslate` = as LibreTranslate: a request without a key is served (rate-limited by client address), "
        "only a wrong key is refused (403 `Invalid API key`)."))
    cors_origins: CommaList = Field((), description=(
        "Origins whose web pages may call the API (CORS), e.g. `https://app.example.com`, or `*`; empty = no CORS headers."))

    # --- LibreTranslate extras: suggestions, file translation, the web page ------------------------------
    suggestions: bool = Field(False, description=(
        "Accept `POST /suggest` (a better translation proposed by a user), stored in SQLite at TRANSLATOR_SUGGESTIONS_DB; "
        "off: 403 `Suggestions are disabled on this server.`"))
    suggestions_db: Path = Field(Path("db/suggestions.sqlite3"), description=(
        "SQLite file of the suggestions (created when missing; put it on a volume: the container's root is read-only)."))
    files_translation: bool = Field(True, description="Accept `POST /translate_file` (.txt, .html, .docx, .odt).")
    files_dir: Path | None = Field(None, description=(
        "Directory of the translated files waiting for download (default: `translator-files` in the system's temporary directory)."))
    max_file_bytes: int = Field(8 << 20, ge=1, description=(
        "Most bytes of an uploaded file (the request body of `/translate_file` may be this large; other routes keep TRANSLATOR_MAX_BODY_BYTES)."))
    max_file_chars: int = Field(20000, ge=1, description="Most characters of text in one uploaded file; more is a 400 error.")
    files_max_age_s: float = Field(1800.0, gt=0, description="A translated file is deleted this many seconds after it was made.")
    files_max_total_bytes: int = Field(64 << 20, ge=1, description=(
        "Most bytes of translated files kept at once; beyond it the oldest are deleted first."))
    frontend_timeout_ms: int = Field(500, ge=0, description=(
        "The web page translates this many milliseconds after the last keystroke (`frontendTimeout` of /frontend/settings)."))
    frontend_language_source: str = Field("auto", description="Source language the web page starts with (`auto` = detect).")
    frontend_language_target: str = Field("de", description=(
        "Target language the web page starts with (another served one when this is not served)."))
    web_page: bool = Field(True, description="Serve the translation web page at `/`.")
    html_strategy: Literal["align", "placeholders"] = Field("align", description=(
        "How `format: html` carries inline markup (`<b>`, `<a>`, …) into a translated sentence: `align` translates the sentence "
        "without markup and puts each element around its text's translation; `placeholders` has the model copy numbered markers "
        "(README, \"HTML\", has the measurement behind the default)."))

    @field_validator("providers", "api_keys", "length_buckets", "cors_origins", mode="before")
    @classmethod
    def lists_from_environment(cls, value: object) -> object:
        return split_list(value)

    @field_validator("length_buckets")
    @classmethod
    def buckets_increase(cls, edges: tuple[int, ...]) -> tuple[int, ...]:
        if any(edge < 1 for edge in edges) or list(edges) != sorted(set(edges)):
            raise ValueError("length bucket edges must be positive and strictly increasing")
        return edges

    @model_validator(mode="after")
    def limits_agree(self) -> "Settings":
        if self.max_texts_per_request > self.queue_limit:
            raise ValueError("max_texts_per_request exceeds queue_limit: a full request could never be queued")
        if self.default_beam_size > self.max_beam_size:
            raise ValueError("default_beam_size exceeds max_beam_size")
        if self.shrink_arena and not self.cpu_mem_arena:
            raise ValueError("shrink_arena needs cpu_mem_arena: there is no arena to shrink")
        if self.scheduler == "continuous" and self.inference_workers > 1:
            raise ValueError("inference_workers > 1 needs the batch scheduler: the continuous one decodes in one thread")
        if self.scheduler == "continuous" and self.inference_worker_kind == "process":
            raise ValueError("inference_worker_kind=process needs the batch scheduler: the continuous one decodes in the server")
        if self.max_alternatives + 1 > self.max_beam_size:
            raise ValueError("max_alternatives + 1 exceeds max_beam_size: alternatives come from the beam")
        if self.max_wait_ms >= 500 * self.request_deadline_s:
            raise ValueError("max_wait_ms is half the request deadline or more: a lone sentence waits that long for its "
                             "batch before it starts")
        if self.shutdown_timeout_s < self.request_deadline_s:
            raise ValueError("shutdown_timeout_s is shorter than request_deadline_s: on SIGTERM, requests still within "
                             "their deadline would be cut off")
        if any(not key.get_secret_value().strip() for key in self.api_keys):
            raise ValueError("api_keys has an empty key: it would be dropped, and with no other key the service would be open")
        return self

    def workers(self, cpus: int | None = None) -> int:
        """TRANSLATOR_INFERENCE_WORKERS, with -1 resolved (on `cpus` CPUs; default: this process's usable ones)."""
        if self.inference_workers >= 1:
            return self.inference_workers
        if self.scheduler == "continuous" or self.providers[:1] == ("CUDAExecutionProvider",):
            return 1
        return min(cpus or usable_cpus(), MAX_AUTO_WORKERS)

    def worker_processes(self) -> bool:
        """TRANSLATOR_INFERENCE_WORKER_KIND, with auto resolved: whether inference workers are processes."""
        if self.inference_worker_kind != "auto":
            return self.inference_worker_kind == "process"
        return self.scheduler == "batch" and self.providers[:1] != ("CUDAExecutionProvider",)

    def onnx_threads(self, cpus: int | None = None) -> int:
        """TRANSLATOR_INTRA_OP_THREADS, with -1 resolved: the usable CPUs (or `cpus`) less the event loop's one, shared
        among the inference workers, at least 1."""
        if self.intra_op_threads >= 0:
            return self.intra_op_threads
        cpus = cpus or usable_cpus()
        return max(1, (cpus - 1) // self.workers(cpus))

    def runtime_options(self) -> RuntimeOptions:
        return RuntimeOptions(providers=tuple(self.providers), strict_providers=self.strict_providers,
                              intra_op_threads=self.onnx_threads(), spin_wait=self.spin_wait, enable_cpu_mem_arena=self.cpu_mem_arena,
                              shrink_arena_after_run=self.shrink_arena, attention_kernels=self.attention_kernels)
