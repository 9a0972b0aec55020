"""Training events: fields, order, stop requests, recorder bounds, throttling."""
import json
import threading

import numpy as np
import pytest

from explorer import events
from explorer.events import STOP, FitFailed, FitFinished, FitStarted, Recorder, Step, StopSignal, Throttle
from explorer.methods import create


def test_a_fit_emits_start_steps_finish_with_documented_fields(digits):
    seen = []
    create("pq", n_subspaces=8, n_codewords=32, n_iter=6).fit(digits.base, callbacks=[seen.append])
    assert isinstance(seen[0], FitStarted) and isinstance(seen[-1], FitFinished)
    start = seen[0]
    assert (start.method, start.n_samples, start.dim, start.n_subspaces, start.n_codewords) == ("pq", digits.n, 64, 8, 32)
    steps = [e for e in seen if isinstance(e, Step)]
    assert [s.step for s in steps] == list(range(1, 7))
    for s in steps:
        assert s.usage.shape == (8, 32) and s.usage.sum(axis=1).tolist() == [digits.n] * 8
        assert s.perplexity.shape == (8,) and ((s.perplexity >= 1) & (s.perplexity <= 32 + 1e-9)).all()
        np.testing.assert_array_equal(s.dead_codes, (s.usage == 0).sum(axis=1))
        assert "total" in s.losses and s.loss == s.losses["total"]
        assert s.soft_hard is None  # PQ has no soft codes
        assert s.sample is None  # nobody asked for samples
    assert seen[-1].steps == 6 and not seen[-1].stopped
    assert seen[-1].metrics == {}  # nobody asked for the final metrics: no extra pass over X
    json.dumps([e.to_dict() for e in seen])  # every event is JSON-ready


def test_final_metrics_only_when_a_subscriber_asks_and_then_the_final_codebooks_distortion(digits):
    asked, plain = Recorder(final_metrics=True), Recorder()
    model = create("pq", n_subspaces=8, n_codewords=32, n_iter=6).fit(digits.base, callbacks=[asked, plain])
    assert asked.finished is plain.finished  # one event for both subscribers...
    assert asked.finished.metrics["distortion"] == pytest.approx(model.embedding_distortion(digits.base), rel=1e-6)
    assert asked.finished.metrics["distortion"] < asked.steps[0].loss  # ...with the trained codebooks
    alone = Recorder()
    create("pq", n_subspaces=8, n_codewords=32, n_iter=6).fit(digits.base, callbacks=[alone])
    assert alone.finished.metrics == {}


def test_samples_only_when_a_subscriber_asks(digits):
    class WantsSamples(list):
        sample_every = 2

        def __call__(self, event):
            self.append(event)

    sub = WantsSamples()
    create("pq", n_subspaces=8, n_codewords=16, n_iter=4).fit(digits.base, callbacks=[sub])
    samples = {e.step: e.sample for e in sub if isinstance(e, Step)}
    assert samples[1] is None and samples[3] is None
    s = samples[2]
    assert s.subvectors.shape[0] == 8 and s.subvectors.shape[2] == 8 and s.codes.shape == (s.subvectors.shape[1], 8)
    assert s.codebooks.shape == (8, 16, 8)


def test_callback_can_stop_training_and_model_stays_usable(digits):
    rec = Recorder()

    def stop_at_3(event):
        if isinstance(event, Step) and event.step == 3:
            return STOP

    pq = create("pq", n_codewords=32, n_iter=50).fit(digits.base, callbacks=[rec, stop_at_3])
    assert pq.stopped_ and pq.n_steps_ == 3 and len(rec.steps) == 3
    assert rec.finished.stopped
    codes = pq.encode(digits.base)
    assert codes.shape == (digits.n, 8) and np.isfinite(pq.decode(codes)).all()


def test_stop_signal_from_another_thread(digits):
    signal = StopSignal()
    started = threading.Event()

    def on_event(event):
        if isinstance(event, Step):
            started.set()
            signal.set()  # what a Stop button in another thread does

    pq = create("pq", n_codewords=32, n_iter=1000)
    t = threading.Thread(target=pq.fit, args=(digits.base,), kwargs=dict(callbacks=[on_event], stop=signal))
    t.start()
    t.join(timeout=60)
    assert not t.is_alive() and started.is_set()
    assert pq.stopped_ and pq.n_steps_ < 1000


def test_failed_fit_emits_fit_failed_and_raises(digits, monkeypatch):
    seen = []
    pq = create("pq", n_codewords=16)
    monkeypatch.setattr(pq, "_fit", lambda X, y, run: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        pq.fit(digits.base, callbacks=[seen.append])
    assert isinstance(seen[-1], FitFailed) and "boom" in seen[-1].error


def _step(i):
    usage = np.ones((2, 4), dtype=np.int64)
    return Step(step=i, losses={"total": 1.0 / i}, usage=usage, perplexity=np.full(2, 4.0), dead_codes=np.zeros(2))


def test_recorder_is_a_bounded_ring_buffer():
    rec = Recorder(max_steps=10)
    rec(FitStarted(method="pq", params={}, n_samples=10, dim=4, n_subspaces=2, n_codewords=4))
    for i in range(1, 1001):
        rec(_step(i))
    assert len(rec.steps) == 10 and rec.steps[0].step == 991 and rec.last.step == 1000
    hist = rec.history()
    assert hist[-1]["step"] == 1000 and set(hist[-1]) >= {"step", "loss", "perplexity_mean"}


def test_throttle_limits_rate_and_flushes_last_step():
    now = [0.0]
    got = []
    th = Throttle(got.append, interval=1.0, clock=lambda: now[0])
    for i in range(1, 11):
        th(_step(i))
        now[0] += 0.25
    assert [e.step for e in got] == [1, 5, 9]
    th(FitFinished(steps=10, stopped=False, seconds=1.0, metrics={}))
    assert [getattr(e, "step", None) for e in got][-2:] == [10, None]


def test_usage_and_perplexity_helpers():
    codes = np.array([[0, 1], [0, 1], [0, 2], [0, 3]])
    usage = events.usage_counts(codes, 4)
    np.testing.assert_array_equal(usage, [[4, 0, 0, 0], [0, 2, 1, 1]])
    ppl = events.perplexity_from_usage(usage)
    assert ppl[0] == pytest.approx(1.0)
    assert ppl[1] == pytest.approx(np.exp(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25))))


def test_a_step_computes_perplexity_and_dead_codes_on_first_read_only(digits, monkeypatch):
    """The training thread pays for the derived fields only of the steps someone reads."""
    calls = {"perplexity": 0, "dead_codes": 0}

    def counted(name, fn):
        def wrapper(usage):
            calls[name] += 1
            return fn(usage)
        return wrapper

    for name, fn in list(events._STEP_DERIVED.items()):
        monkeypatch.setitem(events._STEP_DERIVED, name, counted(name, fn))
    rec = Recorder()
    create("pq", n_subspaces=8, n_codewords=32, n_iter=6).fit(digits.base, callbacks=[rec])
    assert len(rec.steps) == 6 and calls == {"perplexity": 0, "dead_codes": 0}
    last = rec.last
    np.testing.assert_array_equal(last.perplexity, events.perplexity_from_usage(last.usage))
    np.testing.assert_array_equal(last.dead_codes, (last.usage == 0).sum(axis=1))
    last.perplexity, last.dead_codes  # kept: a second read computes nothing
    assert calls == {"perplexity": 1, "dead_codes": 1}


def test_a_step_with_unread_derived_fields_round_trips():
    import pickle
    usage = np.array([[3, 0, 1], [2, 2, 0]])
    written = Step.from_usage(2, {"total": 0.5}, usage).to_dict()
    assert written["perplexity"] == events.perplexity_from_usage(usage).tolist() and written["dead_codes"] == [1, 1]
    again = pickle.loads(pickle.dumps(Step.from_usage(2, {"total": 0.5}, usage)))
    np.testing.assert_array_equal(again.dead_codes, [1, 1])
    given = Step(step=1, losses={}, usage=usage, perplexity=np.full(2, 7.0), dead_codes=np.zeros(2))
    assert given.perplexity.tolist() == [7.0, 7.0]  # given values are kept as they are (an event log's)
    with pytest.raises(AttributeError, match="no attribute 'perplexityy'"):
        given.perplexityy
