"""The local web GUI (``emonext ui``): photos, videos and the webcam in a browser.

Importing this package is cheap: FastAPI, uvicorn and the model load only when
:func:`create_app` or :func:`serve_ui` is called, so ``emonext --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from emonext.config import Params
    from emonext.predict import EmotionPredictor


def create_app(params: Params, predictor: EmotionPredictor | None = None) -> FastAPI:
    """The GUI as a FastAPI app; see :func:`emonext.ui.app.create_app`."""
    from emonext.ui.app import create_app as _create_app

    return _create_app(params, predictor)


def serve_ui(params: Params, host: str | None = None, port: int | None = None) -> None:
    """Run the GUI until interrupted; see :func:`emonext.ui.app.serve_ui`."""
    from emonext.ui.app import serve_ui as _serve_ui

    _serve_ui(params, host=host, port=port)


__all__ = ["create_app", "serve_ui"]
