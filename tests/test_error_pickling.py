"""Our errors survive pickling whole (class, message, attributes), as they must to cross
processes: Beam moves elements and dead letters between workers, multiprocessing
between a pool and its parent."""

from __future__ import annotations

import pickle

import pytest

from beam_i3d import errors


def video_error_classes():
    return [c for c in errors.error_classes().values()
            if issubclass(c, errors.VideoError)]


@pytest.mark.parametrize("cls", video_error_classes(), ids=lambda c: c.__name__)
def test_every_video_error_pickles_whole(cls):
    error = cls("gs://b/v.mp4", "broken packet at 3.2 s")
    error.error_type = "DecoderCrashed"  # as set for an error rebuilt from a child
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is cls
    assert (back.uri, back.cause, str(back)) == (
        "gs://b/v.mp4", "broken packet at 3.2 s", "gs://b/v.mp4: broken packet at 3.2 s")
    assert back.error_type == "DecoderCrashed"


def test_checkpoint_mismatch_pickles_whole():
    error = errors.CheckpointMismatch("/ckpt/model.ckpt", missing=["b", "a"],
                                      unexpected=["x"], mismatched=[("w", (3,), (4,))],
                                      detail="an RGB checkpoint given as flow")
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is errors.CheckpointMismatch and str(back) == str(error)
    assert (back.missing, back.unexpected, back.mismatched, back.detail) == (
        ["a", "b"], ["x"], [("w", (3,), (4,))], "an RGB checkpoint given as flow")


@pytest.mark.parametrize("cls", [c for c in errors.error_classes().values()
                                 if not issubclass(c, (errors.VideoError,
                                                       errors.CheckpointMismatch))],
                         ids=lambda c: c.__name__)
def test_the_other_errors_pickle_with_their_message(cls):
    back = pickle.loads(pickle.dumps(cls("something went wrong")))
    assert type(back) is cls and str(back) == "something went wrong"
