#!/usr/bin/env python3
"""Tables and SVG charts from the bench's machine-readable output (standard library only).

    charts.py table SCALE.jsonl                 the scale bench's results as a Markdown table
    charts.py scale SCALE.jsonl OUT.svg         the scale figures against the data size
    charts.py throughput BENCH.json OUT.svg     throughput and p99 per scenario of one bench run

SCALE.jsonl is what `scripts/bench.sh --scale` writes (.data/bench-scale.jsonl), one object per
data size; BENCH.json is what `authd-bench --json FILE` writes.
"""

import json
import math
import sys
from html import escape

COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"]


def load_scale(path):
    with open(path) as f:
        runs = [json.loads(line) for line in f if line.strip()]
    if not runs:
        sys.exit(f"{path}: no results")
    return sorted(runs, key=lambda run: run["fraction"])


def scenario(run, part, name):
    for row in run[part]["scenarios"]:
        if row["scenario"] == name:
            return row
    return {}


def figures(run):
    """The per-call figures of one run: (label, value, unit, lower is better)."""
    return [
        ("login p50", scenario(run, "calls", "login").get("p50_ms"), "ms", True),
        ("ListUsers prefix p50", scenario(run, "calls", "list-users").get("p50_ms"), "ms", True),
        ("ListAuditEvents p50 (heavy user)", scenario(run, "calls", "list-audit").get("p50_ms"), "ms", True),
        ("… by a type it lacks", scenario(run, "calls", "list-audit-type").get("p50_ms"), "ms", True),
        ("hot Introspect", scenario(run, "load", "introspect-repeated").get("rps"), "/s", False),
    ]


def ratio(value, base, lower_is_better):
    """How much worse `value` is than `base` (1 = the same, 2 = twice as slow)."""
    if value is None or base in (None, 0) or value == 0:
        return None
    return value / base if lower_is_better else base / value


def table(path):
    runs = load_scale(path)
    base = figures(runs[0])
    head = ["users", "sessions", "live revocations", "audit events", "start-up", "RSS idle", "RSS peak"]
    head += [label for label, *_ in base]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---:" for _ in head) + "|")
    for run in runs:
        cells = [
            f"{run['users']:,}",
            f"{run['sessions']:,}",
            f"{run['live_revocations']:,}",
            f"{run['audit_events']:,}",
            f"{run['startup_s']:.2f} s",
            f"{run['idle_rss_mb']:.0f} MB",
            f"{run['peak_rss_mb']:.0f} MB",
        ]
        for (_, value, unit, lower), (_, first, _, _) in zip(figures(run), base):
            if value is None:
                cells.append("-")
                continue
            shown = f"{value:.2f} {unit}" if unit == "ms" else f"{value:,.0f}{unit}"
            r = ratio(value, first, lower)
            cells.append(shown if run is runs[0] or r is None else f"{shown} ({r:.2f}×)")
        print("| " + " | ".join(cells) + " |")
    print()
    print("(×: how much worse than the empty database; 1.00× is as fast.)")


class Svg:
    def __init__(self, width, height):
        self.width, self.height, self.parts = width, height, []

    def add(self, element):
        self.parts.append(element)

    def text(self, x, y, content, size=12, anchor="start", weight="normal", fill="#111827"):
        self.add(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}">{escape(str(content))}</text>'
        )

    def line(self, x1, y1, x2, y2, stroke="#d1d5db", width=1, dash=None):
        dashed = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" '
            f'stroke-width="{width}"{dashed}/>'
        )

    def write(self, path):
        body = "\n".join(self.parts)
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
                f'viewBox="0 0 {self.width} {self.height}" font-family="sans-serif">\n'
                f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n'
            )


def panel(svg, box, title, xs, series, y_label, goal=None, x_label="users"):
    """A line panel: `series` is [(label, [y or None per x])]; `goal` is (y, label)."""
    left, top, width, height = box
    values = [y for _, ys in series for y in ys if y is not None]
    if goal:
        values.append(goal[0])
    y_max = max(values) * 1.15 if values else 1
    x_max = max(xs) or 1

    def px(x):
        return left + width * x / x_max

    def py(y):
        return top + height - height * y / y_max

    svg.text(left, top - 12, title, size=14, weight="bold")
    svg.line(left, top + height, left + width, top + height, stroke="#6b7280")
    svg.line(left, top, left, top + height, stroke="#6b7280")
    for i in range(5):
        y = y_max * i / 4
        svg.line(left, py(y), left + width, py(y), stroke="#e5e7eb")
        svg.text(left - 6, py(y) + 4, f"{y:.2f}" if y_max < 10 else f"{y:.0f}", size=10, anchor="end", fill="#4b5563")
    for x in xs:
        svg.text(px(x), top + height + 16, f"{x / 1e6:g}M" if x >= 1e5 else f"{x:,}", size=10, anchor="middle")
    svg.text(left + width / 2, top + height + 32, x_label, size=11, anchor="middle", fill="#4b5563")
    svg.add(
        f'<text x="{left - 48:.1f}" y="{top + height / 2:.1f}" font-size="11" text-anchor="middle" '
        f'fill="#4b5563" transform="rotate(-90 {left - 48:.1f} {top + height / 2:.1f})">{escape(y_label)}</text>'
    )
    if goal:
        svg.line(left, py(goal[0]), left + width, py(goal[0]), stroke="#111827", dash="6 4")
        svg.text(left + width - 4, py(goal[0]) - 5, goal[1], size=10, anchor="end")
    for n, (label, ys) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        points = [(px(x), py(y)) for x, y in zip(xs, ys) if y is not None]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            svg.add(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, y in points:
            svg.add(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>')
        # The legend goes under the panel, clear of the lines.
        svg.add(f'<rect x="{left}" y="{top + height + 44 + n * 16}" width="10" height="10" fill="{colour}"/>')
        svg.text(left + 16, top + height + 53 + n * 16, label, size=11)


def scale(path, out):
    runs = load_scale(path)
    xs = [run["users"] if run["fraction"] > 0 else 0 for run in runs]
    base = figures(runs[0])
    relative = []
    for i, (label, *_rest) in enumerate(base):
        ys = [ratio(figures(run)[i][1], base[i][1], base[i][3]) for run in runs]
        relative.append((label, ys))
    svg = Svg(1000, 430)
    panel(svg, (70, 40, 380, 250), "Per call, relative to the empty database", xs, relative, "× empty", (1.5, "goal 1.5×"))
    memory = [("RSS idle", [run["idle_rss_mb"] for run in runs]), ("RSS peak", [run["peak_rss_mb"] for run in runs])]
    panel(svg, (560, 40, 170, 250), "Memory (MB)", xs, memory, "MB", (150, "150 MB"))
    panel(svg, (800, 40, 170, 250), "Start-up (s)", xs, [("to SERVING", [run["startup_s"] for run in runs])], "s", (3, "3 s"))
    svg.write(out)


def throughput(path, out):
    with open(path) as f:
        run = json.load(f)
    rows = [row for row in run["scenarios"] if row.get("rps")]
    bar_h, gap, left, top = 18, 10, 260, 50
    height = top + len(rows) * (bar_h + gap) + 50
    svg = Svg(1000, height)
    svg.text(20, 24, f"authd-bench, {run['cores']} cores: throughput (log scale) and p99 per scenario", size=14, weight="bold")
    width = 560
    if not rows:
        sys.exit(f"{path}: no scenario with a throughput")
    top_rps = max(row["rps"] for row in rows)
    decades = max(1, math.ceil(math.log10(max(top_rps, 10))))

    def px(rps):
        return left + width * math.log10(max(rps, 1)) / decades

    for d in range(decades + 1):
        x = left + width * d / decades
        svg.line(x, top - 6, x, height - 40, stroke="#e5e7eb")
        svg.text(x, height - 24, f"{10 ** d:,}/s", size=10, anchor="middle", fill="#4b5563")
    for n, row in enumerate(rows):
        y = top + n * (bar_h + gap)
        svg.text(left - 8, y + 13, row["scenario"], size=11, anchor="end")
        svg.add(f'<rect x="{left}" y="{y}" width="{px(row["rps"]) - left:.1f}" height="{bar_h}" fill="{COLOURS[0]}"/>')
        p99 = row.get("p99_ms")
        detail = f"{row['rps']:,.0f}/s" + (f", p99 {p99:.2f} ms" if p99 is not None else f", {row['mean_us']:.1f} µs per call")
        svg.text(px(row["rps"]) + 6, y + 13, detail, size=11)
    svg.write(out)


def main(argv):
    if len(argv) == 3 and argv[1] == "table":
        table(argv[2])
    elif len(argv) == 4 and argv[1] == "scale":
        scale(argv[2], argv[3])
    elif len(argv) == 4 and argv[1] == "throughput":
        throughput(argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
