"""The local web app: ``create_app`` builds it, ``serve_ui`` runs it (``emonext ui``).

One page with three tabs (plain HTML, CSS and JavaScript served from this package: it works
offline) and a small JSON API:

* ``POST /api/image``: a photo -> every face's box, label, confidence and seven probabilities,
  the annotated picture, and per face the crop the model saw next to its STN-aligned version;
* ``POST /api/video``: a video -> a job id; ``GET /api/jobs/{id}`` -> progress, then the
  annotated video (with the original sound), the timeline plots, the per-frame CSV and a summary;
  ``DELETE /api/jobs/{id}`` cancels it;
* ``POST /api/frame``: one JPEG frame of the browser's webcam -> the faces in it;
* ``GET /results/...``: the outputs, from a per-session temporary folder under
  ``infer.output_dir/ui`` that is removed when the app stops.

Uploads are streamed to disk and refused with 413 as soon as they pass ``infer.max_upload_mb``;
their content (not their name) decides whether they are images or videos. Every error reaches
the page as ``{"error": "<one sentence naming the file>"}``: never a stack trace.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import json
import logging
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from emonext.config import Params
from emonext.inference.annotate import emotion_colour
from emonext.inference.common import build_predictor
from emonext.inference.stn import has_stn
from emonext.predict import EmotionPredictor
from emonext.ui.analysis import WebcamSessions, analyze_frame, analyze_photo, safe_stem
from emonext.ui.jobs import Job, JobManager
from emonext.ui.uploads import (
    ACCEPTED,
    Upload,
    UploadError,
    check_kind,
    format_mb,
    receive_upload,
    remove_quietly,
)

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
TEMPLATES_DIR = PACKAGE_DIR / "templates"

#: Suffixes a video upload keeps (others get the one of the format its content shows).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".3gp", ".webm", ".mkv", ".avi"})

#: Webcam frames are small JPEGs; a bigger "frame" is a mistake, not a photo to analyse.
MAX_FRAME_BYTES = 5 * 1024 * 1024


class SerializedPredictor:
    """The predictor with every method call holding one lock.

    The image and webcam tabs and a running video job share one model: the Haar cascade is not
    safe to call from two threads at once, and on a small CPU two concurrent forward passes are
    only slower than two in a row. Locking per call (not per video) lets a photo or a webcam
    frame slip in between two frames of a long video instead of waiting for all of it.

    Args:
        predictor: The real predictor.
        lock: Shared by everything that runs the model.
    """

    def __init__(self, predictor: EmotionPredictor, lock: threading.RLock) -> None:
        self._predictor = predictor
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._predictor, name)
        if not inspect.ismethod(value):
            return value  # attributes, and callable members such as the classifier, as they are

        @functools.wraps(value)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return value(*args, **kwargs)

        return locked


def model_description(loaded: Any | None, predictor: EmotionPredictor) -> dict[str, Any]:
    """What the page says about the model in use: its URI, registry version, architecture."""
    from emonext.registry import BUILTIN_DIR, BUILTIN_URI, BUILTIN_WEIGHTS

    checkpoint = predictor.checkpoint
    config = checkpoint.model_config
    uri = getattr(loaded, "uri", None)
    if uri is None:
        # A predictor handed in directly: name the built-in model as its URI, anything else by path.
        builtin = Path(checkpoint.path).resolve() == (BUILTIN_DIR / BUILTIN_WEIGHTS).resolve()
        uri = BUILTIN_URI if builtin else str(checkpoint.path)
    return {
        "uri": uri,
        "version": getattr(loaded, "version", None),
        "run_id": getattr(loaded, "run_id", None),
        "architecture": config.architecture,
        "stn": has_stn(predictor),
        "classes": list(predictor.classes),
    }


class UIState:
    """Everything the endpoints share: the model and its lock, the session folder, the jobs."""

    def __init__(self, params: Params, predictor: EmotionPredictor, loaded: Any | None) -> None:
        self.params = params
        self.predictor = predictor
        self.lock = threading.RLock()
        self.shared_predictor = SerializedPredictor(predictor, self.lock)
        self.model = model_description(loaded, predictor)
        self.upload_limit = int(params.infer.max_upload_mb * 1024 * 1024)
        root = Path(params.infer.output_dir) / "ui"
        root.mkdir(parents=True, exist_ok=True)
        # One folder per server run: results of different runs never mix, and closing the app
        # removes what it wrote.
        self.session_dir = Path(tempfile.mkdtemp(prefix=time.strftime("session-%Y%m%d-%H%M%S-"), dir=root))
        self.uploads_dir = self.session_dir / "uploads"
        self.results_dir = self.session_dir / "results"
        self.uploads_dir.mkdir()
        self.results_dir.mkdir()
        self.jobs = JobManager(self._run_video_job)
        self.webcams = WebcamSessions(predictor, params.infer)

    def result_url(self, path: Path) -> str:
        """The ``/results/...`` URL of a file in the results folder."""
        return "/results/" + Path(path).resolve().relative_to(self.results_dir.resolve()).as_posix()

    def new_result_dir(self) -> Path:
        """A fresh folder (random name) for one photo's or one video's outputs."""
        return Path(tempfile.mkdtemp(prefix="", dir=self.results_dir))

    def analyze_photo(self, upload: Upload) -> dict[str, Any]:
        with self.lock:
            return analyze_photo(upload, self.predictor, self.new_result_dir(), self.model, self.result_url)

    def analyze_frame(self, data: bytes, filename: str, session: str | None) -> dict[str, Any]:
        with self.lock:
            # The id only tells tabs apart; a long one is cut rather than kept in memory whole.
            analyzer = self.webcams.analyzer(session[:64]) if session else None
            return analyze_frame(data, filename, self.predictor, analyzer)

    def _run_video_job(self, job: Job, on_progress: Callable[[float], None]) -> dict[str, Any]:
        from emonext.ui.video import run_video

        return run_video(job, self.shared_predictor, self.params.infer, on_progress, self.result_url)

    def close(self) -> None:
        """Stop the video jobs and remove the session folder."""
        self.jobs.shutdown()
        shutil.rmtree(self.session_dir, ignore_errors=True)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(params: Params, predictor: EmotionPredictor | None = None) -> FastAPI:
    """The GUI as a FastAPI app.

    Args:
        params: Validated params; the ``infer`` section sets the model, limits and output folder.
        predictor: Use this predictor instead of loading ``infer.model`` (tests, embedding).

    Returns:
        The app; its state (``app.state.ui``) holds the predictor, the session folder and the jobs.

    Raises:
        RegistryError, CheckpointError: ``infer.model`` cannot be loaded.
    """
    loaded = None
    if predictor is None:
        loaded, predictor = build_predictor(params)
    state = UIState(params, predictor, loaded)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await run_in_threadpool(state.close)

    app = FastAPI(
        title="emonext",
        description="Facial emotion recognition: photos, videos and the webcam.",
        lifespan=lifespan,
        # The interactive docs load their scripts from a CDN; the app must work offline.
        docs_url=None,
        redoc_url=None,
    )
    app.state.ui = state
    templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/results", StaticFiles(directory=state.results_dir), name="results")

    @app.exception_handler(UploadError)
    async def upload_error(_: Request, error: UploadError) -> JSONResponse:
        return _error(error.status, error.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        message = error.detail if isinstance(error.detail, str) else "The request could not be handled."
        if error.status_code == 404 and message == "Not Found":
            message = "Not found: this address does not exist (or its results were removed)."
        return _error(error.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item.get('loc', ()))}: {item.get('msg', 'invalid')}"
            for item in error.errors()
        )
        return _error(400, f"Invalid request ({problems}).")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        # One line here; the server (uvicorn) logs the traceback after this answer is sent.
        logger.error("%s %s failed: %s: %s", request.method, request.url.path, type(error).__name__, error)
        return _error(
            500,
            f"Something went wrong on the server ({type(error).__name__}); the server log has the details.",
        )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:
        page_config = {
            "maxUploadBytes": state.upload_limit,
            "maxUploadText": format_mb(state.upload_limit),
            "classes": list(predictor.classes),
            # The page's bars and webcam boxes use the annotated pictures' colours.
            "colours": {
                name: "#{:02x}{:02x}{:02x}".format(*emotion_colour(name)) for name in predictor.classes
            },
        }
        return templates.TemplateResponse(
            request,
            "index.html",
            {
                "model": state.model,
                # "<" escaped: the JSON sits inside a <script> element.
                "config_json": json.dumps(page_config).replace("<", "\\u003c"),
                "max_upload": format_mb(state.upload_limit),
                "accepted": ACCEPTED,
            },
        )

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        """Liveness and the model in use."""
        return {"status": "ok", "model": state.model}

    @app.post("/api/image")
    async def analyze_image(request: Request) -> dict[str, Any]:
        """A photo (multipart field ``file``) -> faces, annotated image, per-face views."""
        upload = await receive_upload(request, state.uploads_dir, state.upload_limit)
        try:
            check_kind(upload, "image")
            return await run_in_threadpool(state.analyze_photo, upload)
        finally:
            remove_quietly(upload.path)

    @app.post("/api/frame")
    async def analyze_frame(request: Request, session: str | None = None) -> dict[str, Any]:
        """One webcam frame (multipart field ``file``, JPEG) -> the faces in it.

        ``?session=<random id per page>`` tracks faces over a tab's frames (stable ids,
        smoothing, detection every ``infer.detect_every`` frames); without it each frame stands
        alone.
        """
        upload = await receive_upload(request, state.uploads_dir, min(state.upload_limit, MAX_FRAME_BYTES))
        try:
            check_kind(upload, "image")
            data = upload.path.read_bytes()
            return await run_in_threadpool(state.analyze_frame, data, upload.filename, session)
        finally:
            remove_quietly(upload.path)

    @app.post("/api/video", status_code=202)
    async def analyze_video(request: Request) -> dict[str, Any]:
        """A video (multipart field ``file``) -> a job; poll ``/api/jobs/{id}``."""
        upload = await receive_upload(request, state.uploads_dir, state.upload_limit)
        try:
            found = check_kind(upload, "video")
        except UploadError:
            remove_quietly(upload.path)
            raise
        # Named after the user's file (the summary and the output names use it), in a folder of
        # its own; ffmpeg reads the format from the content, the suffix is for people.
        suffix = Path(upload.filename).suffix.lower()
        if suffix not in VIDEO_SUFFIXES:
            suffix = {"mp4": ".mp4", "webm": ".webm", "avi": ".avi"}[found]
        folder = state.uploads_dir / uuid.uuid4().hex
        folder.mkdir()
        input_path = upload.path.rename(folder / f"{safe_stem(upload.filename)}{suffix}")
        job = state.jobs.submit(upload.filename, input_path, state.new_result_dir())
        return job.to_dict()

    @app.get("/api/jobs/{job_id}")
    async def job_status(job_id: str) -> dict[str, Any]:
        """Progress of a video job, and its outputs once done."""
        job = state.jobs.get(job_id)
        if job is None:
            raise StarletteHTTPException(404, f"No video job {job_id!r} (the app may have been restarted).")
        return job.to_dict()

    @app.delete("/api/jobs/{job_id}")
    async def cancel_job(job_id: str) -> dict[str, Any]:
        """Stop a queued or running video job."""
        job = state.jobs.cancel(job_id)
        if job is None:
            raise StarletteHTTPException(404, f"No video job {job_id!r} (the app may have been restarted).")
        return job.to_dict()

    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _free_port(host: str, port: int) -> int:
    """``port`` if it can be bound on ``host`` (a free one for 0), checked before the model loads.

    Raises:
        RuntimeError: The port is taken or the address is not one of this machine's.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by a previous run is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise RuntimeError(
                f"cannot listen on {host}:{port} ({error.strerror or error}): another program (or another "
                "emonext ui) may be using it; stop it or choose another port with --port"
            ) from None
        return int(probe.getsockname()[1])


def serve_ui(params: Params, host: str | None = None, port: int | None = None) -> None:
    """Run the GUI with uvicorn until interrupted (``emonext ui``).

    Args:
        params: Validated params (``infer`` section).
        host: Bind address; None for ``infer.host`` (127.0.0.1: this machine only).
        port: Port; None for ``infer.port``; 0 for any free port.

    Raises:
        RuntimeError: The port is in use.
        RegistryError, CheckpointError: The model cannot be loaded.
    """
    import uvicorn
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    host = host or params.infer.host
    port = _free_port(host, params.infer.port if port is None else port)
    app = create_app(params)
    if _is_loopback(host):
        # Only pages this machine opens by its own name may talk to the app: a web page whose
        # domain name is pointed at 127.0.0.1 (DNS rebinding) is refused.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost", "::1", "[::1]"])
    else:
        logger.warning(
            "the GUI listens on %s: anyone who can reach this machine on port %d can use it", host, port
        )
    shown = f"[{host}]" if ":" in host else host
    logger.info("emonext GUI: open http://%s:%d in a browser (Ctrl+C stops it)", shown, port)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)


@contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a background thread; yields its base URL, stops it afterwards.

    Args:
        app: The app.
        host: Bind address.
        port: Port; 0 picks a free one.

    Yields:
        ``http://host:port``.
    """
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="emonext-ui-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the GUI server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()
    try:
        yield f"http://{host}:{bound[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
