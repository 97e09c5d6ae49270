"""The dashboard's one stylesheet, served at :data:`STYLESHEET_PATH` (pages carry no inline style,
so the Content-Security-Policy can forbid it)."""

from __future__ import annotations

__all__ = ["STYLESHEET", "STYLESHEET_PATH"]

STYLESHEET_PATH = "/assets/dashboard.css"

STYLESHEET = """\
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1d2330; color: #fff; padding: .6em 1.2em; display: flex; gap: 1.5em; align-items: baseline; }
header strong { font-size: 1.1em; }
header a { color: #c9d3e6; text-decoration: none; }
header a.active { color: #fff; border-bottom: 2px solid #7fb0ff; }
header .broker { margin-left: auto; color: #8d99ae; font-size: .9em; }
main { padding: 1em 1.2em; }
h1 { font-size: 1.3em; margin: .2em 0 .8em; }
table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px #0002; }
th, td { padding: .35em .8em; border-bottom: 1px solid #e3e6eb; text-align: left; vertical-align: middle; }
th { background: #eef1f5; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
dl { display: grid; grid-template-columns: max-content auto; gap: .3em 1.2em; background: #fff; padding: 1em; }
dt { font-weight: 600; }
dd { margin: 0; }
pre { background: #fff; padding: .8em; overflow-x: auto; border: 1px solid #e3e6eb; }
form.inline { display: inline; }
input[type=text], input[type=password] { padding: .35em; min-width: 24em; }
button, a.button { padding: .35em .9em; border: 1px solid #43506b; background: #fff; color: #1d2330;
  border-radius: 3px; cursor: pointer; text-decoration: none; font: inherit; }
button.danger, a.button.danger { border-color: #b3261e; color: #b3261e; }
.notice { background: #e6f4ea; border: 1px solid #9cd3ac; padding: .5em .8em; margin-bottom: 1em; }
.warning { background: #fff4e5; border: 1px solid #f0c36d; padding: .5em .8em; margin-bottom: 1em; }
.muted { color: #6b7385; }
.status-completed { color: #1e7e34; } .status-failed { color: #b3261e; } .status-running { color: #1858b8; }
svg.chart { background: #fbfcfd; border: 1px solid #e3e6eb; }
svg.chart polyline { fill: none; stroke-width: 1.5; }
svg.chart polyline.ready { stroke: #1858b8; }
svg.chart polyline.in_flight { stroke: #e07b00; }
.legend-ready { color: #1858b8; } .legend-in_flight { color: #e07b00; }
"""
