"""Typed configuration of the app: one `StageConfig` per stage, validated once at synth.

`cdk.json` holds the stages under the context key `stages`; each stage overrides only the keys it
needs, the defaults live here. `load_config` turns that JSON into frozen dataclasses and fails on
the first unknown key, wrong type or out-of-range value with one message naming the full key
(e.g. `stages.prod.inference.instance_type`), the value and what is allowed. Stacks receive these
objects; they never read the context or the environment themselves.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

# NeuronCores per instance type: bounds tensor parallelism (16 GB accelerator memory per core).
INF2_NEURON_CORES = {
    "ml.inf2.xlarge": 2,
    "ml.inf2.8xlarge": 2,
    "ml.inf2.24xlarge": 12,
    "ml.inf2.48xlarge": 24,
}
TRN1_NEURON_CORES = {
    "ml.trn1.2xlarge": 2,
    "ml.trn1.32xlarge": 32,
    "ml.trn1n.32xlarge": 32,
}
TITAN_V2_DIMENSIONS = (256, 512, 1024)
# The retention periods CloudWatch Logs offers, in days, with the CDK RetentionDays member of each.
LOG_RETENTION_DAYS = {
    1: "ONE_DAY", 3: "THREE_DAYS", 5: "FIVE_DAYS", 7: "ONE_WEEK", 14: "TWO_WEEKS", 30: "ONE_MONTH", 60: "TWO_MONTHS",
    90: "THREE_MONTHS", 120: "FOUR_MONTHS", 150: "FIVE_MONTHS", 180: "SIX_MONTHS", 365: "ONE_YEAR", 400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS", 731: "TWO_YEARS", 1096: "THREE_YEARS", 1827: "FIVE_YEARS", 3653: "TEN_YEARS",
}
STAGE_NAME_PATTERN = r"^[a-z][a-z0-9]{1,15}$"
# serving.default_generator: `auto` or a deployed stage's generator (lambda/query/settings.py).
SERVING_GENERATOR_CHOICES = ("auto", "bedrock", "base", "finetuned")
# Bedrock's rule for VectorIndexName (CloudFormation OpenSearchManagedClusterConfiguration).
INDEX_NAME_PATTERN = r"^(?![\-_+.])[a-z0-9][a-z0-9\-_\.]*$"
FIELD_NAME_PATTERN = r"^[a-zA-Z][a-zA-Z0-9_\-]{0,63}$"
S3_PREFIX_PATTERN = r"^([a-z0-9][a-z0-9\-_.]*/)+$"


class ConfigError(ValueError):
    """A configuration value is wrong. `key` grows into the full dotted path as it propagates."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config {key}={value!r}: {allowed}")

    def under(self, prefix: str) -> "ConfigError":
        return ConfigError(f"{prefix}.{self.key}", self.value, self.allowed)


def _one_of(obj: Any, name: str, allowed) -> None:
    value = getattr(obj, name)
    if value not in allowed:
        raise ConfigError(name, value, f"allowed: {', '.join(map(str, allowed))}")


def _in_range(obj: Any, name: str, low: int, high: int) -> None:
    value = getattr(obj, name)
    if not low <= value <= high:
        raise ConfigError(name, value, f"allowed: {low}..{high}")


def _matches(obj: Any, name: str, pattern: str, meaning: str) -> None:
    value = getattr(obj, name)
    if not re.match(pattern, value):
        raise ConfigError(name, value, f"must be {meaning} (pattern {pattern})")


@dataclass(frozen=True)
class StorageConfig:
    """S3 buckets: documents (knowledge source), training data, model artifacts, access logs."""

    documents_prefix: str = "documents/"
    noncurrent_version_expiry_days: int = 30
    abort_incomplete_upload_days: int = 7
    access_log_expiry_days: int = 365
    checkpoint_expiry_days: int = 30

    def validate(self) -> None:
        _matches(self, "documents_prefix", S3_PREFIX_PATTERN, "an S3 prefix ending in '/'")
        _in_range(self, "noncurrent_version_expiry_days", 1, 3650)
        _in_range(self, "abort_incomplete_upload_days", 1, 365)
        _in_range(self, "access_log_expiry_days", 1, 3650)
        _in_range(self, "checkpoint_expiry_days", 1, 3650)


@dataclass(frozen=True)
class SearchConfig:
    """The OpenSearch Service domain and the vector index the knowledge base writes."""

    # Bedrock knowledge bases need OpenSearch 2.13+ on a managed domain; the newest CDK 2.275 offers.
    engine_version: str = "3.7"
    data_node_instance_type: str = "r7g.large.search"
    data_node_count: int = 1
    dedicated_master_count: int = 0
    dedicated_master_instance_type: str = "m7g.large.search"
    multi_az: bool = False
    volume_size_gib: int = 20
    index_name: str = "rag-documents"
    vector_field: str = "embedding"
    text_field: str = "text"
    metadata_field: str = "metadata"
    # Metadata attributes (from `<doc>.metadata.json`) that queries filter on: mapped as `keyword`.
    # `collection` separates the shipped evaluation documents from real ones (model_artifacts/eval/README.md).
    filterable_fields: tuple[str, ...] = ("category", "collection")
    search_pipeline_name: str = "rag-hybrid"
    # Hybrid queries: weight of the k-NN sub-query; BM25 gets 1 - this (the pipeline's weights).
    hybrid_vector_weight: float = 0.7
    log_retention_days: int = 30

    def validate(self) -> None:
        version = re.fullmatch(r"(\d+)\.(\d+)", self.engine_version)
        if not version or (int(version[1]), int(version[2])) < (2, 13):
            raise ConfigError("engine_version", self.engine_version, "OpenSearch 2.13 or later, as 'major.minor': knowledge bases need it")
        _matches(self, "data_node_instance_type", r"^[a-z0-9]+\.[a-z0-9]+\.search$", "an OpenSearch instance type like r7g.large.search")
        _matches(self, "dedicated_master_instance_type", r"^[a-z0-9]+\.[a-z0-9]+\.search$", "an OpenSearch instance type")
        _in_range(self, "data_node_count", 1, 80)
        _one_of(self, "dedicated_master_count", (0, 3, 5))
        if self.multi_az and self.data_node_count % 2:
            raise ConfigError("data_node_count", self.data_node_count, "an even number when multi_az is true (two zones)")
        _in_range(self, "volume_size_gib", 10, 1024)
        _matches(self, "index_name", INDEX_NAME_PATTERN, "a lowercase index name Bedrock accepts")
        for name in ("vector_field", "text_field", "metadata_field", "search_pipeline_name"):
            _matches(self, name, FIELD_NAME_PATTERN, "a field name (letters, digits, _ or -)")
        if len({self.vector_field, self.text_field, self.metadata_field}) != 3:
            raise ConfigError("vector_field", self.vector_field, "vector, text and metadata fields must differ")
        for name in self.filterable_fields:
            if not re.match(FIELD_NAME_PATTERN, name) or name in (self.vector_field, self.text_field, self.metadata_field):
                raise ConfigError("filterable_fields", name, "a field name distinct from the vector, text and metadata fields")
        if not 0.0 < self.hybrid_vector_weight < 1.0:
            raise ConfigError("hybrid_vector_weight", self.hybrid_vector_weight, "between 0 and 1, exclusive (both sub-queries count)")
        _one_of(self, "log_retention_days", tuple(LOG_RETENTION_DAYS))


@dataclass(frozen=True)
class KnowledgeBaseConfig:
    """The Bedrock knowledge base, its data source and the ingestion path."""

    embedding_model_id: str = "amazon.titan-embed-text-v2:0"
    embedding_dimensions: int = 1024
    chunking_strategy: str = "FIXED_SIZE"
    chunk_max_tokens: int = 300  # FIXED_SIZE and SEMANTIC chunks; HIERARCHICAL child chunks
    chunk_overlap_percentage: int = 20  # FIXED_SIZE
    hierarchical_parent_max_tokens: int = 1500  # HIERARCHICAL parent chunks
    hierarchical_overlap_tokens: int = 60  # HIERARCHICAL
    semantic_breakpoint_percentile: int = 95  # SEMANTIC: dissimilarity percentile that splits
    semantic_buffer_size: int = 0  # SEMANTIC: sentences around each one compared (0 or 1)
    ingestion_batch_window_s: int = 60
    # Receives of a failing message before the dead-letter queue. Only real failures count: a
    # change that meets a running sync is sent back as a new, delayed message (no receive spent).
    ingestion_max_attempts: int = 5
    # Seconds between tries while a sync is running, and between checks of a started job's outcome
    # (an SQS message delay: at most 900 s).
    ingestion_retry_after_s: int = 300
    # Times a FAILED ingestion job is started again before the failed-ingestion alarm.
    ingestion_job_retries: int = 2

    def validate(self) -> None:
        _one_of(self, "embedding_model_id", ("amazon.titan-embed-text-v2:0",))
        _one_of(self, "embedding_dimensions", TITAN_V2_DIMENSIONS)
        _one_of(self, "chunking_strategy", ("FIXED_SIZE", "HIERARCHICAL", "SEMANTIC", "NONE"))
        _in_range(self, "chunk_max_tokens", 20, 8192)
        _in_range(self, "chunk_overlap_percentage", 1, 99)
        if self.chunking_strategy == "HIERARCHICAL":  # only there do parent, child and overlap bound each other
            _in_range(self, "hierarchical_parent_max_tokens", self.chunk_max_tokens + 1, 8192)
            _in_range(self, "hierarchical_overlap_tokens", 1, self.chunk_max_tokens - 1)
        _in_range(self, "semantic_breakpoint_percentile", 50, 99)
        _in_range(self, "semantic_buffer_size", 0, 1)
        _in_range(self, "ingestion_batch_window_s", 0, 300)
        # One receive is no retry at all: a transient failure would dead-letter a healthy change.
        _in_range(self, "ingestion_max_attempts", 3, 100)
        # The delay of an SQS message (DelaySeconds) is at most 900 s.
        _in_range(self, "ingestion_retry_after_s", 60, 900)
        _in_range(self, "ingestion_job_retries", 0, 10)


@dataclass(frozen=True)
class TrainingConfig:
    """Fine-tuning on Trainium, orchestrated by Step Functions."""

    instance_type: str = "ml.trn1.2xlarge"
    instance_count: int = 1
    volume_size_gib: int = 256
    max_runtime_hours: int = 24
    use_spot: bool = False
    # Spot: the longest a job may take including interruptions. optimum-neuron 0.4.1 cannot resume
    # (NeuronTrainer.train refuses resume_from_checkpoint), so an interruption restarts training
    # from step 0: leave room for at least one full restart (at least 2 x max_runtime_hours).
    max_wait_hours: int = 48
    base_model_s3_prefix: str = "base-models/qwen3-1.7b/"
    auto_deploy: bool = False
    notification_email: Optional[str] = None
    log_retention_days: int = 90

    def validate(self) -> None:
        _one_of(self, "instance_type", tuple(TRN1_NEURON_CORES))
        _in_range(self, "instance_count", 1, 16)
        _in_range(self, "volume_size_gib", 32, 16384)
        _in_range(self, "max_runtime_hours", 1, 672)
        if self.use_spot:
            # SageMaker's ceiling is 28 days; an interruption restarts training from step 0.
            _in_range(self, "max_wait_hours", 2 * self.max_runtime_hours, 672)
        _matches(self, "base_model_s3_prefix", S3_PREFIX_PATTERN, "an S3 prefix ending in '/'")
        if self.notification_email is not None:
            _matches(self, "notification_email", r"^[^@\s]+@[^@\s]+\.[^@\s]+$", "an e-mail address")
        _one_of(self, "log_retention_days", tuple(LOG_RETENTION_DAYS))


# Inferentia2 sizing (see model_artifacts/inference/README.md): host memory per instance type, the
# accelerator memory per NeuronCore, and the share of it the bf16 weights may take (the rest is
# KV cache and runtime). Loading needs about 1.5x the weights in host memory.
INF2_HOST_MEMORY_GIB = {"ml.inf2.xlarge": 16, "ml.inf2.8xlarge": 128, "ml.inf2.24xlarge": 384, "ml.inf2.48xlarge": 768}
NEURON_CORE_MEMORY_GB = 16
NEURON_WEIGHTS_SHARE = 0.7
NEURON_TENSOR_PARALLEL_SIZES = (1, 2, 4, 8, 12, 24)
SERVING_MODELS_PREFIX = "models/"  # StorageStack's ARTIFACT_PREFIXES.models: what the endpoint role may read
# EventBridge Scheduler cron: six fields (minutes hours day-of-month month day-of-week year).
SCHEDULE_PATTERN = r"^cron\(\S+ \S+ \S+ \S+ \S+ \S+\)$"


def inf2_min_tensor_parallel(model_params_billions: float) -> int:
    """Smallest valid tensor parallel size whose NeuronCores hold the model's bf16 weights."""
    weights_gb = 2 * model_params_billions
    needed = weights_gb / (NEURON_CORE_MEMORY_GB * NEURON_WEIGHTS_SHARE)
    return next((size for size in NEURON_TENSOR_PARALLEL_SIZES if size >= needed), NEURON_TENSOR_PARALLEL_SIZES[-1] + 1)


@dataclass(frozen=True)
class InferenceConfig:
    """The base and fine-tuned models on one Inferentia2 real-time endpoint (optional per stage).

    `enabled: false` gives a stage without an endpoint (the serving path then uses Bedrock).
    Which model version each variant serves is not config: it is the serving record in SSM
    (lambda/shared/model_record.py), written by the model deployer and read at deploy time.
    Tensor parallel size, batch size and sequence length must equal what the model was compiled
    with (the container refuses to start otherwise); the training job compiles with these values.
    """

    enabled: bool = True
    # Serve the base model (compiled for inf2 by a compile-only run) beside the fine-tuned one.
    serve_base: bool = True
    instance_type: str = "ml.inf2.xlarge"
    model_params_billions: float = 1.7
    tensor_parallel_size: int = 2
    batch_size: int = 4
    sequence_length: int = 4096
    model_data_download_timeout_s: int = 1200
    startup_health_check_timeout_s: int = 1800
    volume_size_gib: int = 64
    min_instances: int = 1
    max_instances: int = 1
    target_invocations_per_instance: int = 20
    latency_alarm_p90_s: int = 20
    errors_alarm_threshold: int = 5
    log_retention_days: int = 30
    # Idle cost: EventBridge Scheduler switches the endpoint on/off (cron expressions, e.g.
    # "cron(0 8 ? * MON-FRI *)"); none = no schedule. Both or neither.
    power_on_schedule: Optional[str] = None
    power_off_schedule: Optional[str] = None
    schedule_timezone: str = "UTC"

    def validate(self) -> None:
        _one_of(self, "instance_type", tuple(INF2_NEURON_CORES))
        cores = INF2_NEURON_CORES[self.instance_type]
        if self.tensor_parallel_size not in NEURON_TENSOR_PARALLEL_SIZES or self.tensor_parallel_size > cores:
            raise ConfigError("tensor_parallel_size", self.tensor_parallel_size, f"one of {', '.join(map(str, NEURON_TENSOR_PARALLEL_SIZES))} and at most the {cores} NeuronCores of {self.instance_type}")
        if not 0.1 <= self.model_params_billions <= 500:
            raise ConfigError("model_params_billions", self.model_params_billions, "allowed: 0.1..500 (billions of parameters)")
        needed = inf2_min_tensor_parallel(self.model_params_billions)
        weights_gb = 2 * self.model_params_billions
        if self.tensor_parallel_size < needed:
            where = f"at least {needed} NeuronCores" if needed <= max(INF2_NEURON_CORES.values()) else "more NeuronCores than any inf2 instance has"
            raise ConfigError(
                "tensor_parallel_size", self.tensor_parallel_size,
                f"a {self.model_params_billions:g}B-parameter model ({weights_gb:g} GB of bf16 weights) needs {where} "
                f"({NEURON_CORE_MEMORY_GB} GB each, {NEURON_WEIGHTS_SHARE:.0%} of it for weights); see model_artifacts/inference/README.md",
            )
        host_gib = INF2_HOST_MEMORY_GIB[self.instance_type]
        if weights_gb * 1.5 > host_gib:
            raise ConfigError("instance_type", self.instance_type, f"a {self.model_params_billions:g}B-parameter model needs about {weights_gb * 1.5:g} GiB of host memory to load; {self.instance_type} has {host_gib} GiB")
        _in_range(self, "batch_size", 1, 64)
        _in_range(self, "sequence_length", 128, 32768)
        # SageMaker's maximum for both is 3600 s; Neuron models load slowly, so keep the floor high.
        _in_range(self, "model_data_download_timeout_s", 60, 3600)
        _in_range(self, "startup_health_check_timeout_s", 60, 3600)
        _in_range(self, "volume_size_gib", 1, 512)
        _in_range(self, "min_instances", 1, 10)
        _in_range(self, "max_instances", self.min_instances, 10)
        _in_range(self, "target_invocations_per_instance", 1, 10000)
        _in_range(self, "latency_alarm_p90_s", 1, 60)
        _in_range(self, "errors_alarm_threshold", 1, 10000)
        _one_of(self, "log_retention_days", tuple(LOG_RETENTION_DAYS))
        for name in ("power_on_schedule", "power_off_schedule"):
            if getattr(self, name) is not None:
                _matches(self, name, SCHEDULE_PATTERN, "an EventBridge Scheduler cron expression like cron(0 8 ? * MON-FRI *)")
        if (self.power_on_schedule is None) != (self.power_off_schedule is None):
            missing = "power_off_schedule" if self.power_off_schedule is None else "power_on_schedule"
            raise ConfigError(missing, None, "set both power_on_schedule and power_off_schedule, or neither (an endpoint switched on by a schedule must be switched off by one)")
        _matches(self, "schedule_timezone", r"^(UTC|[A-Z][A-Za-z_]+(/[A-Za-z0-9_+\-]+){1,2})$", "an IANA time zone like Europe/Paris, or UTC")


@dataclass(frozen=True)
class ServingConfig:
    """The API and query Lambda: question -> retrieve -> prompt -> generate.

    `default_generator` answers requests that name no generator: `auto` (the first available of
    finetuned, base, bedrock), or one of them (a request then gets a 503 while it is not deployed).
    """

    default_generator: str = "auto"
    bedrock_model_id: str = "amazon.nova-lite-v1:0"
    default_retriever: str = "kb"
    default_top_k: int = 5
    max_top_k: int = 20
    max_question_chars: int = 2000
    max_new_tokens: int = 512
    temperature: float = 0.2
    lambda_timeout_s: int = 25
    reserved_concurrency: Optional[int] = None
    throttle_rate_limit: int = 20
    throttle_burst_limit: int = 40
    log_retention_days: int = 30
    memory_size_mb: int = 512
    # The account-wide API Gateway CloudWatch role (AWS::ApiGateway::Account, one per account and
    # region) that access/execution logging needs: false in every stage but one sharing an account.
    api_cloudwatch_role: bool = True

    @property
    def retrieval_timeout_s(self) -> int:
        """Read timeout of retrieval calls (Retrieve, embedding, OpenSearch)."""
        return min(5, max(1, self.lambda_timeout_s // 5))

    @property
    def generation_timeout_s(self) -> int:
        """Read timeout of generation calls: what is left after retrieval and a 1 s margin."""
        return max(1, self.lambda_timeout_s - self.retrieval_timeout_s - 1)

    def validate(self) -> None:
        _one_of(self, "default_generator", SERVING_GENERATOR_CHOICES)
        _matches(self, "bedrock_model_id", r"^([a-z]{2,4}\.)?[a-z0-9-]+\.[a-zA-Z0-9.\-:]+$", "a Bedrock model id like amazon.nova-lite-v1:0")
        _one_of(self, "default_retriever", ("kb", "opensearch"))
        _in_range(self, "max_top_k", 1, 100)
        _in_range(self, "default_top_k", 1, self.max_top_k)
        _in_range(self, "max_question_chars", 1, 20000)
        _in_range(self, "max_new_tokens", 1, 8192)
        if not 0.0 <= self.temperature <= 1.0:
            raise ConfigError("temperature", self.temperature, "allowed: 0.0..1.0")
        # API Gateway's default integration timeout is 29 s: the function must give up first.
        _in_range(self, "lambda_timeout_s", 3, 28)
        if self.reserved_concurrency is not None:
            _in_range(self, "reserved_concurrency", 1, 1000)
        _in_range(self, "throttle_rate_limit", 1, 10000)
        _in_range(self, "throttle_burst_limit", 1, 5000)
        _one_of(self, "log_retention_days", tuple(LOG_RETENTION_DAYS))
        _in_range(self, "memory_size_mb", 128, 10240)


@dataclass(frozen=True)
class MonitoringConfig:
    """The stage's alarm topic (who it e-mails), the thresholds of the serving alarms, the dashboard."""

    # Subscribed to the stage's alarm topic; AWS e-mails a confirmation link first.
    alarm_email: Optional[str] = None
    api_5xx_threshold: int = 5  # API 5xx answers per 5 minutes
    api_latency_p90_ms: int = 15000  # API p90 latency, two of three 5-minute periods
    query_errors_threshold: int = 1  # query function errors (crashes, timeouts) per 5 minutes

    def validate(self) -> None:
        if self.alarm_email is not None:
            _matches(self, "alarm_email", r"^[^@\s]+@[^@\s]+\.[^@\s]+$", "an e-mail address")
        _in_range(self, "api_5xx_threshold", 1, 100000)
        _in_range(self, "api_latency_p90_ms", 100, 29000)  # above API Gateway's 29 s it cannot happen
        _in_range(self, "query_errors_threshold", 1, 100000)


@dataclass(frozen=True)
class StageConfig:
    """Everything one stage (e.g. dev, prod) deploys. `name` comes from its key under `stages`."""

    name: str
    account: Optional[str] = None
    region: Optional[str] = None
    retain_data: bool = False
    storage: StorageConfig = field(default_factory=StorageConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    knowledge_base: KnowledgeBaseConfig = field(default_factory=KnowledgeBaseConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)

    @property
    def stack_prefix(self) -> str:
        """`RagDev`, `RagProd`: the prefix of every stack name of this stage."""
        return "Rag" + self.name.capitalize()

    def validate(self) -> None:
        _matches(self, "name", STAGE_NAME_PATTERN, "lowercase letters and digits, 2-16 characters")
        if self.account is not None:
            _matches(self, "account", r"^\d{12}$", "a 12-digit AWS account id")
        if self.region is not None:
            _matches(self, "region", r"^[a-z]{2}(-gov)?-[a-z]+-\d$", "an AWS region like us-east-1")
        if self.training.auto_deploy and not self.inference.enabled:
            raise ConfigError("training.auto_deploy", True, "false when inference.enabled is false (there is no endpoint to deploy to)")
        if self.inference.power_on_schedule is not None and not self.inference.enabled:
            raise ConfigError("inference.power_on_schedule", self.inference.power_on_schedule, "none when inference.enabled is false (there is no endpoint to switch)")
        self._validate_serving()

    def _validate_serving(self) -> None:
        """Cross-field rules between serving and inference."""
        default = self.serving.default_generator
        if default in ("base", "finetuned") and not self.inference.enabled:
            raise ConfigError("serving.default_generator", default, "'auto' or 'bedrock' when inference.enabled is false (no endpoint to call)")
        if default == "base" and not self.inference.serve_base:
            raise ConfigError("serving.default_generator", default, "not 'base' when inference.serve_base is false (the stage never serves the base model)")
        if self.inference.enabled and self.serving.max_new_tokens * 2 > self.inference.sequence_length:
            raise ConfigError(
                "serving.max_new_tokens", self.serving.max_new_tokens,
                f"at most half of inference.sequence_length ({self.inference.sequence_length // 2}): the rest holds the prompt",
            )


@dataclass(frozen=True)
class AppConfig:
    stages: dict[str, StageConfig]

    def select(self, stage: str) -> list[StageConfig]:
        """`all` gives every stage; any other name gives that stage or fails naming the choices."""
        if stage == "all":
            return list(self.stages.values())
        if stage not in self.stages:
            raise ConfigError("stage", stage, f"allowed: {', '.join(self.stages)}, all")
        return [self.stages[stage]]


def load_config(context: dict[str, Any]) -> AppConfig:
    """Builds and validates the app config from the `stages` context object."""
    raw_stages = context.get("stages")
    if not isinstance(raw_stages, dict) or not raw_stages:
        raise ConfigError("stages", raw_stages, "an object mapping stage names to their settings")
    stages = {}
    for name, raw in raw_stages.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"stages.{name}", raw, "an object of stage settings")
        if "name" in raw:
            raise ConfigError(f"stages.{name}.name", raw["name"], "not settable: the stage's key is its name")
        stages[name] = _build(StageConfig, {"name": name, **raw}, f"stages.{name}")
    return AppConfig(stages=stages)


def _build(cls: type, raw: dict[str, Any], path: str):
    """Builds dataclass `cls` from `raw`, checking keys and types, then runs its `validate`."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}", raw[unknown[0]], f"unknown key; known keys: {', '.join(sorted(fields))}")
    values = {name: _coerce(hints[name], value, f"{path}.{name}") for name, value in raw.items()}
    obj = cls(**values)
    try:
        obj.validate()
    except ConfigError as error:
        raise error.under(path) from None
    return obj


def _coerce(hint, value: Any, path: str):
    """Checks `value` against the type hint; nested dataclasses are built recursively."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(path, value, "an object")
        return _build(hint, value, path)
    if origin in (typing.Union, types.UnionType):
        options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return None if value is None else _coerce(options[0], value, path)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(path, value, "a list of strings")
        return tuple(value)
    expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[hint]
    valid = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value, valid = float(value), True
    if not valid:
        raise ConfigError(path, value, f"must be {expected}")
    return value
