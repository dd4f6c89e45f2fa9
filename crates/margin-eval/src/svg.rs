//! Just enough of a plotting library for the evaluation report: line, bar and
//! scatter charts as standalone SVG, with axes, ticks, gridlines and a legend.
//! Drawn here rather than by a JavaScript library so that the report is one
//! file that opens anywhere, offline.

use std::fmt::Write;

/// Okabe–Ito colours: told apart with the common colour-vision deficiencies.
pub const PALETTE: [&str; 7] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000",
];

/// A colour of the palette for the `i`-th series.
pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 340.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 52.0;

/// One axis: its range, scale, label and labelled ticks.
#[derive(Debug, Clone)]
pub struct Axis {
    min: f64,
    max: f64,
    log: bool,
    label: String,
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// A linear axis over `min..=max` with `ticks` evenly spaced labelled ticks
    /// (labels from `format`).
    pub fn linear(
        label: &str,
        min: f64,
        max: f64,
        ticks: usize,
        format: fn(f64) -> String,
    ) -> Axis {
        let max = if max > min { max } else { min + 1.0 };
        let ticks = (0..=ticks)
            .map(|i| {
                let v = min + (max - min) * i as f64 / ticks.max(1) as f64;
                (v, format(v))
            })
            .collect();
        Axis {
            min,
            max,
            log: false,
            label: label.into(),
            ticks,
        }
    }

    /// A logarithmic axis with a tick at each of `values` (all above 0).
    pub fn log(label: &str, values: &[f64]) -> Axis {
        let min = values
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .max(f64::MIN_POSITIVE);
        let max = values.iter().copied().fold(min, f64::max);
        Axis {
            min,
            max: if max > min { max } else { min * 10.0 },
            log: true,
            label: label.into(),
            ticks: values.iter().map(|&v| (v, format!("{v}"))).collect(),
        }
    }

    /// An axis of named categories, one unit wide each, ticks at their middles.
    pub fn categories(label: &str, names: &[String]) -> Axis {
        Axis {
            min: 0.0,
            max: names.len().max(1) as f64,
            log: false,
            label: label.into(),
            ticks: names
                .iter()
                .enumerate()
                .map(|(i, n)| (i as f64 + 0.5, n.clone()))
                .collect(),
        }
    }

    /// Where `v` falls, 0 at `min` and 1 at `max`.
    fn fraction(&self, v: f64) -> f64 {
        if self.log {
            (v.max(self.min).ln() - self.min.ln()) / (self.max.ln() - self.min.ln())
        } else {
            (v - self.min) / (self.max - self.min)
        }
    }
}

/// A chart being drawn: marks in data coordinates, rendered with [`Chart::render`].
pub struct Chart {
    title: String,
    x: Axis,
    y: Axis,
    marks: String,
    legend: Vec<(String, &'static str, bool)>,
}

impl Chart {
    /// An empty chart.
    pub fn new(title: &str, x: Axis, y: Axis) -> Chart {
        Chart {
            title: title.into(),
            x,
            y,
            marks: String::new(),
            legend: Vec::new(),
        }
    }

    /// Horizontal pixel of data `x`.
    pub fn px(&self, x: f64) -> f64 {
        LEFT + self.x.fraction(x).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    /// Vertical pixel of data `y` (SVG's y grows downwards).
    pub fn py(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - self.y.fraction(y).clamp(0.0, 1.0) * (HEIGHT - TOP - BOTTOM)
    }

    /// A polyline through `points` with a dot on each; dashed if asked.
    pub fn line(&mut self, label: &str, colour: &'static str, dashed: bool, points: &[(f64, f64)]) {
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect();
        let dash = if dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            self.marks,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in points {
            let _ = write!(
                self.marks,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: {} → {:.3}</title></circle>"#,
                self.px(x),
                self.py(y),
                escape(label),
                x,
                y
            );
        }
        self.legend.push((label.into(), colour, dashed));
    }

    /// A bar from the x axis up to `y`, spanning `x0..x1`, with a tooltip.
    pub fn bar(&mut self, x0: f64, x1: f64, y: f64, colour: &'static str, tooltip: &str) {
        let (left, right) = (self.px(x0), self.px(x1));
        let (top, base) = (self.py(y), self.py(self.y.min));
        let _ = write!(
            self.marks,
            r#"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{}</title></rect>"#,
            (right - left).max(0.0),
            (base - top).max(0.0),
            escape(tooltip)
        );
    }

    /// Dots at `points` (a scatter series).
    pub fn points(&mut self, label: &str, colour: &'static str, points: &[(f64, f64)]) {
        for &(x, y) in points {
            let _ = write!(
                self.marks,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}" fill-opacity="0.55"/>"#,
                self.px(x),
                self.py(y)
            );
        }
        self.legend.push((label.into(), colour, false));
    }

    /// A thin dashed reference line between two data points.
    pub fn guide(&mut self, from: (f64, f64), to: (f64, f64)) {
        let _ = write!(
            self.marks,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#888" stroke-dasharray="3 3"/>"##,
            self.px(from.0),
            self.py(from.1),
            self.px(to.0),
            self.py(to.1)
        );
    }

    /// A legend entry without a mark of its own (bars coloured by series).
    pub fn legend(&mut self, label: &str, colour: &'static str) {
        self.legend.push((label.into(), colour, false));
    }

    /// The chart as an `<svg>` element.
    pub fn render(&self) -> String {
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{0}"><title>{0}</title>"#,
            escape(&self.title)
        );
        let (x0, x1) = (LEFT, WIDTH - RIGHT);
        let (y0, y1) = (HEIGHT - BOTTOM, TOP);
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="20" text-anchor="middle" class="chart-title">{}</text>"#,
            (x0 + x1) / 2.0,
            escape(&self.title)
        );
        for (v, label) in &self.y.ticks {
            let y = self.py(*v);
            let _ = write!(
                svg,
                r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ccc" stroke-width="0.5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                x0 - 6.0,
                y + 4.0,
                escape(label)
            );
        }
        for (v, label) in &self.x.ticks {
            let x = self.px(*v);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{:.1}" stroke="#888"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                y0 + 5.0,
                y0 + 18.0,
                escape(label)
            );
        }
        let _ = write!(
            svg,
            r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#888"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#888"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
            (x0 + x1) / 2.0,
            HEIGHT - 12.0,
            escape(&self.x.label),
            (y0 + y1) / 2.0,
            escape(&self.y.label)
        );
        svg.push_str(&self.marks);
        for (i, (label, colour, dashed)) in self.legend.iter().enumerate() {
            let y = TOP + 8.0 + 18.0 * i as f64;
            let dash = if *dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = write!(
                svg,
                r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{colour}" stroke-width="3"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
                x1 + 12.0,
                x1 + 32.0,
                x1 + 38.0,
                y + 4.0,
                escape(label)
            );
        }
        svg.push_str("</svg>");
        svg
    }
}

/// Text made safe for XML and HTML content and attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_maps_into_the_plot_area() {
        let chart = Chart::new(
            "t",
            Axis::log("k", &[1.0, 10.0, 100.0]),
            Axis::linear("recall", 0.0, 1.0, 5, |v| format!("{v}")),
        );
        assert_eq!(chart.px(1.0), LEFT);
        assert_eq!(chart.px(100.0), WIDTH - RIGHT);
        // Log scale: 10 lies halfway between 1 and 100.
        assert!((chart.px(10.0) - (LEFT + (WIDTH - LEFT - RIGHT) / 2.0)).abs() < 1e-9);
        assert_eq!(chart.py(0.0), HEIGHT - BOTTOM);
        assert_eq!(chart.py(1.0), TOP);
        // Out of range stays on the plot.
        assert_eq!(chart.py(2.0), TOP);
    }

    #[test]
    fn renders_well_formed_svg_with_escaped_text() {
        let mut chart = Chart::new(
            "EM & F1 <by mode>",
            Axis::categories("mode", &["a\"b".into(), "c".into()]),
            Axis::linear("%", 0.0, 100.0, 4, |v| format!("{v:.0}")),
        );
        chart.bar(0.1, 0.9, 40.0, colour(0), "a: 40 < 50");
        chart.line("series's", colour(1), true, &[(0.5, 10.0), (1.5, 90.0)]);
        chart.points("dots", colour(2), &[(1.0, 50.0)]);
        chart.guide((0.0, 0.0), (2.0, 100.0));
        let svg = chart.render();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(root.attribute("aria-label"), Some("EM & F1 <by mode>"));
        let texts: Vec<&str> = root
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .collect();
        assert!(
            texts.contains(&"a\"b") && texts.contains(&"series's"),
            "{texts:?}"
        );
        assert_eq!(
            root.descendants()
                .filter(|n| n.has_tag_name("rect"))
                .count(),
            1
        );
        assert_eq!(
            root.descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .count(),
            1
        );
    }
}
