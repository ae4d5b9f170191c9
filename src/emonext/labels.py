"""Emotion class names, FER2013's canonical label order and folder-name aliases."""

from __future__ import annotations

#: FER2013's label codes (``fer2013.csv`` column ``emotion``): 0 angry ... 6 neutral.
FER2013_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

#: Spellings met in public FER datasets and scraped folders, mapped to canonical names.
CLASS_ALIASES: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "disgusting": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "smile": "happy",
    "sad": "sad",
    "sadness": "sad",
    "unhappy": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "calm": "neutral",
    "contempt": "contempt",
    "contemptuous": "contempt",
}


def canonical_class(name: str) -> str | None:
    """Map a folder or label name to its canonical class name, case-insensitively.

    Returns:
        The canonical name, or None if the name is not a known emotion or alias.
    """
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = key.split("_", 1)[1] if key[:1].isdigit() and "_" in key else key  # "3_happy" folders
    return CLASS_ALIASES.get(key)
