"""Typed configuration parsed from ``params.yaml``, the one source of configuration.

Each pipeline step owns one section of ``params.yaml`` and one frozen config class below. Every key
is required: the values live in ``params.yaml`` (which DVC stages and flows read too), never as
defaults in code. Unknown keys and bad values raise :class:`ConfigError` naming the key and the
allowed values. ``key.path=value`` overrides (``--set train.lr=3e-4``) are applied before
validation.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emonext.labels import FER2013_CLASSES, canonical_class

DEFAULT_PARAMS_FILE = Path("params.yaml")

ModelArch = Literal["emonext", "resnet18", "resnet34", "vgg19_bn", "densenet121"]
ConvNeXtVariant = Literal[
    "convnext_atto",
    "convnext_atto_ols",
    "convnext_femto",
    "convnext_femto_ols",
    "convnext_pico",
    "convnext_pico_ols",
    "convnext_nano",
    "convnext_nano_ols",
    "convnext_tiny",
    "convnext_tiny_hnf",
    "convnext_small",
    "convnext_base",
    "convnext_large",
    "convnext_xlarge",
    "convnext_xxlarge",
]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


SectionT = TypeVar("SectionT", bound="_Section")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names every bad key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EngineConfig(_Section):
    """How one image search engine is driven (the ``generic`` adapter is configured entirely here).

    Args:
        results_url: Results-page URL template with ``{query}`` (URL-encoded keyword).
        image_selector: CSS selector of the result elements that carry image URLs.
        image_attributes: Attributes tried in order for the image URL (e.g. ``data-src``, ``src``,
            ``href``); the first non-empty one wins.
        json_attribute: Attribute holding JSON with the full-size image URL (as Bing's ``m``),
            or null.
        json_key: Key of the image URL inside that JSON.
        more_button: CSS selector of a "more results" button clicked when scrolling stalls, or null.
        url_pattern: Regular expression a URL must match to be kept (e.g. ``^https?://``).
    """

    results_url: str
    image_selector: str
    image_attributes: tuple[str, ...] = Field(min_length=1)
    json_attribute: str | None
    json_key: str | None
    more_button: str | None
    url_pattern: str


class BrowserConfig(_Section):
    """Headless Chromium driven by Selenium (Debian's chromium + chromium-driver).

    Args:
        binary: Chromium executable.
        driver: ChromeDriver executable (explicit, so Selenium Manager never goes online).
        headless: Run without a window.
        page_load_timeout: Seconds to wait for a results page.
        scroll_pause: Seconds to wait after each scroll for new results.
        max_scrolls: Give up on a keyword after this many scrolls without reaching the target.
    """

    binary: Path
    driver: Path
    headless: bool
    page_load_timeout: float = Field(gt=0)
    scroll_pause: float = Field(ge=0)
    max_scrolls: int = Field(ge=0)


class DownloadConfig(_Section):
    """Image downloads (requests in a thread pool) and their validation.

    Args:
        workers: Concurrent downloads.
        timeout: Seconds per request (connect and read).
        retries: Extra attempts on connection errors, timeouts and 429/5xx answers.
        backoff: Base of the exponential back-off between attempts, in seconds.
        per_host_delay: Minimum seconds between two requests to the same host.
        proxy: HTTP(S) proxy URL, or null.
        user_agent: User-Agent header.
        min_bytes: Smaller downloads are rejected.
        max_bytes: Larger downloads are rejected (and not read further).
        max_pixels: Images with more pixels are rejected (decompression bombs).
    """

    workers: int = Field(ge=1, le=64)
    timeout: float = Field(gt=0)
    retries: int = Field(ge=0)
    backoff: float = Field(ge=0)
    per_host_delay: float = Field(ge=0)
    proxy: str | None
    user_agent: str
    min_bytes: int = Field(ge=0)
    max_bytes: int = Field(gt=0)
    max_pixels: int = Field(gt=0)


class ScrapeConfig(_Section):
    """Web image search by emotion keyword.

    Args:
        enabled: Opt-in switch. The web is not reproducible, so pipelines (``dvc repro``, the
            Prefect flows) only search and download when this is true; when false the step keeps
            whatever ``output_dir`` already holds.
        output_dir: Where images (``<label>/<sha256>.<ext>``) and ``manifest.csv`` go.
        engine: ``bing``, ``google`` or ``generic`` (configured by ``generic``).
        keyword_templates: Search phrases per class, ``{emotion}`` is the class name.
        images_per_keyword: Image URLs to collect per keyword.
        classes: Classes to scrape; null for ``data.classes``.
        generic: The generic engine adapter.
        browser: Headless browser settings.
        download: Download and validation settings.
    """

    enabled: bool
    output_dir: Path
    engine: Literal["bing", "google", "generic"]
    keyword_templates: tuple[str, ...] = Field(min_length=1)
    images_per_keyword: int = Field(ge=1)
    classes: tuple[str, ...] | None
    generic: EngineConfig
    browser: BrowserConfig
    download: DownloadConfig


class SourceConfig(_Section):
    """One input of the cleaning step.

    Args:
        name: Short name recorded in the manifest (e.g. ``fer2013``, ``scraped``).
        path: Image-folder tree or ``fer2013.csv``.
        pre_cropped: Faces are already cropped and aligned (FER2013): skip face detection.
    """

    name: str
    path: Path
    pre_cropped: bool


class FaceDetectionConfig(_Section):
    """OpenCV Haar-cascade face detection and cropping.

    Args:
        cascade: Cascade file name in ``cv2.data.haarcascades`` or a path.
        scale_factor: Cascade scale step.
        min_neighbors: Cascade detection confidence (higher: fewer false faces).
        min_size: Smallest face side in pixels of the original image.
        detect_max_side: Images are downscaled to at most this side for detection (boxes are
            mapped back), for speed.
        margin: Extra border around the detected box, as a fraction of its side.
        policy: ``largest`` keeps the largest face, ``all`` keeps every face as its own image.
    """

    cascade: str
    scale_factor: float = Field(gt=1.0)
    min_neighbors: int = Field(ge=0)
    min_size: int = Field(ge=1)
    detect_max_side: int = Field(ge=64)
    margin: float = Field(ge=0.0, le=1.0)
    policy: Literal["largest", "all"]


class CleanConfig(_Section):
    """Cleaning: decode checks, blur, exact and near duplicates, face crop, grayscale, resize.

    Output images are ``data.image_size`` square grayscale faces.

    Args:
        sources: Inputs, in priority order (an image kept from an earlier source wins duplicates).
        output_dir: Processed images, ``manifest.csv`` and the report.
        min_side: Images (or face crops) with a smaller side are dropped as too small.
        blur_threshold: Minimum variance of the Laplacian of the face crop; 0 disables.
        near_duplicate_distance: Maximum perceptual-hash Hamming distance of near duplicates;
            -1 keeps near duplicates (exact duplicates are always dropped).
        hash_size: Perceptual hash side (``hash_size**2`` bits).
        face: Face detection settings.
        workers: Processes for decoding and face detection; 0 uses every core.
    """

    sources: tuple[SourceConfig, ...] = Field(min_length=1)
    output_dir: Path
    min_side: int = Field(ge=1)
    blur_threshold: float = Field(ge=0.0)
    near_duplicate_distance: int = Field(ge=-1, le=32)
    hash_size: int = Field(ge=4, le=16)
    face: FaceDetectionConfig
    workers: int = Field(ge=0)


class SplitConfig(_Section):
    """Stratified, leakage-free, stable train/val/test split of the cleaned images.

    Args:
        ratios: Fractions for ``train``, ``val`` and ``test``; they must sum to 1.
        honour_usage: Keep FER2013 rows in their original ``Usage`` split; ratio-split the rest.
        output_dir: The split image folders (``<split>/<class>/``), ``split.csv`` and counts.
        seed: Salt of the content-hash assignment.
    """

    ratios: dict[Literal["train", "val", "test"], float]
    honour_usage: bool
    output_dir: Path
    seed: int = Field(ge=0)

    @field_validator("ratios")
    @classmethod
    def _ratios_sum_to_one(cls, ratios: dict[str, float]) -> dict[str, float]:
        if set(ratios) != {"train", "val", "test"} or any(value < 0 for value in ratios.values()):
            raise ValueError(f"needs non-negative train, val and test fractions, got {ratios}")
        if abs(sum(ratios.values()) - 1.0) > 1e-6:
            raise ValueError(f"fractions must sum to 1, got {sum(ratios.values())}")
        return ratios


class DataConfig(_Section):
    """Where the labelled faces are and how they are decoded.

    Args:
        root: An image-folder tree (``train/<class>/``, ``val/<class>/`` or ``<class>/``) or a
            FER2013 ``fer2013.csv`` file.
        format: ``folder``, ``csv`` or ``auto`` (a file is read as CSV, a directory as folders).
        classes: Class names in label order; FER2013's canonical order by default.
        image_size: Side length faces are decoded to (grayscale, stored as uint8 in memory).
        train_split: Split name used for training.
        val_split: Split name used for model selection.
        val_fraction: Share of the training images held out (stratified) when the data has no
            ``val_split``; 0 disables validation.
        max_per_class: Cap on images per class and split, for quick experiments; null for all.
    """

    root: Path
    format: Literal["auto", "folder", "csv"]
    classes: tuple[str, ...] = Field(min_length=2)
    image_size: int = Field(ge=8, le=1024)
    train_split: str
    val_split: str
    val_fraction: float = Field(ge=0.0, lt=1.0)
    max_per_class: int | None = Field(ge=1)

    @field_validator("classes")
    @classmethod
    def _canonical_unique_classes(cls, classes: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(canonical_class(name) or name.strip().lower() for name in classes)
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique after alias resolution, got {list(names)}")
        return names


class AugmentConfig(_Section):
    """Training-time augmentation, applied to whole batches in one affine resampling.

    Args:
        crop_scale: Range of the random crop's side as a fraction of the face (1.0 = no zoom).
        translate: Maximum random shift as a fraction of the image side.
        rotation: Maximum absolute rotation in degrees.
        hflip: Probability of a horizontal flip.
        random_erasing: Probability of erasing one random rectangle.
    """

    crop_scale: tuple[float, float]
    translate: float = Field(ge=0.0, le=0.5)
    rotation: float = Field(ge=0.0, le=180.0)
    hflip: float = Field(ge=0.0, le=1.0)
    random_erasing: float = Field(ge=0.0, le=1.0)

    @field_validator("crop_scale")
    @classmethod
    def _ordered_scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.1 <= low <= high <= 1.0:
            raise ValueError(f"must satisfy 0.1 <= low <= high <= 1.0, got {list(value)}")
        return value


class ModelConfig(_Section):
    """The network: EmoNeXt or one of the baselines, and its input preprocessing.

    Args:
        arch: ``emonext`` or a baseline (``resnet18``, ``resnet34``, ``vgg19_bn``, ``densenet121``).
        backbone: timm ConvNeXt variant used by EmoNeXt (``convnext_atto`` ... ``convnext_xlarge``).
        input_size: Side length of the network input; decoded faces are resized to it.
        output_stride: Overall stride of the ConvNeXt backbone: 32 as in the paper; 16 or 8 turn
            the last stages' downsampling into dilation, keeping more spatial detail of small
            faces at a higher cost (pretrained weights stay compatible).
        stn: Use the Spatial Transformer Network.
        se: Use Squeeze-and-Excitation blocks at the stage transitions.
        se_reduction: SE channel reduction ratio.
        self_attention: Use the self-attention block over the pooled features (and its
            regularisation, weighted by ``train.sa_lambda``).
        attention_tokens: Number of tokens the pooled feature vector is split into for
            self-attention; must divide the backbone's feature width.
        drop_path: Stochastic depth rate of the backbone.
        drop_rate: Dropout before the classifier.
        pretrained: null, ``hub`` (timm's hub, needs network) or a path to backbone weights.
        mean: Grayscale normalisation mean (pixel values in [0, 1]).
        std: Grayscale normalisation standard deviation.
    """

    arch: ModelArch
    backbone: ConvNeXtVariant
    input_size: int = Field(ge=16, le=1024)
    output_stride: Literal[8, 16, 32]
    stn: bool
    se: bool
    se_reduction: int = Field(ge=1)
    self_attention: bool
    attention_tokens: int = Field(ge=1)
    drop_path: float = Field(ge=0.0, lt=1.0)
    drop_rate: float = Field(ge=0.0, lt=1.0)
    pretrained: str | None
    mean: float = Field(ge=0.0, le=1.0)
    std: float = Field(gt=0.0, le=1.0)

    @property
    def architecture(self) -> str:
        """``emonext/<backbone>`` or the baseline's name (which has no ConvNeXt backbone)."""
        return f"emonext/{self.backbone}" if self.arch == "emonext" else self.arch


class TrainConfig(_Section):
    """Optimisation recipe.

    Args:
        epochs: Number of epochs.
        batch_size: Images per optimisation step and process; under torchrun the global batch is
            ``batch_size x WORLD_SIZE``.
        optimizer: ``adamw`` or ``sgd`` (momentum 0.9, Nesterov).
        lr: Peak learning rate, reached after warm-up; the schedule never replaces it.
        weight_decay: Decoupled weight decay (not applied to norms and biases).
        warmup_epochs: Linear warm-up length in epochs (fractions allowed).
        min_lr: Learning rate at the end of the cosine decay.
        label_smoothing: Cross-entropy label smoothing.
        sa_lambda: Weight of the self-attention regularisation term.
        ema: Keep an exponential moving average of the weights and evaluate with it.
        ema_decay: EMA decay per step.
        precision: ``auto`` (bf16 on CPUs that support it, fp16 on CUDA), ``fp32``, ``bf16``,
            ``fp16`` (CUDA only).
        grad_clip: Maximum gradient norm; null disables clipping.
        early_stopping_patience: Stop after this many epochs without a better val accuracy;
            0 disables early stopping.
        class_balance: ``none``, ``loss`` (inverse-frequency class weights) or ``sampler``
            (class-balanced sampling).
        seed: Seed for initialisation, shuffling and augmentation.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        num_threads: CPU threads for torch; 0 keeps torch's default.
        max_minutes: Wall-clock budget; training stops after the epoch that exceeds it.
        output_dir: Where checkpoints and metrics are written.
        resume: Continue from ``output_dir/last.pt`` when it exists.
    """

    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    optimizer: Literal["adamw", "sgd"]
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    warmup_epochs: float = Field(ge=0.0)
    min_lr: float = Field(ge=0.0)
    label_smoothing: float = Field(ge=0.0, lt=1.0)
    sa_lambda: float = Field(ge=0.0)
    ema: bool
    ema_decay: float = Field(gt=0.0, lt=1.0)
    precision: Precision
    grad_clip: float | None = Field(gt=0.0)
    early_stopping_patience: int = Field(ge=0)
    class_balance: Literal["none", "loss", "sampler"]
    seed: int = Field(ge=0)
    device: str
    num_threads: int = Field(ge=0)
    max_minutes: float | None = Field(gt=0.0)
    output_dir: Path
    resume: bool

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit()):
            return device
        raise ValueError(f"must be one of 'auto', 'cpu', 'cuda', 'cuda:N', got {device!r}")

    @model_validator(mode="after")
    def _min_below_peak(self) -> TrainConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        return self


class EvaluateConfig(_Section):
    """How a trained model is scored.

    Args:
        split: Split of ``data.root`` to score.
        tta: Average predictions over ten crops (TenCrop: corners, centre and their mirrors).
        batch_size: Images per forward pass.
        output_dir: Where the report, confusion matrix and plots are written.
    """

    split: str
    tta: bool
    batch_size: int = Field(ge=1)
    output_dir: Path


class RegisterConfig(_Section):
    """MLflow tracking, the model registry and champion/challenger promotion.

    Args:
        tracking_uri: MLflow tracking and registry server; null for the local SQLite store in
            ``store_dir``. The ``MLFLOW_TRACKING_URI`` environment variable overrides both.
        store_dir: Local store: ``mlflow.db`` (runs and registry) and ``artifacts/``.
        experiment: Experiment the training runs are logged to.
        model_name: Registered model name.
        metric: Test-split metric a challenger must beat to become champion.
        force: Make every new version champion, better or not.
        output_dir: Where ``registration.json`` (run, version, aliases, decision) is written.
    """

    tracking_uri: str | None
    store_dir: Path
    experiment: str = Field(min_length=1)
    model_name: str = Field(min_length=1)
    metric: Literal["accuracy", "macro_f1"]
    force: bool
    output_dir: Path

    def effective_tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI``, else ``tracking_uri``, else the SQLite file in ``store_dir``.

        Here rather than in :mod:`emonext.registry` so that callers needing only the URI (cache
        keys of orchestration tasks) do not import MLflow and torch.
        """
        return (
            os.environ.get("MLFLOW_TRACKING_URI")
            or self.tracking_uri
            or f"sqlite:///{Path(self.store_dir).resolve() / 'mlflow.db'}"
        )


class InferConfig(_Section):
    """Image, video and webcam emotion extraction (``emonext predict``, ``emonext ui``).

    Args:
        model: Model URI (``models:/emonext@champion``, ``builtin``, a checkpoint...); null for
            the registry champion when one exists, else the built-in model.
        backend: ``torch`` or ``onnx`` (onnxruntime) for the classifier.
        device: ``cpu`` or ``cuda`` for the torch backend.
        batch_size: Faces per classifier call.
        face: Face detector used at inference (tuned for speed: a smaller detection side).
        detect_every: Video and webcam: run the detector on every k-th frame, track in between.
        track_iou: A detection continues a track when their boxes overlap at least this much.
        track_max_missing: Frames a track survives without a matching detection.
        smoothing: Weight of the past in the per-face exponential moving average of probabilities
            over time (0 = no smoothing).
        output_dir: Where annotated images, videos, JSON, CSV and plots are written.
        max_upload_mb: Largest upload the GUI accepts.
        host: GUI bind address (127.0.0.1: this machine only).
        port: GUI port.
    """

    model: str | None
    backend: Literal["torch", "onnx"]
    device: str
    batch_size: int = Field(ge=1)
    face: FaceDetectionConfig
    detect_every: int = Field(ge=1)
    track_iou: float = Field(gt=0.0, le=1.0)
    track_max_missing: int = Field(ge=0)
    smoothing: float = Field(ge=0.0, lt=1.0)
    output_dir: Path
    max_upload_mb: float = Field(gt=0.0)
    host: str
    port: int = Field(ge=0, le=65535)


class OrchestrationConfig(_Section):
    """Prefect flows: schedule, retries and result caching.

    Args:
        deployment: Name of the served ``pipeline`` deployment.
        cron: Cron schedule of the served deployment (5 fields).
        timezone: IANA time zone the cron schedule is read in.
        scrape_retries: Retries of the scrape task (the web fails transiently).
        retry_backoff: Base delay in seconds of the exponential back-off between retries.
        cache_days: How long a step's cached result stays valid (its key is the content hash of
            its inputs plus its params section).
        task_runner: Where the clean step's shards run, each as a Prefect task: ``process`` or
            ``thread`` (a local pool of ``clean.workers``), or ``ray`` (Prefect's
            ``RayTaskRunner`` on the engine the ``ray`` section names; on a cluster of several
            machines ``clean.output_dir`` and the clean sources must be on storage every node
            mounts at the same path). Outputs are identical.
    """

    deployment: str = Field(min_length=1)
    cron: str
    timezone: str
    scrape_retries: int = Field(ge=0)
    retry_backoff: float = Field(ge=0.0)
    cache_days: float = Field(gt=0.0)
    task_runner: Literal["process", "thread", "ray"]

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, cron: str) -> str:
        if len(cron.split()) != 5:
            raise ValueError(f"must be a 5-field cron expression like '0 3 * * 1', got {cron!r}")
        return cron


class RayConfig(_Section):
    """The Ray engine behind ``emonext tune`` and ``orchestration.task_runner: ray``.

    Args:
        address: Null starts a local Ray in the calling process (unless the ``RAY_ADDRESS``
            environment variable names a cluster: Ray's own rule); ``auto`` or
            ``ray://head:10001`` joins a running cluster (then ``num_cpus`` and ``temp_dir`` are
            the cluster's business). With ``orchestration.task_runner: ray``, ``clean.output_dir``
            and the clean sources must then be on storage every node shares.
        num_cpus: CPUs a local Ray may use; 0 = every core.
        temp_dir: A local Ray's session folder; null = Ray's default (``/tmp/ray``).
    """

    address: str | None
    num_cpus: int = Field(ge=0)
    temp_dir: Path | None


class SearchDimension(_Section):
    """One hyper-parameter's search distribution.

    Args:
        distribution: ``loguniform`` or ``uniform`` between ``low`` and ``high``, or ``choice``
            among ``values``.
        low: Lower bound (continuous distributions).
        high: Upper bound (continuous distributions).
        values: The candidates (``choice``).
    """

    distribution: Literal["loguniform", "uniform", "choice"]
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _bounds_or_values(self) -> SearchDimension:
        if self.distribution == "choice":
            if not self.values:
                raise ValueError("distribution 'choice' needs a non-empty 'values' list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"distribution {self.distribution!r} needs 'low' < 'high'")
        elif self.distribution == "loguniform" and self.low <= 0:
            raise ValueError("distribution 'loguniform' needs 'low' > 0")
        return self


class TuneConfig(_Section):
    """Hyper-parameter search with Ray Tune (random search, ASHA early stopping).

    Every trial trains with the project's params plus the trial's values for the keys in
    ``search_space``, for at most ``train.epochs`` epochs, reporting after each epoch.

    Args:
        name: Experiment name (the folder under ``storage_path`` and the MLflow parent run).
        num_samples: Trials to run.
        max_concurrent: Trials at once; 0 = as many as the CPUs allow.
        cpus_per_trial: CPUs reserved per trial, also its torch thread count.
        gpus_per_trial: GPUs reserved per trial (fractions share a GPU).
        metric: Validation metric every trial reports and the search maximises.
        grace_period: ASHA: epochs every trial runs before it may be stopped.
        reduction_factor: ASHA: each rung keeps the best ``1 / reduction_factor`` of the trials.
        seed: Seed of the search, so the same params draw the same trial configs.
        storage_path: Where Ray Tune keeps trial results and checkpoints; null =
            ``output_dir/ray``. Otherwise an absolute path (on a cluster, one every node shares,
            e.g. NFS) or a URI (``s3://bucket/tune``): a relative one would be read against the
            working directory, since a URI is no file path.
        output_dir: Where ``best_params.yaml``, ``best.json`` and ``trials.csv`` are written.
        search_space: ``section -> key -> dimension`` over the params keys to tune.
    """

    name: str = Field(min_length=1)
    num_samples: int = Field(ge=1)
    max_concurrent: int = Field(ge=0)
    cpus_per_trial: float = Field(gt=0.0)
    gpus_per_trial: float = Field(ge=0.0)
    metric: Literal["val_accuracy", "val_macro_f1"]
    grace_period: int = Field(ge=1)
    reduction_factor: float = Field(gt=1.0)
    seed: int
    storage_path: str | None
    output_dir: Path
    search_space: dict[str, dict[str, SearchDimension]] = Field(min_length=1)


# The ``register`` section shadows ABCMeta.register (pydantic models are ABCs); instances read the
# field, and nothing registers virtual subclasses of Params, so the warning is noise.
warnings.filterwarnings("ignore", message='Field name "register" in "Params"', category=UserWarning)


class Params(_Section):
    """All sections of ``params.yaml``."""

    scrape: ScrapeConfig
    clean: CleanConfig
    split: SplitConfig
    data: DataConfig
    augment: AugmentConfig
    model: ModelConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    register: RegisterConfig
    orchestration: OrchestrationConfig
    infer: InferConfig
    ray: RayConfig
    tune: TuneConfig

    @model_validator(mode="after")
    def _search_space_names_params(self) -> Params:
        for section, keys in self.tune.search_space.items():
            target = getattr(self, section) if section in type(self).model_fields else None
            for key in keys:
                if not isinstance(target, _Section) or key not in type(target).model_fields:
                    raise ValueError(f"tune.search_space: {section}.{key} is not a params key")
        return self


def load_params(path: Path | str = DEFAULT_PARAMS_FILE, overrides: Iterable[str] = ()) -> Params:
    """Read, override and validate a params file.

    Relative paths inside the file are resolved against the file's folder, so the result does not
    depend on the working directory.

    Args:
        path: The YAML file.
        overrides: ``section.key=value`` strings; values are parsed as YAML scalars or lists.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: The file is missing or unreadable, or a key or value is invalid.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides)
    params = params_from_dict(raw, source=str(path))
    return resolve_paths(params, path.resolve().parent)


def params_from_dict(raw: Mapping[str, Any], source: str = "params") -> Params:
    """Validate a nested mapping (e.g. the config stored in a checkpoint) into :class:`Params`."""
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def section_from_dict(section: type[SectionT], raw: Any, name: str, source: str = "params") -> SectionT:
    """Validate one section (e.g. the ``model`` stored in a checkpoint) on its own.

    Raises:
        ConfigError: Naming ``name.key`` for every bad key.
    """
    try:
        return section.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source, root=section, prefix=(name,))) from None


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``section.key=value`` overrides applied.

    Raises:
        ConfigError: An override is malformed or names a key that does not exist.
    """
    result: dict[str, Any] = copy.deepcopy(dict(raw))
    for override in overrides:
        key, sep, text = override.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"override {override!r}: expected section.key=value, e.g. train.lr=3e-4")
        node: Any = result
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(_unknown_key(".".join(parts[: depth + 1]), node))
            node = node[part]
        if not isinstance(node, dict) or parts[-1] not in node:
            raise ConfigError(_unknown_key(key.strip(), node))
        try:
            node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as error:
            raise ConfigError(f"override {override!r}: value is not valid YAML: {error}") from None
    return result


def resolve_paths(params: _Section, base_dir: Path) -> Any:
    """Return ``params`` with every relative ``Path`` field (at any depth) made absolute against
    ``base_dir``."""
    updates: dict[str, Any] = {}
    for name in type(params).model_fields:
        value = getattr(params, name)
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = (base_dir / value).resolve()
        elif isinstance(value, _Section):
            updates[name] = resolve_paths(value, base_dir)
        elif isinstance(value, tuple) and value and all(isinstance(item, _Section) for item in value):
            updates[name] = tuple(resolve_paths(item, base_dir) for item in value)
    return params.model_copy(update=updates) if updates else params


def flatten(params: Params) -> dict[str, str]:
    """Flatten to ``section.key -> str`` (for experiment trackers and reports)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            flat[prefix] = str(value)

    walk("", params.model_dump(mode="json"))
    return flat


def _unknown_key(key: str, node: Any) -> str:
    allowed = ", ".join(sorted(node)) if isinstance(node, dict) else "(none: not a section)"
    return f"override {key}: unknown key; allowed keys here: {allowed}"


def _allowed_keys(loc: Sequence[str | int], root: type[BaseModel]) -> str:
    model = root
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    return ", ".join(model.model_fields)


def _describe(
    error: ValidationError, source: str, root: type[BaseModel] = Params, prefix: tuple[str, ...] = ()
) -> str:
    lines = [f"{source}: invalid configuration ({error.error_count()} problem(s))"]
    for item in error.errors():
        key = ".".join(str(part) for part in (*prefix, *item["loc"])) or "(root)"
        kind = item["type"]
        if kind == "extra_forbidden":
            lines.append(f"  {key}: unknown key; allowed keys: {_allowed_keys(item['loc'], root)}")
        elif kind == "missing":
            lines.append(f"  {key}: required key is missing")
        elif item["loc"]:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
        else:  # a check across sections: its message names the keys; the input is the whole file
            lines.append(f"  {item['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


__all__ = [
    "FER2013_CLASSES",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "EvaluateConfig",
    "InferConfig",
    "ModelConfig",
    "OrchestrationConfig",
    "Params",
    "RayConfig",
    "RegisterConfig",
    "SearchDimension",
    "TrainConfig",
    "TuneConfig",
    "apply_overrides",
    "flatten",
    "load_params",
    "params_from_dict",
    "resolve_paths",
    "section_from_dict",
]
