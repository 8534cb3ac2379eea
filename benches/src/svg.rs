//! Hand-written SVG plots: latency CDFs (log-x) and throughput bars (log-x).

use std::fmt::Write as _;

const PALETTE: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf",
];

/// One color per system (the label's first word), so a system keeps its color across plots;
/// a series of 2 workers or a pipeline is dashed (lighter bars).
fn style(label: &str, i: usize) -> (&'static str, &'static str) {
    let color = match label.split_whitespace().next().unwrap_or("") {
        "floor" => "#7f7f7f",
        "gardenstate" => "#2ca02c",
        "lmdb" => "#9467bd",
        "dashmap" => "#ff7f0e",
        "redis" => "#d62728",
        "memcached" => "#1f77b4",
        _ => PALETTE[i % PALETTE.len()],
    };
    let dash = if label.contains(" x2 ") || label.contains("pipelined") { "6,4" } else { "none" };
    (color, dash)
}

/// One legend line right of the plot: a stroke sample in the series' style and its label.
fn legend_entry(s: &mut String, (lx, ly): (f64, f64), color: &str, dash: &str, label: &str) {
    let _ = writeln!(
        s,
        r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-dasharray="{dash}" stroke-width="3"/>"#,
        lx + 22.0
    );
    let _ =
        writeln!(s, r#"<text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#, lx + 28.0, ly + 4.0, esc(label));
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn decade_label(v: f64, unit: &str) -> String {
    match unit {
        "ns" if v < 1e3 => format!("{v:.0} ns"),
        "ns" if v < 1e6 => format!("{:.0} µs", v / 1e3),
        "ns" if v < 1e9 => format!("{:.0} ms", v / 1e6),
        "ns" => format!("{:.0} s", v / 1e9),
        _ => crate::report::count(v),
    }
}

/// A log-10 axis from the decade below `lo` to the decade above `hi`.
struct LogAxis {
    lo: f64,
    hi: f64,
    x0: f64,
    width: f64,
}

impl LogAxis {
    fn new(lo: f64, hi: f64, x0: f64, width: f64) -> LogAxis {
        let lo = 10f64.powf(lo.max(1e-3).log10().floor());
        let hi = 10f64.powf(hi.max(lo * 10.0).log10().ceil());
        LogAxis { lo, hi, x0, width }
    }
    fn x(&self, v: f64) -> f64 {
        let f = (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10());
        self.x0 + f * self.width
    }
    fn decades(&self) -> Vec<f64> {
        let mut d = Vec::new();
        let mut v = self.lo;
        while v <= self.hi * 1.0001 {
            d.push(v);
            v *= 10.0;
        }
        d
    }
}

/// Cumulative distributions of latency, one line per series: (label, [(ns, fraction)]).
pub fn latency_cdf(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (w, h, left, right, top, bottom) = (1060.0, 540.0, 70.0, 360.0, 50.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let finite = series.iter().flat_map(|(_, c)| c.iter().map(|p| p.0)).filter(|v| v.is_finite() && *v > 0.0);
    let lo = finite.clone().fold(f64::INFINITY, f64::min);
    let hi = finite.fold(0.0, f64::max);
    let ax = LogAxis::new(if lo.is_finite() { lo } else { 1.0 }, hi.max(10.0), left, pw);
    let y = |f: f64| top + ph * (1.0 - f);
    let mut s = header(w, h, title);
    for d in ax.decades() {
        let x = ax.x(d);
        let _ =
            writeln!(s, r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##, top + ph);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"#,
            top + ph + 18.0,
            esc(&decade_label(d, "ns"))
        );
    }
    for f in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            y(f),
            left + pw,
            y(f)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{f}</text>"#,
            left - 6.0,
            y(f) + 4.0
        );
    }
    let _ =
        writeln!(s, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">latency per operation (log scale)</text>"#,
        left + pw / 2.0,
        h - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" font-size="13" transform="rotate(-90 18 {:.1})">fraction of operations</text>"#,
        top + ph / 2.0,
        top + ph / 2.0
    );
    for (i, (label, cdf)) in series.iter().enumerate() {
        let (color, dash) = style(label, i);
        let pts: Vec<String> = cdf
            .iter()
            .filter(|p| p.0.is_finite())
            .map(|&(v, f)| format!("{:.1},{:.1}", ax.x(v), y(f)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-dasharray="{dash}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        legend_entry(&mut s, (left + pw + 15.0, top + 10.0 + i as f64 * 20.0), color, dash, label);
    }
    s.push_str("</svg>\n");
    s
}

/// Horizontal bars on a log scale: (label, operations per second).
pub fn throughput_bars(title: &str, bars: &[(String, f64)]) -> String {
    let (w, left, right, top, bar, gap) = (1000.0, 390.0, 90.0, 50.0, 22.0, 8.0);
    let h = top + bars.len() as f64 * (bar + gap) + 60.0;
    let pw = w - left - right;
    let lo = bars.iter().map(|b| b.1).filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let hi = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let ax = LogAxis::new((if lo.is_finite() { lo } else { 1.0 }) / 2.0, hi.max(10.0), left, pw);
    let bottom = top + bars.len() as f64 * (bar + gap);
    let mut s = header(w, h, title);
    for d in ax.decades() {
        let x = ax.x(d);
        let _ = writeln!(s, r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom:.1}" stroke="#ddd"/>"##);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"#,
            bottom + 16.0,
            esc(&decade_label(d, "ops"))
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">operations per second (log scale)</text>"#,
        left + pw / 2.0,
        bottom + 40.0
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = top + i as f64 * (bar + gap);
        let (color, dash) = style(label, i);
        let opacity = if dash == "none" { "1" } else { "0.55" };
        let x1 = ax.x((*v).max(ax.lo));
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{y:.1}" width="{:.1}" height="{bar}" fill="{color}" fill-opacity="{opacity}"/>"#,
            (x1 - left).max(1.0)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}</text>"#,
            left - 8.0,
            y + bar / 2.0 + 4.0,
            esc(label)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="12">{}</text>"#,
            x1 + 5.0,
            y + bar / 2.0 + 4.0,
            esc(&crate::report::count(*v))
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A linear axis from 0 (or the lowest value, if negative) to a round value above `hi`.
struct LinAxis {
    lo: f64,
    hi: f64,
    x0: f64,
    width: f64,
}

impl LinAxis {
    fn new(lo: f64, hi: f64, x0: f64, width: f64) -> LinAxis {
        let lo = lo.min(0.0);
        let span = (hi - lo).max(1e-9);
        let step = 10f64.powf(span.log10().floor());
        let hi = lo + (span / step).ceil() * step;
        LinAxis { lo, hi, x0, width }
    }
    fn x(&self, v: f64) -> f64 {
        self.x0 + (v - self.lo) / (self.hi - self.lo) * self.width
    }
    fn ticks(&self) -> Vec<f64> {
        (0..=5).map(|i| self.lo + (self.hi - self.lo) * i as f64 / 5.0).collect()
    }
}

/// Either axis kind, so one plot function draws log or linear axes.
enum Axis {
    Log(LogAxis),
    Lin(LinAxis),
}

impl Axis {
    fn new(log: bool, lo: f64, hi: f64, x0: f64, width: f64) -> Axis {
        if log {
            Axis::Log(LogAxis::new(lo, hi, x0, width))
        } else {
            Axis::Lin(LinAxis::new(lo, hi, x0, width))
        }
    }
    fn at(&self, v: f64) -> f64 {
        match self {
            Axis::Log(a) => a.x(v),
            Axis::Lin(a) => a.x(v),
        }
    }
    fn ticks(&self) -> Vec<f64> {
        match self {
            Axis::Log(a) => a.decades(),
            Axis::Lin(a) => a.ticks(),
        }
    }
}

/// A tick label in the axis's unit: "ns" (latency), "B" (bytes), "%", "x" (ratio), or a count.
fn tick_label(v: f64, unit: &str) -> String {
    match unit {
        "ns" => decade_label(v, "ns"),
        "B" => crate::report::bytes(v.max(0.0) as u64),
        "%" => format!("{v:.0}%"),
        "x" => format!("{v:.1}x"),
        "s" => format!("{v:.0} s"),
        _ => crate::report::count(v),
    }
}

/// What a line plot shows: its title, axes (label, unit, log scale) and series.
pub struct Lines<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub x_unit: &'a str,
    pub log_x: bool,
    pub y_label: &'a str,
    pub y_unit: &'a str,
    pub log_y: bool,
    /// (label, [(x, y)]): a label ending in "p99" is drawn dashed, "floor" and the other
    /// systems keep their colors.
    pub series: &'a [(String, Vec<(f64, f64)>)],
}

/// Lines with markers, one per series, over a log or linear x and y (the curves of
/// `--curves`: latency against sessions, value size, fill level, workers, time).
pub fn lines(p: &Lines) -> String {
    let (w, h, left, right, top, bottom) = (1060.0, 540.0, 80.0, 330.0, 50.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let pts = || {
        p.series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|(x, y)| x.is_finite() && y.is_finite())
    };
    let ok = |v: f64, log: bool| !log || v > 0.0;
    let (xs, ys): (Vec<f64>, Vec<f64>) = pts().filter(|&(x, y)| ok(x, p.log_x) && ok(y, p.log_y)).unzip();
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() { (lo, hi.max(lo + 1e-9)) } else { (1.0, 10.0) }
    };
    let ((xlo, xhi), (ylo, yhi)) = (range(&xs), range(&ys));
    let ax = Axis::new(p.log_x, xlo, xhi, left, pw);
    let ay = Axis::new(p.log_y, ylo, yhi, 0.0, ph);
    let y = |v: f64| top + ph - ay.at(v);
    let mut s = header(w, h, p.title);
    for t in ax.ticks() {
        let x = ax.at(t);
        let _ =
            writeln!(s, r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##, top + ph);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text>"#,
            top + ph + 18.0,
            esc(&tick_label(t, p.x_unit))
        );
    }
    for t in ay.ticks() {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            y(t),
            left + pw,
            y(t)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}</text>"#,
            left - 6.0,
            y(t) + 4.0,
            esc(&tick_label(t, p.y_unit))
        );
    }
    let _ =
        writeln!(s, r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##);
    let scale = |log: bool| if log { " (log scale)" } else { "" };
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">{}{}</text>"#,
        left + pw / 2.0,
        h - 15.0,
        esc(p.x_label),
        scale(p.log_x)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" font-size="13" transform="rotate(-90 16 {:.1})">{}{}</text>"#,
        top + ph / 2.0,
        top + ph / 2.0,
        esc(p.y_label),
        scale(p.log_y)
    );
    for (i, (label, v)) in p.series.iter().enumerate() {
        // One color per series name without its percentile (p50 solid, p99 dashed), the
        // floor grey.
        let base = |l: &str| l.trim_end_matches(" p50").trim_end_matches(" p99").to_string();
        let mut names: Vec<String> =
            p.series.iter().map(|(l, _)| base(l)).filter(|l| !l.starts_with("floor")).collect();
        names.dedup();
        let color = match names.iter().position(|n| *n == base(label)) {
            _ if label.starts_with("floor") => "#7f7f7f",
            Some(k) => PALETTE[k % PALETTE.len()],
            None => PALETTE[i % PALETTE.len()],
        };
        let dash = if label.ends_with("p99") { "6,4" } else { "none" };
        let pts: Vec<(f64, f64)> = v
            .iter()
            .copied()
            .filter(|&(a, b)| a.is_finite() && b.is_finite() && ok(a, p.log_x) && ok(b, p.log_y))
            .map(|(a, b)| (ax.at(a), y(b)))
            .collect();
        let path: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-dasharray="{dash}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (a, b) in &pts {
            let _ = writeln!(s, r#"<circle cx="{a:.1}" cy="{b:.1}" r="3" fill="{color}"/>"#);
        }
        legend_entry(&mut s, (left + pw + 15.0, top + 10.0 + i as f64 * 20.0), color, dash, label);
    }
    s.push_str("</svg>\n");
    s
}

fn header(w: f64, h: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
        w / 2.0,
        esc(title)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_wellformed_enough() {
        let cdf = latency_cdf("t <1>", &[("a&b".into(), vec![(100.0, 0.0), (1000.0, 1.0)])]);
        assert!(cdf.starts_with("<svg") && cdf.trim_end().ends_with("</svg>"));
        assert!(cdf.contains("a&amp;b") && cdf.contains("t &lt;1&gt;"));
        let bars = throughput_bars("t", &[("x".into(), 1e6), ("y".into(), 2e4)]);
        assert_eq!(bars.matches("<rect").count(), 3);
        let series = [("gardenstate get p99".to_string(), vec![(1e4, 300.0), (1e7, 900.0)])];
        let plot = lines(&Lines {
            title: "t",
            x_label: "sessions",
            x_unit: "",
            log_x: true,
            y_label: "latency",
            y_unit: "ns",
            log_y: true,
            series: &series,
        });
        assert!(plot.contains("<polyline") && plot.contains("stroke-dasharray=\"6,4\""));
        assert_eq!(plot.matches("<circle").count(), 2);
    }
}
