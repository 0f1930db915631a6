"""Progress bars for the long commands (loads, syncs, batches): on a terminal only, and only once the
work has run a few seconds.

A log file or a pipe would collect every redraw of a bar, so a stream that is not a terminal gets
none; a bar that flashes for a quick command is noise, so each waits ``DELAY_S`` before it shows.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

DELAY_S = 2.0


def on_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_bar(
    total: float | None = None,
    *,
    desc: str,
    unit: str = "it",
    stream=None,
    delay: float | None = None,
    enabled: bool = True,
    **options,
) -> tqdm:
    """A tqdm bar on ``stream`` (stderr by default), silent unless it is a terminal (or not ``enabled``).

    Examples
    --------
    >>> import io
    >>> with progress_bar(3, desc="loading", stream=io.StringIO()) as bar:  # not a terminal: no output
    ...     bar.update(3)
    """
    stream = stream or sys.stderr
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=stream,
        delay=DELAY_S if delay is None else delay,
        disable=not enabled or not on_terminal(stream),
        dynamic_ncols=True,
        **options,
    )
