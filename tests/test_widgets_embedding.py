import numpy as np

from widget_streams import steps, stream
from widgets import EmbeddingView
from widgets.embedding import project


def test_picture_is_the_last_sample_coloured_by_its_codes():
    events = stream("pq", sample_every=2, n_iter=5)
    sampled = [s for s in steps(events) if s.sample is not None]
    assert [s.step for s in sampled] == [2, 4]
    view = EmbeddingView(sample_every=2, background=False, subspace=1).replay(events)
    last = sampled[-1].sample
    fig = view.figure
    assert list(fig.data[0].marker.color) == last.codes[:, 1].tolist()
    assert len(fig.data[0].x) == last.subvectors.shape[1]
    assert [int(t) for t in fig.data[1].text] == np.unique(last.codes[:, 1]).tolist()
    assert fig.layout.title.text == "t-SNE of subspace 1 at step 4"
    assert np.isfinite(fig.data[0].x).all()

    view.subspace.value = 3  # another subspace: recomputed from the same sample
    assert list(fig.data[0].marker.color) == last.codes[:, 3].tolist()


def test_background_projection_keeps_the_figure_and_finishes():
    events = stream("pq", sample_every=2, n_iter=5)
    view = EmbeddingView(sample_every=2, background=True)
    figure = view.figure
    view.replay(events)
    view.wait(60)
    assert view.figure is figure
    assert view.picture["step"] == 4
    assert "computing" not in view.caption.value


def test_projection_of_low_dimensional_points_is_the_points_themselves():
    pts = np.arange(10, dtype=np.float32).reshape(5, 2)
    assert np.array_equal(project(pts), pts)
