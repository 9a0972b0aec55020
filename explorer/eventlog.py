"""An open event format: a JSON-lines log any process writes and any view reads, live or later.

A log is UTF-8 text, one JSON object per line:

* the first line is the header, ``{"kind": "header", "format": "pqx-events", "version": 1,
  "wall_time": ..., "pid": ..., "host": ...}``;
* every other line is one event's :meth:`~explorer.events.Step.to_dict` with ``kind`` first
  and ``wall_time`` (seconds since the epoch, as ``time.time()``) added;
* strict JSON: NaN and infinities are written as ``null`` (a diverged loss reads back as NaN).

:class:`EventLog` is a training callback that appends to such a file, flushed per event, so
another process can follow it while it grows (:func:`read_events` with ``follow=True``, or
``widgets.RunView(path)``). It is the one output of the project that is not written by an atomic
rename (see :mod:`explorer.atomic`): it is append-only by design, and a writer killed in the middle
of a line leaves a torn last line, which readers skip. Heavy payloads (embedding samples) are
written only every ``sample_every`` steps, as the log asks for them like any subscriber.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from .errors import DataFileError, InvalidParameter
from .events import FitFailed, FitFinished, FitStarted, _Event
from .jsonsafe import json_ready

FORMAT = "pqx-events"
VERSION = 1
_END = (FitFinished, FitFailed)


def _line(record: dict) -> str:
    return json.dumps(json_ready(record), allow_nan=False, separators=(",", ":")) + "\n"


class EventLog:
    """Callback appending every event to ``path`` as one JSON line, flushed at once.

    path: the log file; its folder must exist. A new file gets the header line; an existing
        event log is appended to (its runs follow one another), anything else is refused.
    sample_every: steps between embedding samples written to the log (0: none; they are the
        heavy part of a log).
    The path is checked when the log is made (so a bad path fails before training, naming it);
    the file is created at the first event (a command that fails before training leaves none),
    and closed at each run's end (``FitFinished``/``FitFailed``); a later event reopens it.
    ``close()`` closes it early; the log is also a context manager. A log asks fits for the final
    metrics of ``FitFinished`` (``final_metrics``): whoever reads it elsewhere cannot compute them.
    """

    final_metrics = True

    def __init__(self, path: str | os.PathLike, *, sample_every: int = 0) -> None:
        self.path = Path(path)
        self.sample_every = int(sample_every)
        if self.sample_every < 0:
            raise InvalidParameter(f"sample_every={sample_every!r} is negative; use 0 (no samples) or a step count")
        if self.path.is_dir():
            raise InvalidParameter(f"event log {self.path} is a directory; name a file such as {self.path / 'run.jsonl'}")
        if not self.path.parent.is_dir():
            raise InvalidParameter(f"event log {self.path}: folder {self.path.parent} does not exist; create it first")
        if self.path.exists() and self.path.stat().st_size > 0:
            _check_header(self.path)  # appending to something that is not a log would corrupt it
        self._file = None

    def _open(self) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = open(self.path, "a", encoding="utf-8")
        if new:
            self._write({"kind": "header", "format": FORMAT, "version": VERSION, "wall_time": time.time(),
                         "pid": os.getpid(), "host": socket.gethostname()})

    def _write(self, record: dict) -> None:
        self._file.write(_line(record))
        self._file.flush()

    def __call__(self, event) -> None:
        if not isinstance(event, _Event):
            return
        if self._file is None:
            self._open()
        record = event.to_dict()
        record["wall_time"] = time.time()
        self._write(record)
        if isinstance(event, _END):
            self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EventLogDir:
    """Callback writing each run it sees to its own :class:`EventLog` in ``directory`` (a sweep's
    runs, or a dashboard's successive fits): ``<method>-M<M>-K<K>.jsonl``, with ``-2``, ``-3`` ...
    when that name is taken. The folder is created if missing. ``paths`` lists the logs written."""

    final_metrics = True  # as EventLog

    def __init__(self, directory: str | os.PathLike, *, sample_every: int = 0) -> None:
        self.directory = Path(directory)  # created at the first run
        if self.directory.exists() and not self.directory.is_dir():
            raise InvalidParameter(f"event log folder {self.directory} is a file; name a folder (it is created if missing)")
        if not self.directory.exists() and not self.directory.parent.is_dir():
            raise InvalidParameter(f"event log folder {self.directory}: its parent {self.directory.parent} does not "
                                   "exist; create it first")
        self.sample_every = int(sample_every)
        self.paths: list[Path] = []
        self._log: EventLog | None = None

    def __call__(self, event) -> None:
        if isinstance(event, FitStarted):
            if self._log is not None:
                self._log.close()
            self.directory.mkdir(exist_ok=True)  # at the first run: nothing is left by a command that fails before
            stem = f"{event.method}-M{event.n_subspaces}-K{event.n_codewords}"
            path, n = self.directory / f"{stem}.jsonl", 1
            while path.exists():
                n += 1
                path = self.directory / f"{stem}-{n}.jsonl"
            self._log = EventLog(path, sample_every=self.sample_every)
            self.paths.append(path)
        if self._log is not None:
            self._log(event)
            if isinstance(event, _END):
                self._log = None


def _check_header(path: Path) -> dict:
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
    try:
        header = json.loads(first)
    except (ValueError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict) or header.get("kind") != "header" or header.get("format") != FORMAT:
        raise DataFileError(f"{path}: not a PQ Explorer event log (its first line is not a {FORMAT} header); "
                            "give a file written by EventLog or `pqx train --events`")
    if int(header.get("version", 0)) > VERSION:
        raise DataFileError(f"{path}: event log version {header.get('version')} is newer than this library reads "
                            f"({VERSION}); upgrade pq-explorer")
    return header


class EventLogReader:
    """Incremental reader of an event log: each :meth:`poll` returns the events appended since
    the previous one. Only complete lines (ending in a newline) are parsed; a partial last line
    is kept for the next poll, so a file being written is read safely. ``finished`` turns True
    after a ``FitFinished``/``FitFailed``. A malformed complete line raises
    :class:`~explorer.errors.DataFileError` naming the file and line; a torn line is one that
    never gets its newline (the writer was killed), and :meth:`poll` with ``final=True`` drops it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.header: dict | None = None
        self.finished = False
        self.torn = False
        self._offset = 0
        self._partial = b""
        self._line_no = 0

    def poll(self, final: bool = False) -> list:
        """New events since the last poll (typed, see :meth:`explorer.events._Event.from_dict`)."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        if final and self._partial.strip():
            self.torn, self._partial = True, b""  # a writer killed mid-line: skipped, not fatal
        out = []
        for raw in lines:
            self._line_no += 1
            if not raw.strip():
                continue
            out.extend(self._parse(raw))
        return out

    def _parse(self, raw: bytes) -> list:
        try:
            record = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            record = None
        if self.header is None:
            if not isinstance(record, dict) or record.get("kind") != "header":
                _check_header(self.path)  # raises naming the file
            self.header = _check_header(self.path)
            return []
        if not isinstance(record, dict) or "kind" not in record:
            raise DataFileError(f"{self.path}, line {self._line_no}: not a JSON event ({raw[:60]!r}); "
                                "the log is corrupt there")
        if record["kind"] == "header":  # a second writer started appending: a new section, nothing to yield
            return []
        event = _Event.from_dict(record)
        if isinstance(event, FitStarted):
            self.finished = False
        if isinstance(event, _END):
            self.finished = True
        return [event]


def read_events(path: str | os.PathLike, follow: bool = False, timeout: float | None = None,
                poll_interval: float = 0.1) -> Iterator:
    """Yield the typed events of the event log at ``path``.

    follow=False: the events in the file now (a torn last line skipped), then stop.
    follow=True: tail a file another process is still writing (waiting for it to appear), until
    the run ends (``FitFinished`` or ``FitFailed``) or ``timeout`` seconds pass without a new
    event (None: wait as long as it takes). A file that is not an event log raises
    :class:`~explorer.errors.DataFileError` naming it.
    """
    path = Path(path)
    if not follow and not path.is_file():
        raise DataFileError(f"event log {path} does not exist; give the file passed to --events or EventLog")
    reader = EventLogReader(path)
    last_news = time.monotonic()
    while True:
        events = reader.poll(final=not follow)
        yield from events
        if not follow or reader.finished:
            return
        now = time.monotonic()
        if events:
            last_news = now
        elif timeout is not None and now - last_news >= timeout:
            return
        time.sleep(poll_interval)
