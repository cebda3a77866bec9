"""Stacked bar charts of usage over time, drawn as inline SVG by the report's template.

Only the geometry is computed here; admin/apikeys/usagereport/chart.html writes the
<svg>. No script and no network: the chart is part of the page, the same in any browser.
"""

from dataclasses import dataclass

# Sizes in SVG user units; the drawing scales to the width of the page.
WIDTH = 960
HEIGHT = 200
# Room left of the plot for the y labels, below it for the x labels, above it for the
# top label.
LEFT = 48
BOTTOM = 22
TOP = 10
# Share of each bucket's slot a bar fills; the rest is the gap between bars.
BAR_FILL = 0.8
# At most this many time labels under the bars, so that they never overlap.
MAX_X_LABELS = 12


@dataclass
class Series:
    name: str
    css_class: str
    values: list


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    css_class: str
    title: str


@dataclass
class Label:
    x: float
    y: float
    text: str


@dataclass
class BarChart:
    title: str
    bars: list
    grid: list  # Label of each horizontal line; its y is the line's
    x_labels: list
    legend: list  # Series, for their names and colours
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def plot_left(self):
        return LEFT

    @property
    def plot_right(self):
        return self.width


def stacked_bar_chart(title, labels, series, tooltips):
    """Return a chart with one bar per label, the series stacked bottom to top.

    `labels` name each bucket under the axis (empty to leave it unlabelled), `tooltips`
    in full, and each Series has one value per bucket.
    """
    count = len(labels)
    totals = [sum(s.values[i] for s in series) for i in range(count)]
    top = nice_ceiling(max(totals, default=0))
    plot_height = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT) / max(count, 1)
    bar_width = max(slot * BAR_FILL, 1)

    def y_of(value):
        return TOP + plot_height * (1 - value / top)

    bars = []
    for i in range(count):
        x = LEFT + slot * i + (slot - bar_width) / 2
        base = 0
        for s in series:
            value = s.values[i]
            if value:
                bars.append(
                    Bar(
                        x=round(x, 2),
                        y=round(y_of(base + value), 2),
                        width=round(bar_width, 2),
                        height=round(plot_height * value / top, 2),
                        css_class=s.css_class,
                        title=f"{tooltips[i]}: {value:,} {s.name}",
                    )
                )
            base += value

    grid = [Label(LEFT - 6, round(y_of(v), 2), compact(v)) for v in (0, top / 2, top)]
    step = max(1, -(-count // MAX_X_LABELS))
    x_labels = [
        Label(round(LEFT + slot * i + slot / 2, 2), HEIGHT - 6, labels[i])
        for i in range(0, count, step)
        if labels[i]
    ]
    return BarChart(title, bars, grid, x_labels, series)


def nice_ceiling(value):
    """Return the smallest of 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 15... that is at least `value`."""
    ceiling = 1
    while True:
        for factor in (1, 1.5, 2, 3, 4, 5, 6, 8):
            if ceiling * factor >= value:
                return ceiling * factor
        ceiling *= 10


def compact(value):
    """Write an axis number short: 950, 1.5k, 20k, 3M."""
    value = int(value) if value == int(value) else value
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:g}"
