"""``image-cnn``: a small convolutional network for image classification, trained with
light augmentation, early stopping on validation in the spec's metric, seeded and
deterministic on CPU (CUDA when present).

Architecture: ``blocks`` stages of two 3x3 convolutions (batch norm, ReLU), each stage
doubling the width and halving the resolution (2x2 max pool) while it is at least 4 pixels,
then global average pooling, a linear layer to the ``embedding`` (ReLU: the penultimate
layer, what the payload log keeps) and, after dropout, a linear head over the classes.
Inputs are float32 ``[N, C, H, W]`` in [0, 1], standardised per channel with the training
split's mean and std. Augmentation (training split only, torch ops, no torchvision): a
random rotation within ``max_rotation`` degrees and a shift within ``max_shift`` of the
side, one affine warp per image. Files: weights as safetensors, architecture and
preprocessing as JSON.

Train one model by hand::

    from driftloop.families import get_family
    family = get_family("image-cnn")
    result = family.train(splits, spec, family.default_params())
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from driftloop.datakinds.image import IMAGE
from driftloop.errors import DataError
from driftloop.families.base import FittedModel, ModelFamily, Prediction, TrainResult
from driftloop.formats import ImageSchema, ImageTensor
from driftloop.images import STATISTICS, image_statistics, to_float
from driftloop.metrics import better, scores, tune_threshold

if TYPE_CHECKING:
    import pandas as pd

    from driftloop.data import Splits
    from driftloop.drift import DriftResult, Source
    from driftloop.preprocess import Columns
    from driftloop.spec import DatasetSpec

WEIGHTS, ARCH, PREPROCESSOR = "model.safetensors", "architecture.json", "preprocessor.json"
EMBEDDING_PREFIX = "emb_"
PREDICT_BATCH = 1024  # images per forward pass at prediction: bounded memory for any size


def device() -> torch.device:
    """CUDA when present; training is deterministic on CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Architecture:
    channels: int
    height: int
    width: int
    filters: int  # the first stage's width; each stage doubles it
    blocks: int
    embedding: int
    dropout: float
    n_classes: int


@dataclass
class ImagePreprocessor:
    """What turns stored or served pixels into the network's input, and its outputs into
    labels: per-channel standardisation, the classes, the binary threshold."""

    task: str
    target: str
    classes: list[str]
    mean: list[float]
    std: list[float]
    positive_label: str | None = None
    threshold: float = 0.5  # binary: on P(positive), tuned on validation
    resize: str = "stretch"  # how served encoded images are brought to size (the spec's)
    upscale: bool = False
    max_pixels: int = 4096 * 4096
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> ImagePreprocessor:
        return cls(**json.loads(text))


class ImageNet(nn.Module):
    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, width, side = arch.channels, arch.filters, min(arch.height, arch.width)
        for _ in range(arch.blocks):
            for c in (c_in, width):
                layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
                layers.append(nn.ReLU())
            if side >= 4:  # pool while there is resolution to spare
                layers.append(nn.MaxPool2d(2))
                side //= 2
            c_in, width = width, width * 2
        self.features = nn.Sequential(*layers)
        self.project = nn.Linear(c_in, arch.embedding)
        self.dropout = nn.Dropout(arch.dropout)
        self.head = nn.Linear(arch.embedding, arch.n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate layer: what the payload log keeps and drift watches."""
        return F.relu(self.project(self.features(x).mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


def augment(x: torch.Tensor, gen: torch.Generator, rotation: float, shift: float) -> torch.Tensor:
    """A random rotation within +-``rotation`` degrees and shift within +-``shift`` of the
    side per image: one affine warp (bilinear, zero padding), seeded by ``gen``."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(rotation)
    move = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 * shift)  # grid units span 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, move[:, 0]], 1), torch.stack([sin, cos, move[:, 1]], 1)], 1
    ).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def pixels(inputs: Columns) -> np.ndarray:
    """Rows of images -> float32 ``[N, C, H, W]`` in [0, 1]: a frame's ``image`` column of
    PNG bytes (training, evaluation, the drift reference), or a mapping whose ``image`` is
    already that array (the predictor's decoded request) or a list of PNG bytes."""
    value = inputs[IMAGE]
    if isinstance(value, np.ndarray) and value.ndim == 4:
        return value.astype(np.float32, copy=False)
    return to_float(list(value))


class ImageCNNModel(FittedModel):
    family = "image-cnn"

    def __init__(self, pre: ImagePreprocessor, net: ImageNet, arch: Architecture) -> None:
        self.pre, self.net, self.arch = pre, net.eval(), arch
        self._mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self._std = torch.tensor(pre.std, dtype=torch.float32).view(1, -1, 1, 1)

    @property
    def inputs(self) -> list[str]:
        return [IMAGE]

    @property
    def embedding_columns(self) -> list[str]:
        return [f"{EMBEDDING_PREFIX}{i}" for i in range(self.arch.embedding)]

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(embedding [N, k], class probabilities [N, classes]) in eval mode, batched."""
        shape = (self.arch.channels, self.arch.height, self.arch.width)
        if x.shape[1:] != shape:
            raise DataError(f"images of shape {list(x.shape[1:])}, the model reads {list(shape)}")
        embs, probs = [], []
        dev = next(self.net.parameters()).device
        with torch.inference_mode():
            for i in range(0, len(x), PREDICT_BATCH):
                t = torch.from_numpy(x[i : i + PREDICT_BATCH]).to(dev) - self._mean.to(dev)
                e = self.net.embed(t / self._std.to(dev))
                embs.append(e.cpu().numpy())
                probs.append(torch.softmax(self.net.head(e), dim=1).double().cpu().numpy())
        if not embs:
            return np.empty((0, self.arch.embedding), np.float32), np.empty(
                (0, len(self.pre.classes))
            )
        return np.concatenate(embs), np.concatenate(probs)

    def _labelled(self, proba: np.ndarray) -> Prediction:
        classes = np.asarray(self.pre.classes, dtype=object)
        if self.pre.task == "binary":
            pos = self.pre.classes.index(str(self.pre.positive_label))
            p = proba[:, pos]
            label = np.where(p >= self.pre.threshold, classes[pos], classes[1 - pos])
            return {"probability": p, "label": label.astype(object)}
        k = proba.argmax(axis=1)
        return {
            "probabilities": proba,
            "probability": proba[np.arange(len(k)), k],
            "label": classes[k],
        }

    def predict(self, inputs: Columns) -> Prediction:
        return self._labelled(self._forward(pixels(inputs))[1])

    def predict_logged(self, inputs: Columns) -> tuple[Prediction, dict[str, np.ndarray]]:
        """The prediction and the log columns, from one forward pass: the embedding
        (``emb_0`` ..) and the image statistics (``driftloop.images``), not the pixels."""
        x = pixels(inputs)
        emb, proba = self._forward(x)
        logged = {c: emb[:, j].astype(np.float64) for j, c in enumerate(self.embedding_columns)}
        return self._labelled(proba), logged | image_statistics(x)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(directory / WEIGHTS))
        (directory / PREPROCESSOR).write_text(self.pre.to_json())
        (directory / ARCH).write_text(json.dumps(asdict(self.arch), indent=2))

    def input_schema(self, spec: DatasetSpec) -> ImageSchema:
        a = self.arch
        return ImageSchema(
            kind="image",
            model=spec.name,
            task="binary" if self.pre.task == "binary" else "multiclass",
            target=spec.target,
            input=ImageTensor(
                shape=[a.channels, a.height, a.width],
                resize="crop" if self.pre.resize == "crop" else "stretch",
                upscale=self.pre.upscale,
                max_pixels=self.pre.max_pixels,
            ),
            classes=self.pre.classes,
            positive_label=self.pre.positive_label,
            threshold=self.pre.threshold,
            top_k=min(5, len(self.pre.classes)),
            embedding=self.embedding_columns,
            statistics=list(STATISTICS),
        )


class ImageCNN(ModelFamily):
    name = "image-cnn"
    kinds: ClassVar[frozenset[str]] = frozenset({"image"})
    tasks: ClassVar[frozenset[str]] = frozenset({"binary", "multiclass"})
    files = (WEIGHTS, ARCH, PREPROCESSOR)
    search_space: ClassVar[dict[str, list[Any]]] = {
        "filters": [16, 32, 48],
        "embedding": [32, 64],
        "dropout": [0.1, 0.2, 0.3],
        "lr": [1e-3, 2e-3, 3e-3],
        "max_rotation": [5.0, 10.0, 15.0],
    }

    def default_params(self) -> dict[str, Any]:
        return {
            "filters": 32,
            "blocks": 2,  # 8x8 digits: 8 -> 4 -> 2 pixels; add stages for larger images
            "embedding": 64,
            "dropout": 0.2,
            "lr": 3e-3,  # the one-cycle schedule's peak
            "weight_decay": 1e-4,
            "batch_size": 64,
            "max_epochs": 60,
            "patience": 15,  # epochs without validation improvement before stopping
            "max_rotation": 10.0,  # degrees; digits tilt by about this much between writers
            "max_shift": 0.125,  # of the side: one pixel of an 8x8 digit
            "seed": 0,
        }

    def load(self, directory: Path) -> ImageCNNModel:
        arch = Architecture(**json.loads((directory / ARCH).read_text()))
        net = ImageNet(arch)
        net.load_state_dict(load_file(str(directory / WEIGHTS)))
        pre = ImagePreprocessor.from_json((directory / PREPROCESSOR).read_text())
        return ImageCNNModel(pre, net, arch)

    def train(self, splits: Splits, spec: DatasetSpec, params: dict[str, Any]) -> TrainResult:
        self.check_task(spec)
        hp = self.parse_params(params)
        model, best_epoch = self._fit(splits.train, spec, hp, splits.validation)
        x_va = pixels(splits.validation)
        val = scores(model.predict({IMAGE: x_va}), splits.validation, spec)
        return TrainResult(model, val, best_epoch, hp)

    def refit(
        self,
        selected: FittedModel,
        data: pd.DataFrame,
        spec: DatasetSpec,
        params: dict[str, Any],
        epochs: int | None,
    ) -> ImageCNNModel:
        hp = self.parse_params(params)
        model, _ = self._fit(data, spec, hp, epochs=max(1, epochs or hp["max_epochs"]))
        if spec.task == "binary":  # tuned on validation during selection
            model.pre.threshold = cast(ImageCNNModel, selected).pre.threshold
        return model

    def _fit(
        self,
        train: pd.DataFrame,
        spec: DatasetSpec,
        hp: dict[str, Any],
        validation: pd.DataFrame | None = None,
        epochs: int | None = None,
    ) -> tuple[ImageCNNModel, int]:
        """With ``validation``: keep the best epoch, stop after ``patience`` epochs without
        improvement. Without it (a refit): exactly ``epochs`` epochs, same schedule."""
        # 1. Determinism: same data + params + seed -> same weights, on CPU. (CUDA has no
        #    deterministic backward for some pooling ops: warn there instead of failing.)
        torch.manual_seed(hp["seed"])
        dev = device()
        torch.use_deterministic_algorithms(True, warn_only=dev.type == "cuda")
        gen = torch.Generator().manual_seed(hp["seed"])

        # 2. Pixels, standardised with the training rows' per-channel statistics.
        x_tr = pixels(train)
        classes = sorted(str(v) for v in train[spec.target].dropna().unique())
        if len(classes) < 2:
            raise DataError(f"the training split has {len(classes)} class(es); need two or more")
        index = {c: i for i, c in enumerate(classes)}
        y_tr = torch.tensor([index[str(v)] for v in train[spec.target]], device=dev)
        opts = spec.image_options
        pre = ImagePreprocessor(
            task=spec.task,
            target=spec.target,
            classes=classes,
            mean=x_tr.mean(axis=(0, 2, 3)).tolist(),
            std=np.maximum(x_tr.std(axis=(0, 2, 3)), 1e-3).tolist(),
            positive_label=spec.positive_label,
            resize=opts.resize,
            upscale=opts.upscale,
            max_pixels=opts.max_pixels,
        )
        n, c, h, w = x_tr.shape
        arch = Architecture(
            c, h, w, hp["filters"], hp["blocks"], hp["embedding"], hp["dropout"], len(classes)
        )
        net = ImageNet(arch).to(dev)
        mean = torch.tensor(pre.mean, device=dev).view(1, -1, 1, 1)
        std = torch.tensor(pre.std, device=dev).view(1, -1, 1, 1)
        x_t = torch.from_numpy(x_tr).to(dev)
        steps = hp["max_epochs"] * math.ceil(n / hp["batch_size"])
        opt = torch.optim.AdamW(net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], total_steps=steps)

        # 3. Epochs of augmented mini-batches; after each, score validation in the spec's
        #    metric (ties broken by validation loss: small validation sets saturate) and keep
        #    the best weights; stop after `patience` epochs without improvement.
        if validation is not None:
            x_va = pixels(validation)
            y_va = [index.get(str(v), -1) for v in validation[spec.target]]
        best: tuple[float, float] | None = None
        best_state, best_epoch = None, 0
        for epoch in range(1, (epochs or hp["max_epochs"]) + 1):
            net.train()
            for idx in torch.randperm(n, generator=gen).split(hp["batch_size"]):
                batch = augment(x_t[idx.to(dev)], gen, hp["max_rotation"], hp["max_shift"])
                loss = F.cross_entropy(net((batch - mean) / std), y_tr[idx.to(dev)])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            if validation is None:
                continue
            model = ImageCNNModel(pre, net, arch)  # eval mode: a snapshot of this epoch
            score, val_loss = self._validation(model, x_va, y_va, validation, spec)
            if best is None or _improves(spec.metric, (score, val_loss), best):
                best, best_state, best_epoch = (
                    (score, val_loss),
                    copy.deepcopy(net.state_dict()),
                    epoch,
                )
            elif epoch - best_epoch >= hp["patience"]:
                break
        if validation is None:
            return ImageCNNModel(pre, net, arch), epochs or hp["max_epochs"]
        assert best_state is not None
        net.load_state_dict(best_state)
        model = ImageCNNModel(pre, net, arch)
        if spec.task == "binary":
            self._tune_threshold(model, x_va, validation, spec)
        return model, best_epoch

    def _validation(
        self, model: ImageCNNModel, x: np.ndarray, y: list[int], df: pd.DataFrame, spec: DatasetSpec
    ) -> tuple[float, float]:
        if spec.task == "binary":
            self._tune_threshold(model, x, df, spec)
        proba = model._forward(x)[1]
        score = scores(model._labelled(proba), df, spec)[spec.metric]
        seen = [(i, k) for i, k in enumerate(y) if k >= 0]
        loss = (
            -float(np.mean([math.log(max(proba[i, k], 1e-12)) for i, k in seen])) if seen else 0.0
        )
        return score, loss

    def _tune_threshold(
        self, model: ImageCNNModel, x: np.ndarray, df: pd.DataFrame, spec: DatasetSpec
    ) -> None:
        model.pre.threshold = 0.5
        p = model.predict({IMAGE: x})["probability"]
        y = (df[spec.target].astype(str) == spec.positive_label).to_numpy().astype(int)
        model.pre.threshold = tune_threshold(y, p, spec.metric)

    # -- monitoring: the embedding and the image statistics (driftloop.image_drift) --------
    def reference(
        self, model: FittedModel, train: pd.DataFrame, spec: DatasetSpec, schema: Any
    ) -> tuple[pd.DataFrame, dict[str, Any]]:
        from driftloop.image_drift import reference

        return reference(model, train, schema)

    def drift(self, stats: dict[str, Any], window: Source, schema: Any) -> DriftResult:
        from driftloop.image_drift import image_drift

        return image_drift(stats, window, schema)

    def report(
        self,
        reference: pd.DataFrame,
        window: Source,
        schema: Any,
        html_path: Path,
        sample_rows: int,
    ) -> dict[str, Any]:
        from driftloop.image_drift import image_report

        return image_report(reference, window, schema, html_path, sample_rows)


def _improves(metric: str, new: tuple[float, float], old: tuple[float, float]) -> bool:
    """Better in the metric, or as good with a lower validation loss."""
    if better(metric, new[0], old[0]):
        return True
    return new[0] == old[0] and new[1] < old[1]


FAMILY = ImageCNN()
