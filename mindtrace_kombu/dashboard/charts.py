"""Small charts drawn on the server as inline SVG: no script, no front-end build, no CDN."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["sparkline"]

WIDTH, HEIGHT, PAD = 160, 36, 2


def _polyline(times: Sequence[float], values: Sequence[float], top: float, css_class: str) -> str:
    start, span = times[0], (times[-1] - times[0]) or 1.0
    points = " ".join(
        f"{PAD + (t - start) / span * (WIDTH - 2 * PAD):.1f},{HEIGHT - PAD - v / top * (HEIGHT - 2 * PAD):.1f}"
        for t, v in zip(times, values)
    )
    return f'<polyline class="{css_class}" points="{points}"/>'


def sparkline(times: Sequence[float], series: dict[str, Sequence[float | None]], label: str) -> str:
    """An SVG line per series (CSS class = its name) over ``times``, on one scale from 0; a
    series with an unknown value is left out. Fewer than two points draw an empty frame."""
    drawn = {name: [float(v) for v in values if v is not None] for name, values in series.items()}
    drawn = {name: values for name, values in drawn.items() if len(values) == len(times) >= 2}
    top = max((max(values) for values in drawn.values()), default=0.0) or 1.0
    lines = "".join(_polyline(times, values, top, name) for name, values in drawn.items())
    return (
        f'<svg class="chart" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>{lines}</svg>'
    )
