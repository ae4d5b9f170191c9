"""Tracker, smoothing and summary rules, on synthetic boxes and labels (no model, milliseconds)."""

from __future__ import annotations

import numpy as np
import pytest

from emonext.cleaning.faces import Box
from emonext.inference import tracking
from emonext.inference.tracking import IouTracker, Track, match_boxes
from emonext.inference.video import EN_DASH, Segment, clock, describe_segments, emotion_segments


def shifted(box: Box, dx: int) -> Box:
    return Box(box.x + dx, box.y, box.width, box.height)


LEFT, RIGHT = Box(10, 10, 100, 100), Box(300, 20, 90, 90)


@pytest.mark.parametrize("hungarian", [True, False])
def test_matching_pairs_overlapping_boxes_only(monkeypatch: pytest.MonkeyPatch, hungarian: bool) -> None:
    if not hungarian:
        monkeypatch.setattr(tracking, "_hungarian", None)  # the greedy fallback gives the same pairs
    pairs = match_boxes([LEFT, RIGHT], [shifted(RIGHT, 5), shifted(LEFT, 5), Box(700, 0, 50, 50)], 0.3)
    assert sorted(pairs) == [(0, 1), (1, 0)]
    assert match_boxes([LEFT], [shifted(LEFT, 90)], 0.3) == []  # IoU 0.05: a different face
    assert match_boxes([], [LEFT], 0.3) == [] and match_boxes([LEFT], [], 0.3) == []


def test_ids_are_stable_confirmed_late_and_end_after_max_missing() -> None:
    tracker = IouTracker(iou_threshold=0.3, max_missing=4, min_hits=2)
    first = tracker.update(0, [LEFT, RIGHT])
    assert [track.face_id for track in first] == [None, None]  # not confirmed yet
    tracker.update(1, None)  # no detection on this frame: boxes are kept
    second = tracker.update(2, [shifted(RIGHT, 4), shifted(LEFT, 3)])
    assert {track.box.x: track.face_id for track in second} == {13: 1, 304: 2}
    # The right face is missed for a while: it survives max_missing frames, then ends.
    assert [track.face_id for track in tracker.update(4, [shifted(LEFT, 6)])] == [1, 2]
    assert [track.face_id for track in tracker.update(6, [shifted(LEFT, 8)])] == [1, 2]
    assert [track.face_id for track in tracker.update(8, [shifted(LEFT, 9)])] == [1]
    # A new face gets a new id, never a recycled one.
    tracker.update(9, [shifted(LEFT, 9), RIGHT])
    assert [track.face_id for track in tracker.update(10, [shifted(LEFT, 9), RIGHT])] == [1, 3]


def test_unconfirmed_false_positive_disappears_at_its_first_miss() -> None:
    tracker = IouTracker(iou_threshold=0.3, max_missing=15)
    tracker.update(0, [LEFT])
    tracker.update(1, [LEFT, Box(500, 300, 60, 60)])  # a one-frame false detection
    tracks = tracker.update(2, [LEFT])
    assert [(track.face_id, track.box) for track in tracks] == [(1, LEFT)]


def test_exponential_smoothing_weights_the_past() -> None:
    track = Track(0, LEFT, 0, 0)
    first = np.array([1.0, 0.0], dtype=np.float32)
    assert np.allclose(track.smooth(first, 0.6), first)  # starts at the first value
    assert np.allclose(track.smooth(np.array([0.0, 1.0]), 0.6), [0.6, 0.4])
    assert np.allclose(track.smooth(np.array([0.0, 1.0]), 0.0), [0.0, 1.0])  # 0 = off


def test_short_flickers_merge_into_their_longer_neighbour() -> None:
    fps = 25
    labels = ["happy"] * 50 + ["angry"] * 5 + ["happy"] * 30 + ["sad"] * 40 + ["fear"] * 3
    times = [index / fps for index in range(len(labels))]
    segments = emotion_segments(times, labels, 1 / fps)
    assert [segment.label for segment in segments] == ["happy", "sad"]
    assert segments[0].start == 0.0 and segments[0].end == pytest.approx(85 / fps)
    assert segments[-1].end == pytest.approx(len(labels) / fps)
    (only,) = emotion_segments([0.0, 0.04], ["sad", "happy"], 0.04)  # seen < 0.5 s: one segment
    assert (only.start, only.end) == (0.0, 0.08)


def test_summary_wording() -> None:
    segments = [Segment("happy", 0.0, 40.2), Segment("sad", 40.2, 78.0)]
    assert describe_segments(1, segments) == f"face 1: happy 0:00{EN_DASH}0:40, then sad until 1:18"
    assert clock(3725) == "1:02:05" and clock(4.56, precise=True) == "0:04.6"
