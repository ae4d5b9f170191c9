"""The classifier as an ONNX graph run by onnxruntime: uint8 faces in, probabilities out.

:func:`export_onnx` traces the checkpoint's network together with its preprocessing (the
evaluation resize to ``model.input_size``, the ``model.mean``/``model.std`` normalisation and
the gray-to-3-channel repeat of :func:`emonext.data.transforms.eval_transform`) and a final
softmax, so the graph takes the uint8 faces the predictor crops, (N, 1, S, S) with a dynamic
batch, and returns (N, num_classes) probabilities: nothing but onnxruntime is needed to run it.
The class list, the source checkpoint's MD5 and the face size are stored in the model's
``metadata_props``.

:class:`OnnxFaceClassifier` implements :class:`emonext.predict.FaceClassifier`, so
``predictor(classifier=OnnxFaceClassifier(...))`` swaps PyTorch for onnxruntime.
:func:`onnx_classifier_for` exports a checkpoint once into a cache folder keyed by the
checkpoint's content hash and reuses that export afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from emonext.checkpoint import Checkpoint, CheckpointError, model_from_checkpoint
from emonext.data.transforms import eval_transform
from emonext.fileio import atomic_write, content_hash

logger = logging.getLogger(__name__)

#: Environment variable naming the export cache folder.
CACHE_ENV = "EMONEXT_ONNX_CACHE"
DEFAULT_CACHE = Path("~/.cache/emonext/onnx")
#: Bumped whenever the exported graph changes meaning (inputs, outputs, preprocessing).
EXPORT_FORMAT = "emonext-onnx/1"
INPUT_NAME = "faces"
OUTPUT_NAME = "probabilities"
#: ``metadata_props`` keys written by :func:`export_onnx`.
META_FORMAT = "emonext.format"
META_CLASSES = "emonext.classes"
META_SOURCE_MD5 = "emonext.source_md5"
META_SOURCE = "emonext.source"
META_FACE_SIZE = "emonext.face_size"
META_INPUT_SIZE = "emonext.input_size"


class OnnxModelError(CheckpointError):
    """An ONNX model file is missing, unreadable, or does not fit the classes it is used with."""


class PreprocessedClassifier(torch.nn.Module):
    """The exported computation: uint8 faces (N, 1, S, S) -> eval_transform -> network -> softmax.

    Args:
        model: The network (eval mode).
        checkpoint: Its preprocessing settings (``model.input_size``, ``mean``, ``std``).
    """

    def __init__(self, model: torch.nn.Module, checkpoint: Checkpoint) -> None:
        super().__init__()
        self.model = model
        self.model_config = checkpoint.model_config

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.model(eval_transform(faces, self.model_config)).float().softmax(-1)


def export_onnx(checkpoint: Checkpoint, path: Path, opset: int | None = None) -> Path:
    """Export the checkpoint's classifier, preprocessing included, as an ONNX model.

    The graph's input ``faces`` is uint8 (N, 1, S, S) with S = ``data.image_size`` of the
    checkpoint (the predictor's face crops) and a dynamic N; its output ``probabilities`` is
    float32 (N, num_classes), the softmax of the logits. The file is written atomically (a
    temporary file in the same folder, then a rename), weights embedded.

    Args:
        checkpoint: The model to export.
        path: Where the ``.onnx`` file goes; missing parent folders are created.
        opset: ONNX opset version; None for the exporter's default.

    Returns:
        ``path``.

    Raises:
        CheckpointError: The weights do not fit the described architecture.
    """
    module = PreprocessedClassifier(model_from_checkpoint(checkpoint), checkpoint).eval()
    face_size = checkpoint.data_config.image_size
    # Batch 2, not 1: torch.export specialises dimensions of size 0 and 1.
    example = torch.zeros((2, 1, face_size, face_size), dtype=torch.uint8)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # pytree deprecations inside the exporter
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=opset,
            external_data=False,
            verbose=False,
        )
    if program is None:  # only the legacy exporter returns None
        raise RuntimeError("torch.onnx.export returned no program")
    program.model.metadata_props.update(
        {
            META_FORMAT: EXPORT_FORMAT,
            META_CLASSES: json.dumps(list(checkpoint.classes)),
            META_SOURCE_MD5: content_hash(checkpoint.path),
            META_SOURCE: str(checkpoint.path),
            META_FACE_SIZE: str(face_size),
            META_INPUT_SIZE: str(checkpoint.model_config.input_size),
        }
    )
    atomic_write(Path(path), lambda temporary: program.save(str(temporary), external_data=False))
    logger.info("exported %s to %s", checkpoint.path, path)
    return Path(path)


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model file (without loading its weights).

    Raises:
        OnnxModelError: The file is missing or is not an ONNX model.
    """
    import onnx

    path = Path(path)
    _check_exists(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf decode errors have no common base class
        raise OnnxModelError(f"{path}: not a readable ONNX model ({error})") from None
    return {prop.key: prop.value for prop in model.metadata_props}


class OnnxFaceClassifier:
    """An exported classifier (see :func:`export_onnx`) run by onnxruntime on the CPU.

    Implements :class:`emonext.predict.FaceClassifier`: ``classifier(faces)`` with uint8 faces
    (N, S, S) returns float32 probabilities (N, num_classes).

    Args:
        onnx_path: The ``.onnx`` file.
        classes: The class names the caller expects, in order; they must match the classes
            stored in the model when it has them.
        threads: onnxruntime intra-op threads; None for its default (one per physical core).
        batch_size: Most faces per ``run`` call (bounds memory for long lists).
        providers: onnxruntime execution providers; None for the CPU provider.
        spinning: Let idle onnxruntime threads busy-wait for work. Off by default: in a video
            pipeline the decoder, the detector and the encoder need those cores between the
            (millisecond) classifier calls; spinning cost 20-25% of end-to-end fps on 2 cores.

    Raises:
        OnnxModelError: The file is missing, is not an ONNX model onnxruntime can load, or its
            classes or input differ from what is expected.
    """

    def __init__(
        self,
        onnx_path: Path,
        classes: Sequence[str],
        threads: int | None = None,
        batch_size: int = 64,
        providers: Sequence[str] | None = None,
        spinning: bool = False,
    ) -> None:
        import onnxruntime as ort

        self.path = Path(onnx_path)
        self.classes = tuple(classes)
        self.batch_size = batch_size
        _check_exists(self.path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        options.inter_op_num_threads = 1
        if threads is not None:
            options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=list(providers or ["CPUExecutionProvider"])
            )
        except Exception as error:  # onnxruntime raises its own exception types per failure
            raise OnnxModelError(f"{self.path}: not a loadable ONNX model ({error})") from None
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self._check_interface()

    def _check_interface(self) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1 or inputs[0].type != "tensor(uint8)":
            described = [(item.name, item.type, item.shape) for item in inputs]
            raise OnnxModelError(
                f"{self.path}: not an emonext face classifier: expected one uint8 input (N, 1, S, S) "
                f"and one output, got inputs {described} and {len(outputs)} output(s)"
            )
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        shape = inputs[0].shape
        if len(shape) != 4 or not all(isinstance(side, int) for side in shape[1:]):
            raise OnnxModelError(f"{self.path}: input shape {shape}, expected (N, 1, S, S)")
        self.face_size = int(shape[-1])
        stored = self.metadata.get(META_CLASSES)
        if stored is not None and tuple(json.loads(stored)) != self.classes:
            raise OnnxModelError(
                f"{self.path}: the model's classes {json.loads(stored)} differ from the expected "
                f"classes {list(self.classes)}"
            )
        width = outputs[0].shape[-1]
        if isinstance(width, int) and width != len(self.classes):
            raise OnnxModelError(
                f"{self.path}: the model scores {width} classes, expected {len(self.classes)}"
            )

    @property
    def source_md5(self) -> str | None:
        """MD5 of the checkpoint the model was exported from (None when not recorded)."""
        return self.metadata.get(META_SOURCE_MD5)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities (N, num_classes) for uint8 faces (N, S, S) at the model's face size.

        Raises:
            ValueError: The faces are not uint8 (N, S, S) at the model's face size.
        """
        faces = np.asarray(faces)
        expected = (self.face_size, self.face_size)
        if faces.ndim != 3 or faces.shape[1:] != expected or faces.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: expected uint8 faces (N, {self.face_size}, {self.face_size}), "
                f"got {faces.dtype} {faces.shape}"
            )
        if len(faces) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        batch = np.ascontiguousarray(faces[:, None])
        outputs = [
            self.session.run([self.output_name], {self.input_name: batch[start : start + self.batch_size]})[0]
            for start in range(0, len(batch), self.batch_size)
        ]
        return np.concatenate(outputs).astype(np.float32, copy=False)


def onnx_cache_dir(cache_dir: Path | None = None) -> Path:
    """The export cache: ``cache_dir``, else ``$EMONEXT_ONNX_CACHE``, else ``~/.cache/emonext/onnx``."""
    return Path(cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cached_onnx_path(checkpoint: Checkpoint, cache_dir: Path | None = None) -> Path:
    """Where :func:`onnx_classifier_for` keeps the export of ``checkpoint`` (keyed by its MD5)."""
    version = EXPORT_FORMAT.rsplit("/", 1)[-1]
    return onnx_cache_dir(cache_dir) / f"{content_hash(checkpoint.path)}.v{version}.onnx"


def onnx_classifier_for(
    checkpoint: Checkpoint,
    cache_dir: Path | None = None,
    threads: int | None = None,
    batch_size: int = 64,
) -> OnnxFaceClassifier:
    """An onnxruntime classifier for ``checkpoint``, exporting it once per checkpoint content.

    The export is cached as ``<md5 of the checkpoint>.v<format>.onnx`` in the cache folder
    (see :func:`onnx_cache_dir`); a cached file that cannot be loaded or was exported from
    other weights is replaced by a fresh export.

    Args:
        checkpoint: The model.
        cache_dir: Cache folder; None for ``$EMONEXT_ONNX_CACHE`` or ``~/.cache/emonext/onnx``.
        threads: onnxruntime intra-op threads; None for its default.
        batch_size: Most faces per onnxruntime call.

    Raises:
        CheckpointError: The checkpoint cannot be exported (weights do not fit the architecture).
    """
    path = cached_onnx_path(checkpoint, cache_dir)
    if path.is_file():
        try:
            classifier = OnnxFaceClassifier(path, checkpoint.classes, threads, batch_size)
        except OnnxModelError as error:
            logger.warning("re-exporting the cached ONNX model: %s", error)
        else:
            if classifier.source_md5 == path.name.split(".", 1)[0]:
                logger.info("using the cached ONNX model %s", path)
                return classifier
            logger.warning("%s: exported from other weights; re-exporting", path)
    export_onnx(checkpoint, path)
    return OnnxFaceClassifier(path, checkpoint.classes, threads, batch_size)


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise OnnxModelError(f"{path}: ONNX model file not found")


__all__ = [
    "CACHE_ENV",
    "OnnxFaceClassifier",
    "OnnxModelError",
    "cached_onnx_path",
    "export_onnx",
    "onnx_cache_dir",
    "onnx_classifier_for",
    "read_onnx_metadata",
]
