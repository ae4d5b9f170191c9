"""Video throughput, end to end: emonext (PyTorch and onnxruntime) against the ``fer`` package.

Every pipeline reads the same clip and writes an annotated video; each run is a fresh process
(so peak RSS is that pipeline's alone) and the runs of all pipelines are interleaved, repeat
after repeat, so load on the shared machine hits them alike; medians are reported.

* **emonext**: ``emonext.inference.video.analyze_video`` with the ``infer`` section of
  ``params.yaml`` (``--set`` overrides), backend ``torch`` or ``onnx``, ``infer.detect_every``
  1 and 3. The ONNX export is made (and cached) before any timing.
* **fer** (``pip install fer``, TensorFlow, in its own venv: ``bench/fer_env/setup.sh``):
  ``Video(clip).analyze(FER(mtcnn=False), display=False, save_video=True, save_frames=False,
  zip_images=False)``: its Haar cascade and its default (TFLite) emotion model on every frame.
  Its stages are timed by wrapping its decoder, detector, classifier, drawing and writer calls.

fps = frames / seconds of the analysing call, the model already loaded (load time is reported
apart). Peak memory is ``resource.getrusage`` max RSS of the worker process. Before each run the
benchmark waits (up to ``--max-wait`` s) until the CPUs are at most ``--max-busy`` busy, since
other people's jobs share the machine.

Accuracy is compared on pre-cropped FER2013 PublicTest faces (the ``val`` split of the shared
tarball; no detection): emonext through ``predictor.predict(paths, detect_faces=False)``
(torch and onnx), fer through ``FER.detect_emotions(img, face_rectangles=[whole image])`` (its
public API: it pads the box by 10 px of border and rounds scores to 2 decimals) and through its
emotion model directly on the face resized to its 64 px input (no padding, unrounded).

    bench/fer_env/setup.sh                                   # once: the fer venv (~2 GB)
    python bench/video_fps.py --repeat 5                     # ~8 min on 2 cores
    python bench/video_fps.py --skip-fer --skip-accuracy --backends onnx --detect-every 3 \
        --extra "onnx 3 infer.face.detect_max_side=320" --extra "torch 3 torch.threads=1"
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from machine import cpu_model  # bench/ is on sys.path when this file runs as a script

logger = logging.getLogger("bench.video_fps")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = Path("../shared/fixtures/justinshenk_fer_test.mp4")
DEFAULT_FER_PYTHON = Path("bench/fer_env/.venv-fer/bin/python")
#: Stage columns, in pipeline order; whatever else a pipeline reports is appended.
STAGE_ORDER = ("decode", "detect", "classify", "annotate", "encode", "outputs")
FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


# --------------------------------------------------------------------------------------------
# Workers: each runs in its own process and writes one JSON result.


def max_rss_mib() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_project_video(job: dict[str, Any]) -> dict[str, Any]:
    """emonext on the clip: load the model, then time ``analyze_video`` once."""
    started = time.perf_counter()
    from emonext.config import load_params
    from emonext.inference.video import analyze_video
    from emonext.registry import load_model

    if job.get("torch_threads"):
        import torch

        torch.set_num_threads(job["torch_threads"])
    overrides = [f"infer.detect_every={job['detect_every']}", f"infer.backend={job['backend']}"]
    config = load_params(Path(job["params"]), [*job["overrides"], *overrides]).infer
    model = load_model(job["model"])
    classifier = None
    if job["backend"] == "onnx":
        from emonext.inference.onnx_backend import onnx_classifier_for

        classifier = onnx_classifier_for(model.checkpoint, Path(job["onnx_cache"]))
    predictor = model.predictor(
        device=config.device, batch_size=config.batch_size, face_config=config.face, classifier=classifier
    )
    loaded = time.perf_counter()
    rss_loaded = max_rss_mib()
    output = Path(job["output"])
    report = analyze_video(Path(job["video"]), output, predictor, config, False, None)
    seconds = time.perf_counter() - loaded
    return {
        "pipeline": "emonext.inference.video.analyze_video",
        "frames": report.frames,
        "faces": frames_with_faces(report.csv_file),
        "seconds": seconds,
        "load_seconds": loaded - started,
        # Seconds per stage; "total" is the whole call, timed here as "seconds".
        "stages": {name: value for name, value in report.timings.items() if name != "total"},
        "max_rss_mib": max_rss_mib(),
        "max_rss_loaded_mib": rss_loaded,
        "output_bytes": output.stat().st_size if output.is_file() else 0,
    }


def frames_with_faces(csv_file: Path) -> int:
    """Frames with at least one face in ``analyze_video``'s per-frame CSV."""
    import csv

    with csv_file.open(newline="") as handle:
        return len({row["frame"] for row in csv.DictReader(handle)})


class _Timed:
    """Accumulate the seconds spent in calls of chosen methods of ``target`` (others pass through)."""

    def __init__(self, target: Any, stages: dict[str, float], methods: dict[str, str]) -> None:
        self._target, self._stages, self._methods = target, stages, methods

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name in self._methods:
            return _timed(value, self._stages, self._methods[name])
        return value


def _timed(function: Callable[..., Any], stages: dict[str, float], stage: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tick = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            stages[stage] = stages.get(stage, 0.0) + time.perf_counter() - tick

    return wrapper


def worker_fer_video(job: dict[str, Any]) -> dict[str, Any]:
    """fer on the clip (runs in the fer venv): load FER, then time ``Video.analyze`` once."""
    started = time.perf_counter()
    import fer
    import fer.classes as fer_classes
    from fer.classes import Video
    from fer.fer import FER

    logging.getLogger("fer").setLevel(logging.WARNING)
    detector = FER(mtcnn=False)
    output_dir = Path(job["output"]).parent
    video = Video(str(job["video"]), outdir=str(output_dir))
    loaded = time.perf_counter()
    rss_loaded = max_rss_mib()

    stages: dict[str, float] = {}
    detector.find_faces = _timed(detector.find_faces, stages, "detect")
    detector._classify_emotions = _timed(detector._classify_emotions, stages, "classify")
    fer_classes.draw_annotations = _timed(fer_classes.draw_annotations, stages, "annotate")
    video.cap = _Timed(video.cap, stages, {"read": "decode"})
    save_video = video._save_video
    video._save_video = lambda *args: _Timed(
        save_video(*args), stages, {"write": "encode", "release": "encode"}
    )

    tick = time.perf_counter()
    result = video.analyze(
        detector,
        display=False,
        save_video=True,
        save_frames=False,
        zip_images=False,
        output="pandas",
    )
    seconds = time.perf_counter() - tick
    written = output_dir / f"{Path(job['video']).stem}_output{Path(job['video']).suffix}"
    if written.is_file():
        os.replace(written, job["output"])
    import tensorflow as tf

    return {
        "pipeline": f"fer {fer.__version__} (TensorFlow {tf.__version__}, TFLite model, Haar)",
        "frames": video.frameCount,
        "faces": len(result) if result is not None else None,
        "seconds": seconds,
        "load_seconds": loaded - started,
        "stages": stages,
        "max_rss_mib": max_rss_mib(),
        "max_rss_loaded_mib": rss_loaded,
        "output_bytes": Path(job["output"]).stat().st_size if Path(job["output"]).is_file() else 0,
    }


def worker_project_accuracy(job: dict[str, Any]) -> dict[str, Any]:
    """emonext's top-1 on pre-cropped faces, with the torch and the onnx classifier."""
    from emonext.inference.onnx_backend import onnx_classifier_for
    from emonext.registry import load_model

    model = load_model(job["model"])
    predictions: dict[str, list[int]] = {}
    seconds: dict[str, float] = {}
    for backend in ("torch", "onnx"):
        classifier = (
            onnx_classifier_for(model.checkpoint, Path(job["onnx_cache"])) if backend == "onnx" else None
        )
        predictor = model.predictor(classifier=classifier)
        tick = time.perf_counter()
        rows = predictor.predict(job["paths"], detect_faces=False)
        seconds[backend] = time.perf_counter() - tick
        predictions[backend] = [
            int(row.probabilities.argmax()) if row.probabilities is not None else -1 for row in rows
        ]
    return {"classes": list(model.classes), "predictions": predictions, "seconds": seconds}


def worker_fer_accuracy(job: dict[str, Any]) -> dict[str, Any]:
    """fer's top-1 on pre-cropped faces (runs in the fer venv): public API and model direct."""
    import cv2
    import numpy as np
    from fer.fer import FER

    logging.getLogger("fer").setLevel(logging.WARNING)
    detector = FER(mtcnn=False)
    raw: list[np.ndarray] = []
    classify = detector._classify_emotions

    def recording(faces: np.ndarray) -> np.ndarray:
        output = np.asarray(classify(faces))
        raw.extend(output)
        return output

    detector._classify_emotions = recording
    api: list[int] = []
    api_raw: list[int] = []
    direct: list[int] = []
    tick = time.perf_counter()
    for path in job["paths"]:
        image = cv2.imread(path)
        height, width = image.shape[:2]
        raw.clear()
        found = detector.detect_emotions(image, face_rectangles=[(0, 0, width, height)])
        if not found:
            api.append(-1)
            api_raw.append(-1)
            continue
        scores = found[0]["emotions"]
        api.append(FER_LABELS.index(max(scores, key=scores.get)))
        api_raw.append(int(np.argmax(raw[0])))
    api_seconds = time.perf_counter() - tick
    detector._classify_emotions = classify
    tick = time.perf_counter()
    for path in job["paths"]:
        gray = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        face = cv2.resize(gray, (64, 64)).astype(np.float32) / 255.0
        output = classify(((face - 0.5) * 2.0)[None])
        direct.append(int(np.argmax(output[0])))
    direct_seconds = time.perf_counter() - tick
    return {
        "classes": list(FER_LABELS),
        "predictions": {"api": api, "api_unrounded": api_raw, "direct": direct},
        "seconds": {"api": api_seconds, "api_unrounded": api_seconds, "direct": direct_seconds},
    }


def worker_project_classifier(job: dict[str, Any]) -> dict[str, Any]:
    """The classifier alone: ms per call of torch and onnx for a few batch sizes (calls interleaved)."""
    import numpy as np

    from emonext.inference.onnx_backend import onnx_classifier_for
    from emonext.registry import load_model

    model = load_model(job["model"])
    classifiers = {
        "torch": model.predictor().classifier,
        "onnx": onnx_classifier_for(model.checkpoint, Path(job["onnx_cache"])),
    }
    side = model.checkpoint.data_config.image_size
    timings: dict[str, dict[str, float]] = {}
    for batch in job["batches"]:
        faces = np.random.default_rng(0).integers(0, 256, (batch, side, side), dtype=np.uint8)
        samples: dict[str, list[float]] = {name: [] for name in classifiers}
        for _ in range(3):  # warm-up
            for classifier in classifiers.values():
                classifier(faces)
        for _ in range(job["calls"]):
            for name, classifier in classifiers.items():
                tick = time.perf_counter()
                classifier(faces)
                samples[name].append(time.perf_counter() - tick)
        timings[str(batch)] = {name: 1000 * statistics.median(values) for name, values in samples.items()}
    return {"ms_per_call": timings}


WORKERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "project-classifier": worker_project_classifier,
    "project-video": worker_project_video,
    "fer-video": worker_fer_video,
    "project-accuracy": worker_project_accuracy,
    "fer-accuracy": worker_fer_accuracy,
}


def run_worker(name: str, job_file: Path, result_file: Path) -> None:
    job = json.loads(job_file.read_text())
    result = WORKERS[name](job)
    result_file.write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------
# The parent: schedule, collect, write the table.


def spawn(python: Path, worker: str, job: dict[str, Any], log_file: Path, cwd: Path) -> dict[str, Any]:
    """Run one worker in a fresh process; its stdout/stderr go to ``log_file``."""
    with tempfile.TemporaryDirectory() as folder:
        job_file, result_file = Path(folder) / "job.json", Path(folder) / "result.json"
        job_file.write_text(json.dumps(job))
        environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        command = [str(python), str(Path(__file__).resolve()), "--worker", worker]
        command += ["--job", str(job_file), "--result", str(result_file)]
        tick = time.perf_counter()
        busy_before, ours_before = cpu_seconds_busy(), children_cpu_seconds()
        with log_file.open("a") as log:
            log.write(f"\n$ {' '.join(command)}\n")
            log.flush()
            finished = subprocess.run(command, cwd=cwd, env=environment, stdout=log, stderr=log, check=False)
        if finished.returncode != 0:
            raise RuntimeError(f"worker {worker} failed (exit {finished.returncode}); see {log_file}")
        result = json.loads(result_file.read_text())
    wall = time.perf_counter() - tick
    foreign = (cpu_seconds_busy() - busy_before) - (children_cpu_seconds() - ours_before)
    result["process_seconds"] = wall
    # CPU time other processes took while the worker ran, as a share of all cores.
    result["foreign_share"] = max(0.0, foreign) / (wall * (os.cpu_count() or 1))
    return result


def cpu_seconds_busy() -> float:
    """CPU seconds all processes have spent busy since boot, summed over cores (/proc/stat)."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished children (and their own children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def val_faces(root: Path, classes: Sequence[str], limit: int, seed: int) -> list[tuple[str, int]]:
    """(path, label) of FER2013 PublicTest faces: all of them, or a fixed seeded sample."""
    folder = root / "val"
    faces = [
        (str(path), index)
        for index, name in enumerate(classes)
        for path in sorted((folder / name).glob("*"))
        if path.is_file()
    ]
    if not faces:
        raise SystemExit(f"no faces in {folder}/<class>/ for classes {list(classes)}")
    if 0 < limit < len(faces):
        faces = sorted(random.Random(seed).sample(faces, limit))
    return faces


def scores(truth: Sequence[int], predicted: Sequence[int], classes: Sequence[str]) -> dict[str, float]:
    import numpy as np

    from emonext.evaluation.metrics import classification_report

    report = classification_report(np.asarray(truth), np.asarray(predicted), tuple(classes))
    return {"accuracy": report.accuracy, "macro_f1": report.macro_f1}


def parse_extra(text: str) -> tuple[str, int, list[str]]:
    """``"onnx 3 infer.face.detect_max_side=320 torch.threads=1"`` -> (backend, detect_every, overrides)."""
    backend, every, *overrides = text.split()
    if backend not in ("torch", "onnx") or not every.isdigit():
        raise SystemExit(f"--extra {text!r}: expected 'torch|onnx EVERY [key=value ...]'")
    return backend, int(every), overrides


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all cores busy (any process) over the next ``seconds``, from /proc/stat."""

    def sample() -> tuple[int, int]:
        values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    busy_before, total_before = sample()
    time.sleep(seconds)
    busy_after, total_after = sample()
    return (busy_after - busy_before) / max(1, total_after - total_before)


def wait_for_quiet(max_busy: float, timeout: float) -> float:
    """Wait until the machine is at most ``max_busy`` busy (other users' jobs), at most ``timeout`` s.

    Returns:
        The last busy fraction measured (the run goes ahead after ``timeout`` regardless).
    """
    deadline = time.monotonic() + timeout
    busy = cpu_busy()
    while busy > max_busy and time.monotonic() < deadline:
        logger.info("machine %.0f%% busy; waiting for it to calm down", 100 * busy)
        time.sleep(5)
        busy = cpu_busy()
    return busy


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median fps (the lower middle one for an even count)."""
    ordered = sorted(runs, key=lambda run: run["fps"])
    return ordered[(len(ordered) - 1) // 2]


def stage_columns(results: dict[str, list[dict[str, Any]]]) -> list[str]:
    seen = {stage for runs in results.values() for run in runs for stage in run["stages"]}
    return [stage for stage in STAGE_ORDER if stage in seen] + sorted(seen - set(STAGE_ORDER))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    parser.add_argument("--model", default="builtin", help="any emonext model URI (default: builtin)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="params overrides")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    parser.add_argument("--detect-every", nargs="+", type=int, default=[1, 3])
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="'BACKEND EVERY [KEY=VALUE ...]'",
        help="another emonext pipeline with params overrides (torch.threads=N sets torch's threads)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per pipeline; medians are reported")
    parser.add_argument("--fer-python", type=Path, default=DEFAULT_FER_PYTHON)
    parser.add_argument("--skip-fer", action="store_true", help="emonext only")
    parser.add_argument("--data", type=Path, default=None, help="FER2013 tarball or folder (accuracy)")
    parser.add_argument("--cache", type=Path, default=Path("runs/cache"))
    parser.add_argument("--accuracy-faces", type=int, default=0, help="0: every PublicTest face")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--max-busy", type=float, default=0.25, help="wait while CPUs are busier than this")
    parser.add_argument("--max-wait", type=float, default=120.0, help="most seconds to wait per run")
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=0.15,
        help="redo a run when other processes took more than this share of the CPUs during it",
    )
    parser.add_argument("--retries", type=int, default=3, help="most redos per run")
    parser.add_argument("--output", type=Path, default=Path("runs/bench/video_fps"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/video_fps.md"))
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, args.job, args.result)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    bench(args)


def bench(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fer2013_data import SHARED_FER2013, fer2013_root

    from emonext.fileio import content_hash, write_atomically
    from emonext.inference.onnx_backend import onnx_classifier_for
    from emonext.registry import load_model

    video = args.video.resolve()
    if not video.is_file():
        raise SystemExit(f"{video}: no such video")
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    log_file = output / "workers.log"
    log_file.write_text("")
    onnx_cache = output / "onnx-cache"
    fer_python = args.fer_python if args.fer_python.is_absolute() else REPO / args.fer_python
    use_fer = not args.skip_fer
    if use_fer and not fer_python.is_file():
        raise SystemExit(f"{fer_python}: no fer venv; run bench/fer_env/setup.sh (or pass --skip-fer)")
    load_before = load_average()
    logger.info("load average before: %s", load_before)

    if Path(args.model).exists():  # a local checkpoint: the workers run in other folders
        args.model = str(Path(args.model).resolve())
    model = load_model(args.model)
    checkpoint = model.checkpoint
    if "onnx" in args.backends or not args.skip_accuracy:
        tick = time.perf_counter()
        onnx_classifier_for(checkpoint, onnx_cache)  # export outside any timing
        logger.info("ONNX model ready in %.1f s", time.perf_counter() - tick)

    variants = [(backend, every, []) for backend in args.backends for every in args.detect_every]
    variants += [parse_extra(text) for text in args.extra]
    pipelines: list[tuple[str, str, dict[str, Any]]] = []
    for backend, every, extra in variants:
        threads = [int(item.split("=", 1)[1]) for item in extra if item.startswith("torch.threads=")]
        params_overrides = [item for item in extra if not item.startswith("torch.threads=")]
        job = {
            "video": str(video),
            "model": args.model,
            "params": str(args.params.resolve()),
            "overrides": [*args.overrides, *params_overrides],
            "torch_threads": threads[-1] if threads else 0,
            "backend": backend,
            "detect_every": every,
            "onnx_cache": str(onnx_cache),
        }
        name = f"emonext {backend}, detect_every {every}" + "".join(f", {item}" for item in extra)
        pipelines.append((name, "project-video", job))
    if use_fer:
        pipelines.append(("fer (Haar + TFLite), every frame", "fer-video", {"video": str(video)}))

    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in pipelines}
    discarded = dict.fromkeys(results, 0)
    for repeat in range(args.repeat):
        for index, (name, worker, job) in enumerate(pipelines):
            run_dir = output / f"p{index}-r{repeat}"
            run_dir.mkdir(exist_ok=True)
            job = {**job, "output": str(run_dir / "annotated.mp4")}
            python = fer_python if worker.startswith("fer") else Path(sys.executable)
            for attempt in range(args.retries + 1):
                busy = wait_for_quiet(args.max_busy, args.max_wait)
                result = spawn(python, worker, job, log_file, run_dir)
                result["busy_before"], result["redone"] = busy, attempt
                if result["foreign_share"] <= args.max_foreign or attempt == args.retries:
                    break
                discarded[name] += 1
                logger.info(
                    "%s: other processes took %.0f%% of the CPUs during the run; redoing it",
                    name,
                    100 * result["foreign_share"],
                )
            result["fps"] = result["frames"] / result["seconds"]
            results[name].append(result)
            logger.info(
                "run %d/%d %s: %d frames in %.2f s = %.1f fps, peak RSS %.0f MiB (others: %.0f%% CPU)",
                repeat + 1,
                args.repeat,
                name,
                result["frames"],
                result["seconds"],
                result["fps"],
                result["max_rss_mib"],
                100 * result["foreign_share"],
            )

    job = {"model": args.model, "onnx_cache": str(onnx_cache), "batches": [1, 2, 8, 32], "calls": 30}
    wait_for_quiet(args.max_busy, args.max_wait)
    classifier_ms = spawn(Path(sys.executable), "project-classifier", job, log_file, output)["ms_per_call"]

    accuracy: list[tuple[str, dict[str, float], float, int]] = []
    faces_used = 0
    if not args.skip_accuracy:
        root = fer2013_root(args.data or REPO / SHARED_FER2013, args.cache).resolve()
        faces = val_faces(root, checkpoint.classes, args.accuracy_faces, seed=0)
        faces_used = len(faces)
        paths, truth = [path for path, _ in faces], [label for _, label in faces]
        job = {"paths": paths, "model": args.model, "onnx_cache": str(onnx_cache)}
        ours = spawn(Path(sys.executable), "project-accuracy", job, log_file, output)
        for backend, predicted in ours["predictions"].items():
            accuracy.append(
                (
                    f"emonext ({backend})",
                    scores(truth, predicted, ours["classes"]),
                    ours["seconds"][backend],
                    0,
                )
            )
        if use_fer:
            if tuple(checkpoint.classes) != FER_LABELS:
                raise SystemExit(f"model classes {checkpoint.classes} are not fer's {FER_LABELS}")
            theirs = spawn(fer_python, "fer-accuracy", job, log_file, output)
            names = {
                "api": "fer, `detect_emotions` (public API, scores rounded to 0.01)",
                "api_unrounded": "fer, `detect_emotions` preprocessing, unrounded argmax",
                "direct": "fer model direct (face resized to 64 px, no padding)",
            }
            for variant, predicted in theirs["predictions"].items():
                missing = sum(1 for value in predicted if value < 0)
                accuracy.append(
                    (
                        names[variant],
                        scores(truth, predicted, FER_LABELS),
                        theirs["seconds"][variant],
                        missing,
                    )
                )

    load_after = load_average()
    document = render(
        args,
        results,
        accuracy,
        faces_used,
        video,
        model_line=(
            f"`{args.model}`: {checkpoint.model_config.architecture}, "
            f"input {checkpoint.model_config.input_size} px, md5 `{content_hash(checkpoint.path)}`"
        ),
        load=(load_before, load_after),
        discarded=discarded,
        classifier_ms=classifier_ms,
    )
    write_atomically(args.results, document)
    raw = {name: runs for name, runs in results.items()}
    document_json = {"video": raw, "classifier_ms": classifier_ms, "accuracy": accuracy}
    write_atomically(output / "results.json", json.dumps(document_json, indent=2))
    print(document)


def render(
    args: argparse.Namespace,
    results: dict[str, list[dict[str, Any]]],
    accuracy: list[tuple[str, dict[str, float], float, int]],
    faces_used: int,
    video: Path,
    model_line: str,
    load: tuple[str, str],
    discarded: dict[str, int],
    classifier_ms: dict[str, dict[str, float]],
) -> str:
    """The results as Markdown."""
    import numpy as np
    import onnxruntime
    import torch

    command = "python bench/video_fps.py " + shlex.join(sys.argv[1:])
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    fer_runs = next((runs for name, runs in results.items() if name.startswith("fer")), None)
    fer_fps = statistics.median(run["fps"] for run in fer_runs) if fer_runs else None
    stages = stage_columns(results)
    lines = [
        "# Video throughput: emonext vs fer",
        "",
        f"`{command.strip()}` on {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}; {now}. "
        f"Load average before/after: {load[0]} / {load[1]}.",
        "",
        f"Clip: `{video.name}`; model {model_line}. Each run is a fresh process; pipelines "
        f"interleaved, {args.repeat} run(s) each; medians. fps = frames / seconds of the analysing "
        "call with the model loaded; per-stage times are ms per frame of the median run; peak RSS is "
        "the worker's max RSS.",
        "",
        "| pipeline | fps (median) | fps of each run | vs fer | fps w/o sidecars | "
        + " | ".join(f"{stage} ms" for stage in stages)
        + " | other ms | load s | peak RSS MiB (after load) | frames | with a face |",
        "|---|---:|---|---:|---:|" + "---:|" * len(stages) + "---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        if not runs:
            continue
        fps = statistics.median(run["fps"] for run in runs)
        middle = median_run(runs)
        frames = max(middle["frames"], 1)
        stage_ms = [middle["stages"].get(stage) for stage in stages]
        other = middle["seconds"] - sum(value for value in stage_ms if value is not None)
        ratio = f"{fps / fer_fps:.2f}x" if fer_fps else "-"
        video_only = statistics.median(
            run["frames"] / (run["seconds"] - run["stages"].get("outputs", 0.0)) for run in runs
        )
        cells = [
            name,
            f"**{fps:.1f}**",
            ", ".join(f"{run['fps']:.1f}" for run in runs),
            ratio,
            f"{video_only:.1f}",
            *["-" if value is None else f"{1000 * value / frames:.2f}" for value in stage_ms],
            f"{1000 * other / frames:.2f}",
            f"{statistics.median(run['load_seconds'] for run in runs):.1f}",
            f"{statistics.median(run['max_rss_mib'] for run in runs):.0f} "
            f"({statistics.median(run['max_rss_loaded_mib'] for run in runs):.0f})",
            str(middle["frames"]),
            "-" if middle.get("faces") is None else str(middle["faces"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    pipelines = sorted({run["pipeline"] for runs in results.values() for run in runs})
    foreign = [run["foreign_share"] for runs in results.values() for run in runs]
    lines += [
        "",
        "Measured: " + "; ".join(f"`{name}`" for name in pipelines) + ".",
        "",
        f"The machine is shared: a run during which other processes took more than "
        f"{100 * args.max_foreign:.0f}% of the CPUs was redone (at most {args.retries} times); "
        f"{sum(discarded.values())} run(s) were redone. Other processes' share of the CPUs during "
        f"the kept runs: median {100 * statistics.median(foreign):.0f}%, max {100 * max(foreign):.0f}%."
        if foreign
        else "",
        "",
        "Columns: *fps w/o sidecars* leaves out emonext's `outputs` stage (frames CSV, timeline "
        "plots, summary; fer writes only the video). *other* is the analysing call minus the timed "
        "stages (emonext: tracking and smoothing bookkeeping, CSV rows, waiting on the ffmpeg pipes; "
        "fer: colour conversion, padding, cropping, its progress bar). emonext's `detect` includes the "
        "gray conversion and the tracker, `classify` the face crops; decoding and encoding run in ffmpeg "
        "processes, so their columns are the time spent waiting on the pipes. fer decodes and encodes "
        "(mp4v) in-process with OpenCV; emonext encodes H.264 (libx264).",
    ]
    lines += [
        "",
        "## The classifier alone",
        "",
        "ms per call on uint8 faces (median of 30 interleaved calls after 3 warm-up calls); in "
        "`analyze_video` a call holds the faces of up to 16 frames.",
        "",
        "| faces per call | torch ms | onnx ms | onnx speed-up |",
        "|---:|---:|---:|---:|",
    ]
    for batch, values in classifier_ms.items():
        speedup = values["torch"] / values["onnx"]
        lines.append(f"| {batch} | {values['torch']:.2f} | {values['onnx']:.2f} | {speedup:.2f}x |")
    if accuracy:
        lines += [
            "",
            f"## Accuracy on FER2013 PublicTest ({faces_used} pre-cropped faces, no detection)",
            "",
            "| classifier | accuracy | macro-F1 | seconds | unscored faces |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, values, seconds, missing in accuracy:
            metrics = f"{values['accuracy']:.4f} | {values['macro_f1']:.4f}"
            lines.append(f"| {name} | {metrics} | {seconds:.1f} | {missing} |")
        lines += [
            "",
            "emonext classifies the 48 px face as evaluation does (`detect_faces=False`). fer's public "
            "API treats the given box as a Haar detection: it widens it by 10 px on each side, filling "
            "outside the image with the mean of its bottom rows, so on these tight FER2013 crops its "
            "model sees a shrunken face with a border; fed the face as it was trained (48 px resized to "
            "its 64 px input, scaled to [-1, 1]) the same TFLite model does much better. fer's model "
            "(mini-Xception, trained by its authors on FER2013) is not ours to audit: FER2013 PublicTest "
            "is expected to have been its validation data, as it is ours, but that is not verified here.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
