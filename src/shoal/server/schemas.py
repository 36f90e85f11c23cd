"""Request and response bodies of the JSON API, one class per direction.

The option blocks (``DataOptions``, ``TrainOptions``) are generated from the library's
config dataclasses by :mod:`shoal.server.forms`, so ``/docs`` lists every option with its
default and explanation.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shoal.server.forms import data_options_model, train_options_model

DataOptions = data_options_model()
TrainOptions = train_options_model()

Status = Literal["queued", "running", "done", "failed", "interrupted", "aborted"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- requests -------------------------------------------------------------------------------------
class DatasetCreate(_Strict):
    """Build a dataset from a folder on the server (inside the allowed roots) or the built-in sample."""

    name: str = Field(description="name in the store: letters, digits, '.', '_' or '-'")
    folder: str | None = Field(None, description="server-side folder with one sub-folder of images per class")
    sample: bool = Field(False, description="build the built-in digits sample instead of a folder")
    options: DataOptions = Field(default_factory=DataOptions)  # type: ignore[valid-type]


class ModelCreate(_Strict):
    """Train a model (or several: lists of lr / batch_size train one model per combination)."""

    dataset: str = Field(description="a stored dataset")
    name: str | None = Field(None, description="model name; default <dataset>-<network> (+ -lrX-bsY in a sweep)")
    network: str = Field("auto", description="a network name (GET /api/networks); auto: lenet, or "
                                             "efficientnet_lite0 when pretrained")
    network_file: str | None = Field(None, description="an uploaded network file (POST /api/networks/files)")
    pretrained: bool = Field(False, description="start from the network's own pretrained weights (fine-tuning)")
    weights: str | None = Field(None, description="start from uploaded pretrained weights (POST /api/pretrained)")
    previous: str | None = Field(None, description="start from the weights of this trained model")
    previous_epoch: str = Field("best", description="with previous: 'best' or a snapshot's epoch")
    options: TrainOptions = Field(default_factory=TrainOptions)  # type: ignore[valid-type]
    processes: int = Field(1, ge=1, le=1024, description="train data-parallel in this many processes "
                           "(torch.distributed): one per GPU on CUDA, gloo processes on a CPU; batch_size stays "
                           "the global batch")


class ModelResume(_Strict):
    epochs: int | None = Field(None, description="a new total number of epochs (to train longer)")
    processes: int | None = Field(None, ge=1, le=1024, description="data-parallel processes; default: as many "
                                  "as the run last used")


# -- responses ------------------------------------------------------------------------------------
class JobOut(BaseModel):
    id: int
    kind: str
    target: str
    lane: str
    status: Status
    progress: dict[str, Any]
    error: str | None
    pid: int | None
    created: float
    started: float | None
    finished: float | None
    queue_position: int | None = Field(None, description="jobs ahead of it in its lane while it waits")
    eta_s: float | None = Field(None, description="estimated seconds left while it runs (from its progress so far)")


class JobAccepted(BaseModel):
    """A job was queued; follow it at ``url``."""

    job: JobOut
    name: str
    url: str


class ExportOut(BaseModel):
    """A download's export: queued or running (``job``), or its file ready (``job`` null)."""

    job: JobOut | None = Field(description="the export job to follow (GET /api/jobs/{id}); null when the file is ready")
    name: str
    epoch: str
    url: str = Field(description="where the file downloads once the job is done")


class ModelsAccepted(BaseModel):
    """One queued training per model (several for a sweep)."""

    models: list[JobAccepted]


class DatasetSummary(BaseModel):
    name: str
    status: Status
    created: float
    classes: int | None = None
    size: list[int] | None = None
    channels: int | None = None
    counts: dict[str, int] = {}
    skipped: int = 0
    error: str | None = None
    progress: dict[str, Any] = {}


class DatasetOut(BaseModel):
    """A stored dataset (``Dataset.to_dict()``), or the job still building it."""

    model_config = ConfigDict(extra="allow")
    name: str
    status: Status
    error: str | None = None
    job: JobOut | None = None


class ImagePage(BaseModel):
    split: str
    label: str | None
    page: int
    pages: int
    total: int
    items: list[dict[str, Any]]


class DatasetImageOut(BaseModel):
    """One stored image of a dataset and where it came from."""

    split: str
    index: int
    label: str
    source: str = Field(description="the path of the file the image was made from")
    stored_size: list[int] = Field(description="[width, height] as stored in the dataset")
    original: bool = Field(description="whether the source can be shown at full size "
                                       "(GET .../images/{split}/{index}/source.png)")
    original_reason: str | None = Field(description="why it cannot: gone, or outside the folders this server may read")


class ModelSummary(BaseModel):
    name: str
    status: Status
    created: float
    updated: float
    dataset: str | None
    network: str | None
    pretrained: Any = None
    val_accuracy: float | None
    best_epoch: int | None
    progress: dict[str, Any] = {}
    queue_position: int | None = None


class FitPoint(BaseModel):
    C: float = Field(description="the strength tried (inverse L2 penalty: larger fits the training images closer)")
    log_loss: float = Field(description="held-out log-loss of the cross-validation folds at this C")
    accuracy: float = Field(description="held-out accuracy of the cross-validation folds at this C")


class FitOut(BaseModel):
    """What fitting the head did (a frozen backbone's head fitted by logistic regression)."""

    method: str
    strength: float = Field(description="the chosen C: the lowest held-out log-loss of the curve")
    folds: int = Field(description="cross-validation folds on the training images (never the validation split)")
    curve: list[FitPoint]
    elapsed_s: float | None = None


class ModelOut(BaseModel):
    """A model: status, configuration, metric history per epoch, the fit of a fitted head, snapshots, bundle and job."""

    model_config = ConfigDict(extra="allow")
    name: str
    status: Status
    config: dict[str, Any]
    history: list[dict[str, Any]]
    snapshots: list[int]
    bundle: str | None
    error: str | None
    job: JobOut | None
    can_abort: bool
    can_resume: bool
    epochs: int | None
    fit: FitOut | None = Field(None, description="for a fitted head (config head 'fit'), what the fit did")


class EventsOut(BaseModel):
    """Progress events of the run (``iteration`` and ``epoch`` carry the metrics) from ``after`` on."""

    events: list[dict[str, Any]]
    next: int = Field(description="pass as 'after' to get only newer events")
    status: Status | None = None


class Prediction(BaseModel):
    label: str
    probability: float


class ClassifyOut(BaseModel):
    """The same object ``shoal classify --json`` prints for the image."""

    source: str
    predictions: list[Prediction]
    unfamiliar: bool | None = Field(description="the image looks like none of the training images: its "
                                                "probabilities say little; null when the model cannot tell")
    unfamiliar_score: float | None = Field(description="cosine distance to the k-th nearest training image; above "
                                                       "the model's threshold the image is unfamiliar")
    unfamiliar_reason: str | None = Field(None, description="only when unfamiliar is null: why the model cannot tell")


class ClassifyManyOut(BaseModel):
    model: str
    summary: dict[str, Any]
    per_class: list[dict[str, Any]]
    results: list[dict[str, Any]]
    list_file: str | None = Field(None, description="the list file read (classify-list only)")


class LayerOut(BaseModel):
    name: str = Field(description="the module's name in the network ('net.conv1')")
    kind: str = Field(description="its class name ('Conv2d')")
    shape: list[int] = Field(description="the shape of its output for the image")
    mean: float
    std: float
    histogram: list[int] = Field(description="counts of its output values in equal bins from edges[0] to edges[-1]")
    edges: list[float]
    parameters: int = Field(description="the layer's own parameters")
    image: str | None = Field(description="its first output channels as a PNG data: URI; null when not a spatial map")


class LayersOut(BaseModel):
    """What ``shoal classify --layers`` writes, as JSON."""

    source: str
    architecture: str
    total_parameters: int
    first_conv: str | None = Field(description="the name of the first convolution; null when there is none")
    first_conv_weights: str | None = Field(description="its filters as a PNG data: URI")
    predictions: list[Prediction]
    layers: list[LayerOut]


class ClassifyListIn(BaseModel):
    """Classify the images a server-side list file names (DIGITS' "classify many" from a list)."""

    list_file: str = Field(description="a text file on the server, inside the allowed folders: one image path per line, "
                                       "optionally followed by its class (name or index); relative paths start from "
                                       "the list file's folder")
    top: int = Field(5, ge=1, le=100, description="how many classes to return per image, most probable first")


class JudgedImage(BaseModel):
    source: str
    truth: str
    predicted: str
    probability: float
    true_probability: float
    unfamiliar: bool | None = Field(None, description="like none of the training images; null when the model cannot tell")
    unfamiliar_score: float | None = None
    image: str | None = Field(None, description="a small PNG thumbnail as a data: URI")


class ReliabilityBinOut(BaseModel):
    low: float = Field(description="the bin holds top-1 confidences above this...")
    high: float = Field(description="...up to and including this")
    count: int
    confidence: float | None = Field(description="mean top-1 probability of its images; null when empty")
    accuracy: float | None = Field(description="share of its images classified right; null when empty")


class CalibrationOut(BaseModel):
    ece: float = Field(description="expected calibration error: |accuracy - confidence| per bin, weighted by count")
    bins: list[ReliabilityBinOut] = Field(description="the reliability diagram: 10 equal-width confidence bins")


class EvaluationOut(BaseModel):
    """How the model does on a split of its dataset (shoal.evaluate)."""

    model: str
    dataset: str
    split: str
    on: str
    images: int
    accuracy: float
    top5_accuracy: float | None
    log_loss: float = Field(description="mean cross-entropy of the predicted probabilities (natural log)")
    calibration: CalibrationOut
    labels: list[str]
    confusion_matrix: list[list[int]] = Field(description="rows: true class, columns: predicted, in labels order")
    per_class: list[dict[str, Any]] = Field(description="label, precision, recall, f1, support, top5")
    confidently_wrong: list[JudgedImage]
    most_confident: dict[str, list[JudgedImage]] = Field(
        description="per class, the images predicted as it, surest first; a truth other than the class means wrong")
    unfamiliar_count: int | None = Field(description="images that look like none of the training images; null when "
                                                     "the model cannot tell")
    unfamiliar_rate: float | None = Field(description="unfamiliar_count / images")
    unfamiliar: list[JudgedImage] = Field(description="the unfamiliar images, most unfamiliar first")
    unfamiliar_reason: str | None = Field(description="why the model cannot tell, else null")
    skipped: list[dict[str, str]]


class NetworkOut(BaseModel):
    name: str
    description: str
    family: str
    input_size: list[int]
    pretrained: str | None
    pretrained_offline: bool


class NetworksOut(BaseModel):
    networks: list[NetworkOut]
    files: list[dict[str, Any]] = Field(description="uploaded network definitions (.py)")
    pretrained: list[dict[str, Any]] = Field(description="uploaded pretrained weights")


class NetworkFileOut(BaseModel):
    file: str
    network: str


class PretrainedOut(BaseModel):
    name: str
    architecture: str
    file: str
    tensors: int
    parameters: int
    labels: list[str]
    path: str
    created: float


class SchedulePoint(BaseModel):
    epoch: float
    lr: float


class ScheduleOut(BaseModel):
    policy: str
    epochs: int | None
    lr: float | None = Field(description="the head's base rate")
    backbone_scale: float | None = Field(description="the share of lr the backbone learns at (0.1 end to end "
                                                      "from pretrained weights)")
    fitted: bool = Field(description="a fitted head: no learning rate, no points")
    points: list[SchedulePoint]


class FoldersOut(BaseModel):
    path: str | None
    parent: str | None
    roots: list[str]
    folders: list[str]
