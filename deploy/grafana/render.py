#!/usr/bin/env python3
"""Renders the panels of a Grafana dashboard JSON (deploy/grafana/raft-kv.json) as an HTML page,
with the data of a real Prometheus server: every panel's PromQL queries are run through
Prometheus's HTTP API (query_range) and drawn with Chart.js at the panel's grid position.

This is NOT Grafana (which is not in Debian's packages, so it cannot be installed on a machine
that reaches only Debian's, PyPI's and crates.io's registries): it is a stand-in that shows what the
dashboard's queries return, laid out like the dashboard. Only the standard library is used;
Chart.js comes from Debian's libjs-chart.js package and is inlined into the page.

Usage: render.py --prometheus http://127.0.0.1:9090 --dashboard raft-kv.json --minutes 10 --out page.html
"""
import argparse
import html
import json
import re
import sys
import time
import urllib.parse
import urllib.request

CHART_JS = ["/usr/share/javascript/chart.js/chart.umd.js", "/usr/share/javascript/chart.js/chart.min.js",
            "/usr/share/javascript/chart.js/chart.js"]
COLORS = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#f2495c", "#b877d9", "#8ab8ff", "#ffb357", "#37872d",
          "#e0b400", "#1f60c4", "#c4162a"]


def query_range(base, expr, start, end, step):
    url = base.rstrip("/") + "/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"query {expr!r}: {body}")
    return body["data"]["result"]


def legend(fmt, labels):
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt) or json.dumps(labels)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--prometheus", required=True)
    ap.add_argument("--dashboard", required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--step", type=float, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    dash = json.load(open(args.dashboard))
    end = time.time()
    start = end - args.minutes * 60
    js = None
    for path in CHART_JS:
        try:
            js = open(path).read()
            break
        except OSError:
            pass
    if js is None:
        sys.exit("Chart.js not found: apt-get install libjs-chart.js")
    panels = []
    for p in dash["panels"]:
        datasets = []
        for t in p.get("targets", []):
            for series in query_range(args.prometheus, t["expr"], start, end, args.step):
                pts = [{"x": float(ts), "y": (None if v in ("NaN", "+Inf", "-Inf") else float(v))}
                       for ts, v in series["values"]]
                datasets.append({"label": legend(t.get("legendFormat", ""), series["metric"]), "data": pts})
        for i, d in enumerate(datasets):
            d.update({"borderColor": COLORS[i % len(COLORS)], "backgroundColor": COLORS[i % len(COLORS)],
                      "borderWidth": 1.5, "pointRadius": 0, "spanGaps": False})
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "none")
        panels.append({"title": p["title"], "grid": p["gridPos"], "unit": unit, "datasets": datasets})
    cell_w, cell_h = 75, 32
    blocks = []
    for i, p in enumerate(panels):
        g = p["grid"]
        style = (f"left:{g['x'] * cell_w}px;top:{g['y'] * cell_h}px;width:{g['w'] * cell_w - 8}px;"
                 f"height:{g['h'] * cell_h - 8}px")
        blocks.append(f'<div class="panel" style="{style}"><div class="title">{html.escape(p["title"])}</div>'
                      f'<div class="chart"><canvas id="c{i}"></canvas></div></div>')
    height = max(p["grid"]["y"] + p["grid"]["h"] for p in panels) * cell_h
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(end))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(dash['title'])}</title>
<style>
body {{ background:#111217; color:#ccccdc; font-family:'DejaVu Sans',sans-serif; margin:0; padding:12px; }}
h1 {{ font-size:18px; margin:0 0 2px 0; }} .note {{ font-size:12px; color:#8e8e9e; margin-bottom:10px; }}
.grid {{ position:relative; width:{24 * cell_w}px; height:{height}px; }}
.panel {{ position:absolute; background:#181b1f; border:1px solid #2c3235; border-radius:3px; box-sizing:border-box; }}
.title {{ font-size:13px; font-weight:bold; padding:6px 8px 0 8px; }}
.chart {{ position:absolute; top:26px; bottom:4px; left:6px; right:6px; }}
</style><script>{js}</script></head><body>
<h1>{html.escape(dash['title'])}: {len(panels)} panels, last {args.minutes:g} min, {stamp}</h1>
<div class="note">The panels of deploy/grafana/raft-kv.json rendered by deploy/grafana/render.py (Chart.js) from the
dashboard's own PromQL queries against a Prometheus scraping a running raft-kv cluster. Not Grafana:
Grafana is not installable from the registries this machine reaches.</div>
<div class="grid">{''.join(blocks)}</div>
<script>
const panels = {json.dumps(panels)};
function fmt(unit, v) {{
  if (v === null || v === undefined) return '';
  const a = Math.abs(v);
  if (unit === 's') return a >= 1 ? v.toFixed(2) + ' s' : a >= 1e-3 ? (v * 1e3).toFixed(a >= 0.01 ? 0 : 1) + ' ms' : (v * 1e6).toFixed(0) + ' µs';
  if (unit === 'bytes') return a >= 1048576 ? (v / 1048576).toFixed(1) + ' MiB' : a >= 1024 ? (v / 1024).toFixed(0) + ' KiB' : v.toFixed(0) + ' B';
  const s = a >= 1e6 ? (v / 1e6).toFixed(1) + 'M' : a >= 1e3 ? (v / 1e3).toFixed(1) + 'k' : (Number.isInteger(v) ? v : v.toFixed(2)) + '';
  return unit === 'reqps' ? s + ' req/s' : unit === 'ops' ? s + '/s' : s;
}}
Chart.defaults.color = '#ccccdc'; Chart.defaults.font.size = 10; Chart.defaults.animation = false;
panels.forEach((p, i) => {{
  new Chart(document.getElementById('c' + i), {{
    type: 'line', data: {{ datasets: p.datasets }},
    options: {{ animation: false, maintainAspectRatio: false, parsing: false, normalized: true,
      plugins: {{ legend: {{ position: 'bottom', labels: {{ boxWidth: 10, padding: 4, font: {{ size: 9 }} }} }} }},
      scales: {{
        x: {{ type: 'linear', grid: {{ color: '#2c3235' }}, ticks: {{ maxTicksLimit: 6,
             callback: v => new Date(v * 1000).toISOString().substring(11, 19) }} }},
        y: {{ grid: {{ color: '#2c3235' }}, ticks: {{ maxTicksLimit: 5, callback: v => fmt(p.unit, v) }} }} }} }}
  }});
}});
</script></body></html>"""
    with open(args.out, "w") as f:
        f.write(page)
    empty = [p["title"] for p in panels if not any(d["data"] for d in p["datasets"])]
    print(f"wrote {args.out}: {len(panels)} panels" + (f"; without data: {empty}" if empty else ""))


if __name__ == "__main__":
    main()
