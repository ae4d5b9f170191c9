"""The web GUI (``emonext ui``): its JSON API through FastAPI's TestClient, then the real page in
headless Chromium against uvicorn on a free local port.

Every test uses the built-in model (no registry needed), loaded once and shared with the other
inference tests. Bad uploads must come back as one sentence naming the file, with the right
status and never a traceback. Chromium's webcam is a fake camera playing the fixture clip.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from emonext.config import Params, load_params
from emonext.inference.ffmpeg import ffmpeg_exe
from emonext.inference.stn import has_stn
from emonext.predict import EmotionPredictor
from emonext.scraping.browser import CHROMIUM_FLAGS
from emonext.ui.app import create_app, running_server
from tests.conftest import PARAMS_FILE
from tests.inference.support import builtin_predictor, model_predictor

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PORTRAIT = FIXTURES / "justinshenk_fer_justin.jpg"
TWO_PEOPLE = FIXTURES / "ageitgey_two_people.jpg"
VIDEO = FIXTURES / "justinshenk_fer_test.mp4"
CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
PAGE_TIMEOUT = 30


def ui_params(output_dir: Path, *overrides: str) -> Params:
    """The repository's params with the built-in model, writing under ``output_dir``."""
    return load_params(PARAMS_FILE, ["infer.model=builtin", f"infer.output_dir={output_dir}", *overrides])


@pytest.fixture(scope="module")
def predictor() -> EmotionPredictor:
    """The built-in model with the ``infer`` detector settings, shared with the other inference tests."""
    return builtin_predictor()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, predictor: EmotionPredictor) -> Iterator[TestClient]:
    app = create_app(ui_params(tmp_path_factory.mktemp("ui")), predictor)
    with TestClient(app) as test_client:
        yield test_client


def post_file(client: TestClient, url: str, name: str, data: bytes, content_type: str = "image/jpeg") -> Any:
    return client.post(url, files={"file": (name, data, content_type)})


def assert_friendly_error(response: Any, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "Traceback" not in message and 'File "' not in message
    for fragment in fragments:
        assert fragment in message
    return message


# --------------------------------------------------------------------------------------------
# The page and the JSON API
# --------------------------------------------------------------------------------------------


def test_page_names_the_model_and_needs_nothing_from_the_internet(tmp_path: Path) -> None:
    # create_app loads infer.model itself here (the other tests share one predictor).
    app = create_app(ui_params(tmp_path))
    with TestClient(app) as test_client:
        page = test_client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert 'data-testid="model-uri">builtin<' in html
        for tab in ("Photo", "Video", "Webcam"):
            assert f">{tab}</button>" in html
        for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert not asset.startswith(("http:", "https:", "//")), f"the page loads {asset}"
        for name in ("app.js", "app.css"):
            static = test_client.get(f"/static/{name}")
            assert static.status_code == 200
            assert not re.search(r"https?://(?!127\.0\.0\.1|localhost)", static.text), (
                f"{name} loads a remote resource"
            )
        assert test_client.get("/api/health").json()["model"]["uri"] == "builtin"
        session = app.state.ui.session_dir
        assert session.is_dir() and session.parent == tmp_path / "ui"
    assert not session.exists(), "the session folder is removed when the app stops"


@pytest.mark.parametrize(("photo", "faces"), [(PORTRAIT, 1), (TWO_PEOPLE, 2)])
def test_photo_upload_gives_labels_probabilities_annotated_image_and_charts(
    client: TestClient, predictor: EmotionPredictor, photo: Path, faces: int
) -> None:
    response = post_file(client, "/api/image", photo.name, photo.read_bytes())
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["file"] == photo.name and len(result["faces"]) == faces
    with Image.open(photo) as original:
        assert (result["width"], result["height"]) == original.size
    for face in result["faces"]:
        assert face["label"] in CLASSES
        assert set(face["probabilities"]) == set(CLASSES)
        assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert face["confidence"] == pytest.approx(max(face["probabilities"].values()))
        box = face["box"]
        assert 0 <= box["x"] < box["x"] + box["width"] <= result["width"]
        png = client.get(face["chart_url"])  # the bar chart of the probabilities
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert ("stn_url" in face) == has_stn(predictor)
    if faces == 2:
        assert result["faces"][0]["box"]["x"] < result["faces"][1]["box"]["x"]

    annotated = client.get(result["annotated_url"])
    assert annotated.status_code == 200 and annotated.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(annotated.content)) as image:
        assert image.size == (result["width"], result["height"])
    saved = client.get(result["json_url"]).json()
    assert [face["label"] for face in saved["faces"]] == [face["label"] for face in result["faces"]]
    assert saved["file"] == photo.name and saved["model"]["uri"] == "builtin"
    assert "stn_url" not in saved["faces"][0] and str(client.app.state.ui.session_dir) not in str(saved)  # type: ignore[attr-defined]


def test_an_emonext_model_shows_each_face_next_to_its_stn_alignment(
    tmp_path: Path, trained_run: Path
) -> None:
    emonext = model_predictor(trained_run)
    assert has_stn(emonext)
    with TestClient(create_app(ui_params(tmp_path), emonext)) as test_client:
        assert test_client.get("/api/health").json()["model"]["stn"] is True
        response = post_file(test_client, "/api/image", TWO_PEOPLE.name, TWO_PEOPLE.read_bytes())
        assert response.status_code == 200, response.text
        faces = response.json()["faces"]
        assert len(faces) == 2
        for face in faces:  # input and STN-aligned face side by side
            png = test_client.get(face["stn_url"])
            assert png.status_code == 200 and png.headers["content-type"] == "image/png"
            with Image.open(io.BytesIO(png.content)) as view:
                assert view.width > 2 * view.height - 64


def test_a_photo_without_a_face_says_so(client: TestClient) -> None:
    blank = io.BytesIO()
    Image.new("RGB", (200, 150), (200, 200, 200)).save(blank, format="PNG")
    result = post_file(client, "/api/image", "wall.png", blank.getvalue(), "image/png").json()
    assert result["faces"] == [] and result["message"] == "No face was found in wall.png."


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("notes.jpg", b"just some text, certainly not a JPEG\n" * 20, "is not an image file (text)"),
        ("empty.jpg", b"", "is empty (0 bytes)"),
        ("truncated.jpg", PORTRAIT.read_bytes()[:600], "could not be read as an image"),
        ("clip.jpg", b"\x00\x00\x00\x18ftypmp42" + bytes(64), "Use the Video tab"),
    ],
    ids=["text", "empty", "truncated", "video"],
)
def test_bad_photos_are_refused_with_a_message_naming_the_file(
    client: TestClient, name: str, data: bytes, expected: str
) -> None:
    assert_friendly_error(post_file(client, "/api/image", name, data), 400, name, expected)


def test_requests_without_a_file_are_refused_politely(client: TestClient) -> None:
    assert_friendly_error(client.post("/api/image", content=b"raw bytes"), 400, "multipart/form-data")
    assert_friendly_error(client.post("/api/image", files={"other": ("a.jpg", b"x")}), 400, "No file")
    assert_friendly_error(client.get("/api/jobs/" + uuid.uuid4().hex), 404, "No video job")
    assert_friendly_error(client.get("/results/nothing/here.png"), 404, "Not found")


def test_a_server_bug_is_reported_without_a_traceback(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any) -> None:
        raise KeyError("internal detail")

    monkeypatch.setattr(client.app.state.ui, "analyze_photo", broken)  # type: ignore[attr-defined]
    # A second client on the same app, without its lifespan (which would close the shared state).
    unchecked = TestClient(client.app, raise_server_exceptions=False)
    response = post_file(unchecked, "/api/image", PORTRAIT.name, PORTRAIT.read_bytes())
    message = assert_friendly_error(response, 500, "Something went wrong", "KeyError")
    assert "internal detail" not in message and "analysis.py" not in message


def test_uploads_over_the_limit_get_413_before_the_body_is_read(
    tmp_path: Path, predictor: EmotionPredictor
) -> None:
    app = create_app(ui_params(tmp_path, "infer.max_upload_mb=0.01"), predictor)
    data = PORTRAIT.read_bytes()  # 33 kB > 0.01 MB
    uploads = app.state.ui.uploads_dir
    with TestClient(app) as test_client:
        # Declared size over the limit: refused from the headers alone.
        message = assert_friendly_error(
            post_file(test_client, "/api/image", PORTRAIT.name, data), 413, "too large", "0.01 MB"
        )
        assert "limit" in message
        # No Content-Length (chunked): counted while streaming, named once its part header is read.
        boundary = "emonextboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{PORTRAIT.name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        body = head + data + f"\r\n--{boundary}--\r\n".encode()

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        response = test_client.post(
            "/api/video",
            content=chunks(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
        assert_friendly_error(response, 413, PORTRAIT.name, "too large")
        assert "content-length" not in response.request.headers
        # Small enough files still pass.
        small = io.BytesIO()
        Image.open(PORTRAIT).resize((64, 64)).save(small, format="JPEG")
        assert post_file(test_client, "/api/image", "small.jpg", small.getvalue()).status_code == 200
    assert not list(uploads.glob("*")), "refused and finished uploads leave no file behind"


def test_webcam_frames_give_faces_without_saving_anything(client: TestClient) -> None:
    frame = io.BytesIO()
    with Image.open(PORTRAIT) as image:
        image.convert("RGB").resize((320, 322)).save(frame, format="JPEG", quality=80)
    results = client.app.state.ui.results_dir  # type: ignore[attr-defined]
    before = set(results.iterdir())
    response = post_file(client, "/api/frame", "frame.jpg", frame.getvalue())
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert len(faces) == 1 and faces[0]["label"] in CLASSES and "id" not in faces[0]
    box = faces[0]["box"]
    assert box["x"] + box["width"] <= 320 and box["y"] + box["height"] <= 322
    assert set(results.iterdir()) == before

    # A tab's frames are tracked as a video's are: a face gets its id once detected twice
    # (detection runs on every infer.detect_every-th frame), then keeps it.
    session = uuid.uuid4().hex
    detect_every = client.app.state.ui.params.infer.detect_every  # type: ignore[attr-defined]
    seen = [
        post_file(client, f"/api/frame?session={session}", "frame.jpg", frame.getvalue()).json()["faces"]
        for _ in range(2 * detect_every + 1)
    ]
    assert seen[0] == [] and [face["id"] for face in seen[-1]] == [1]
    assert seen[-1][0]["label"] in CLASSES
    assert_friendly_error(post_file(client, "/api/frame", "frame.jpg", b"not a jpeg"), 400, "frame.jpg")


# --------------------------------------------------------------------------------------------
# Video jobs
# --------------------------------------------------------------------------------------------


def wait_for_job(client: TestClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: list[float] = []
    while time.monotonic() < deadline:
        state = client.get(f"/api/jobs/{job_id}").json()
        seen.append(state["progress"])
        if state["status"] in ("done", "error", "cancelled"):
            assert seen == sorted(seen), "progress never goes backwards"
            return state
        time.sleep(0.2)
    raise AssertionError(f"video job {job_id} did not finish in {timeout} s: {state}")


def test_video_job_runs_in_the_background_and_serves_its_outputs(client: TestClient) -> None:
    response = post_file(client, "/api/video", VIDEO.name, VIDEO.read_bytes(), "video/mp4")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running") and job["filename"] == VIDEO.name
    state = wait_for_job(client, job["id"])
    assert state["status"] == "done", state["message"]
    assert state["progress"] == 1.0
    result = state["result"]

    video = client.get(result["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"
    partial = client.get(result["video_url"], headers={"Range": "bytes=0-99"})
    assert partial.status_code == 206 and len(partial.content) == 100  # browsers seek with ranges

    table = client.get(result["csv_url"])
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    lines = table.text.strip().splitlines()
    assert len(lines) > 50 and all(name in lines[0] for name in CLASSES)

    assert result["timelines"], "the clip has a face in almost every frame"
    for timeline in result["timelines"]:
        plot = client.get(timeline["url"])
        assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    assert result["summary"].strip()


def test_a_cancelled_video_job_stops_and_leaves_no_video(client: TestClient) -> None:
    job = post_file(client, "/api/video", VIDEO.name, VIDEO.read_bytes(), "video/mp4").json()
    assert client.delete(f"/api/jobs/{job['id']}").status_code == 200
    state = wait_for_job(client, job["id"])
    assert state["status"] == "cancelled" and state["result"] is None
    output_dir = client.app.state.ui.jobs.get(job["id"]).output_dir  # type: ignore[attr-defined]
    assert not list(output_dir.glob("*.mp4")) and not list(output_dir.glob("*.csv"))


def test_a_broken_video_ends_its_job_with_a_message_naming_the_file(client: TestClient) -> None:
    broken = VIDEO.read_bytes()[:3000]  # the MP4 header, then nothing
    job = post_file(client, "/api/video", "broken.mp4", broken, "video/mp4").json()
    state = wait_for_job(client, job["id"])
    assert state["status"] == "error"
    assert "broken.mp4" in state["message"] and "Traceback" not in state["message"]
    assert str(client.app.state.ui.uploads_dir) not in state["message"]  # type: ignore[attr-defined]
    assert_friendly_error(
        post_file(client, "/api/video", "photo.mp4", PORTRAIT.read_bytes(), "video/mp4"),
        400,
        "photo.mp4",
        "Use the Image tab",
    )


# --------------------------------------------------------------------------------------------
# The real page in headless Chromium
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture clip as MJPEG, which Chromium plays (in a loop) as a fake webcam."""
    path = tmp_path_factory.mktemp("camera") / "camera.mjpeg"
    command = [
        ffmpeg_exe(),
        "-v",
        "error",
        "-i",
        str(VIDEO),
        "-t",
        "3",
        "-q:v",
        "4",
        "-f",
        "mjpeg",
        str(path),
    ]
    subprocess.run(command, check=True, timeout=60)
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, camera_file: Path) -> Iterator[WebDriver]:
    """Headless Chromium as ``emonext.scraping.browser.open_browser`` starts it, plus a fake
    camera that plays ``camera_file`` and grants the page's camera request without asking."""
    config = ui_params(tmp_path_factory.mktemp("browser-params")).scrape.browser
    options = webdriver.ChromeOptions()
    options.binary_location = str(config.binary)
    for flag in (
        "--headless=new",
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={camera_file}",
    ):
        options.add_argument(flag)
    service = Service(str(config.driver), env={**os.environ, "SE_OFFLINE": "true"})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(PAGE_TIMEOUT)
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, predictor: EmotionPredictor) -> Iterator[str]:
    app = create_app(ui_params(tmp_path_factory.mktemp("served")), predictor)
    with running_server(app, "127.0.0.1", 0) as url:
        yield url


def upload_photo(driver: WebDriver, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, '[data-testid="image-input"]').send_keys(str(path))


def test_the_page_in_chromium_shows_the_labels_of_an_uploaded_photo(browser: WebDriver, server: str) -> None:
    assert requests.get(f"{server}/api/health", timeout=10).json()["status"] == "ok"
    browser.get(server)
    assert browser.find_element(By.CSS_SELECTOR, '[data-testid="model-uri"]').text == "builtin"
    wait = WebDriverWait(browser, PAGE_TIMEOUT)
    for photo, faces in ((PORTRAIT, 1), (TWO_PEOPLE, 2)):
        upload_photo(browser, photo)
        wait.until(
            expected_conditions.text_to_be_present_in_element(
                (By.CSS_SELECTOR, '[data-testid="image-summary"]'), f"found in {photo.name}"
            )
        )
        panel = browser.find_element(By.ID, "panel-image")
        labels = [item.text for item in panel.find_elements(By.CSS_SELECTOR, '[data-testid="face-label"]')]
        assert len(labels) == faces and set(labels) <= set(CLASSES), labels
        assert browser.find_element(By.CSS_SELECTOR, '[data-testid="error"]').is_displayed() is False
        image = browser.find_element(By.CSS_SELECTOR, '[data-testid="annotated-image"]')
        wait.until(
            lambda driver, image=image: driver.execute_script("return arguments[0].naturalWidth", image) > 0
        )
        assert photo.name in image.get_attribute("alt")
        stn_views = faces if has_stn(builtin_predictor()) else 0
        assert len(panel.find_elements(By.CSS_SELECTOR, '[data-testid="stn-view"]')) == stn_views
        rows = panel.find_elements(By.CSS_SELECTOR, '[data-testid="probability-row"]')
        assert len(rows) == faces * len(CLASSES)


def test_the_page_in_chromium_shows_an_error_for_a_bad_file(
    browser: WebDriver, server: str, tmp_path: Path
) -> None:
    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is a text file with a .jpg name\n")
    browser.get(server)
    upload_photo(browser, bad)
    error = WebDriverWait(browser, PAGE_TIMEOUT).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, '[data-testid="error"]'))
    )
    assert "holiday.jpg" in error.text and "not an image" in error.text
    assert "Traceback" not in browser.page_source
    assert not browser.find_element(By.CSS_SELECTOR, '[data-testid="image-result"]').is_displayed()

    browser.find_element(By.ID, "tab-video").click()
    browser.find_element(By.CSS_SELECTOR, '[data-testid="video-input"]').send_keys(str(bad))
    error = WebDriverWait(browser, PAGE_TIMEOUT).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, '[data-testid="video-error"]'))
    )
    assert "holiday.jpg" in error.text and "not a video" in error.text
    assert not browser.find_element(By.ID, "video-progress").is_displayed()


def test_the_page_in_chromium_follows_a_video_job_to_its_downloads(browser: WebDriver, server: str) -> None:
    browser.get(server)
    browser.find_element(By.ID, "tab-video").click()
    browser.find_element(By.CSS_SELECTOR, '[data-testid="video-input"]').send_keys(str(VIDEO))
    WebDriverWait(browser, 60).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, '[data-testid="video-result"]'))
    )
    player = browser.find_element(By.CSS_SELECTOR, '[data-testid="video-player"]')
    assert player.get_attribute("src").endswith(".annotated.mp4")
    # Chromium plays the H.264 output: its metadata (duration) loads through range requests.
    WebDriverWait(browser, PAGE_TIMEOUT).until(
        lambda driver: driver.execute_script("return arguments[0].readyState", player) >= 1
    )
    assert browser.execute_script("return arguments[0].duration", player) == pytest.approx(4.6, abs=0.3)
    csv_link = browser.find_element(By.CSS_SELECTOR, '[data-testid="csv-download"]').get_attribute("href")
    assert requests.get(csv_link, timeout=10).text.startswith("time_s,frame,face_id")
    assert browser.find_elements(By.CSS_SELECTOR, '[data-testid="timeline"]')
    assert "face 1" in browser.find_element(By.CSS_SELECTOR, '[data-testid="video-summary"]').text
    assert not browser.find_element(By.CSS_SELECTOR, '[data-testid="video-error"]').is_displayed()


def test_the_webcam_tab_labels_the_faces_of_the_live_camera(browser: WebDriver, server: str) -> None:
    browser.get(server)
    browser.find_element(By.ID, "tab-webcam").click()
    browser.find_element(By.ID, "webcam-start").click()
    # The list is rebuilt for every analysed frame: read it in one script call, never by element.
    read_labels = (
        "return Array.from(document.querySelectorAll('#webcam-faces [data-testid=\"face-label\"]'),"
        " element => element.textContent)"
    )
    labels = WebDriverWait(browser, PAGE_TIMEOUT).until(lambda driver: driver.execute_script(read_labels))
    assert set(labels) <= set(CLASSES), labels  # the woman of the clip (a Haar false positive may join)
    assert not browser.find_element(By.CSS_SELECTOR, '[data-testid="webcam-error"]').is_displayed()
    browser.find_element(By.ID, "webcam-stop").click()
    assert browser.find_element(By.CSS_SELECTOR, '[data-testid="webcam-status"]').text == "Camera off."
