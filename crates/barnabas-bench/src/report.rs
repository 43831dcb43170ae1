//! The report: `docs/benchmarks.md`'s generated section and its SVG plots, from a run's
//! results.
//!
//! The plots are drawn with plotters' SVG backend and no font feature: text goes into the
//! SVG as `<text>` elements for the viewer to lay out, so rendering needs no system fonts
//! (plotters only estimates text widths for its own layout).

use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use plotters::chart::MeshStyle;
use plotters::coord::ranged1d::{SegmentValue, SegmentedCoord, ValueFormatter};
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::{Connections, Latency, RunResults, Throughput};

/// The line that opens the generated section of `benchmarks.md`.
const BEGIN: &str = "<!-- bench:begin -->";
/// The line that closes the generated section of `benchmarks.md`.
const END: &str = "<!-- bench:end -->";

/// Plot file names under `docs_dir/bench/`, as linked from the markdown.
const THROUGHPUT_SVG: &str = "throughput.svg";
/// See [`THROUGHPUT_SVG`].
const LATENCY_SVG: &str = "latency.svg";
/// See [`THROUGHPUT_SVG`].
const CONNECTIONS_SVG: &str = "connections.svg";

/// Font family named in the SVGs (the viewer picks the actual font).
const FONT: &str = "sans-serif";
/// Width of every plot, pixels.
const WIDTH: u32 = 900;

/// Gateway bars compared with the direct Kafka producer only.
const VS_DIRECT_COLOUR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// Gateway bars also compared with mosquitto.
const VS_MOSQUITTO_COLOUR: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);
/// The direct Kafka producer's bar.
const DIRECT_COLOUR: RGBColor = RGBColor(0x7f, 0x7f, 0x7f);
/// mosquitto's bars.
const MOSQUITTO_COLOUR: RGBColor = RGBColor(0xff, 0x7f, 0x0e);
/// Line colours, one per series, in order.
const LINE_COLOURS: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Writes the plots under `docs_dir/bench/` and the generated section of
/// `docs_dir/benchmarks.md`.
///
/// Exists so that a run (or a saved `--json` of one) turns into the published benchmark
/// page in one step, with the hand-written prose around the generated section left as is.
/// A section with no rows gets no plot (a stale plot of that name is removed) and the
/// markdown says the scenario was not run.
pub fn render(results: &RunResults, docs_dir: &Path) -> Result<()> {
    let bench_dir = docs_dir.join("bench");
    fs::create_dir_all(&bench_dir).with_context(|| format!("creating {}", bench_dir.display()))?;

    let plots = Plots {
        throughput: write_plot(
            &bench_dir.join(THROUGHPUT_SVG),
            throughput_svg(&results.throughput, results.payload_bytes)?,
        )?,
        latency: write_plot(&bench_dir.join(LATENCY_SVG), latency_svg(&results.latency)?)?,
        connections: write_plot(
            &bench_dir.join(CONNECTIONS_SVG),
            connections_svg(&results.connections)?,
        )?,
    };

    let md_path = docs_dir.join("benchmarks.md");
    let existing = match fs::read_to_string(&md_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", md_path.display())),
    };
    let section = section(results, &plots)?;
    let text = splice(existing.as_deref(), &section)
        .with_context(|| format!("updating {}", md_path.display()))?;
    fs::write(&md_path, text).with_context(|| format!("writing {}", md_path.display()))?;
    Ok(())
}

/// Which plots were written, so the markdown embeds only those.
struct Plots {
    throughput: bool,
    latency: bool,
    connections: bool,
}

/// Writes `svg` to `path`, or, when there is nothing to plot, removes a stale plot left by
/// an earlier run (so the directory matches the markdown). Returns whether a plot exists.
fn write_plot(path: &Path, svg: Option<String>) -> Result<bool> {
    match svg {
        Some(svg) => {
            fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
            Ok(true)
        }
        None => match fs::remove_file(path) {
            Ok(()) => Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("removing stale {}", path.display())),
        },
    }
}

/// How a throughput row's bar is coloured: what it is compared against, or which baseline
/// it is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BarKind {
    /// A gateway scenario compared with the direct Kafka producer only.
    VsDirect,
    /// A gateway scenario compared with mosquitto (as well as, or instead of, direct).
    VsMosquitto,
    /// The direct Kafka producer (or any other row with nothing to divide by).
    DirectBaseline,
    /// mosquitto itself.
    MosquittoBaseline,
}

impl BarKind {
    /// All kinds, in legend order.
    const ALL: [Self; 4] = [
        Self::VsDirect,
        Self::VsMosquitto,
        Self::DirectBaseline,
        Self::MosquittoBaseline,
    ];

    fn of(row: &Throughput) -> Self {
        let mosquitto_baseline = row
            .baseline
            .as_deref()
            .is_some_and(|b| b.starts_with("mosquitto"));
        if row.scenario.starts_with("mosquitto") {
            Self::MosquittoBaseline
        } else if mosquitto_baseline || row.vs_mosquitto.is_some() {
            Self::VsMosquitto
        } else if row.baseline.is_some() {
            Self::VsDirect
        } else {
            Self::DirectBaseline
        }
    }

    fn colour(self) -> RGBColor {
        match self {
            Self::VsDirect => VS_DIRECT_COLOUR,
            Self::VsMosquitto => VS_MOSQUITTO_COLOUR,
            Self::DirectBaseline => DIRECT_COLOUR,
            Self::MosquittoBaseline => MOSQUITTO_COLOUR,
        }
    }

    fn legend(self) -> &'static str {
        match self {
            Self::VsDirect => "gateway, ratio to direct",
            Self::VsMosquitto => "gateway, ratio to mosquitto too",
            Self::DirectBaseline => "direct Kafka producer (baseline)",
            Self::MosquittoBaseline => "mosquitto (baseline)",
        }
    }
}

/// The drawing area of one SVG plot.
type Root<'s> = DrawingArea<SVGBackend<'s>, Shift>;

/// The throughput plot's chart: x = msgs/s, y = one segment per row.
type BarChart<'a, 's> =
    ChartContext<'a, SVGBackend<'s>, Cartesian2d<RangedCoordf64, SegmentedCoord<RangedCoordi32>>>;

/// An SVG of `size` pixels on white, drawn by `draw`: the frame every plot shares.
fn svg_plot(size: (u32, u32), draw: impl FnOnce(&Root<'_>) -> Result<()>) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(svg)
}

/// A chart on `root` laid out like every plot (caption, margin, x label band), with
/// `y_label_px` pixels for the y labels; the caller picks the coordinates.
fn chart_on<'a, 'b, 's>(
    root: &'a Root<'s>,
    caption: &str,
    y_label_px: u32,
) -> ChartBuilder<'a, 'b, SVGBackend<'s>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(y_label_px);
    builder
}

/// `chart`'s mesh with its labels in the plots' fonts; the caller adds its axes' texts and
/// draws it.
fn styled_mesh<'a, 'c, 's, X, Y>(
    chart: &'c mut ChartContext<'a, SVGBackend<'s>, Cartesian2d<X, Y>>,
) -> MeshStyle<'a, 'c, X, Y, SVGBackend<'s>>
where
    X: Ranged + ValueFormatter<X::ValueType>,
    Y: Ranged + ValueFormatter<Y::ValueType>,
{
    let mut mesh = chart.configure_mesh();
    mesh.label_style((FONT, 13)).axis_desc_style((FONT, 14));
    mesh
}

/// Draws `chart`'s legend at `position`, boxed the same in every plot.
fn draw_legend<'a, 's: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'s>, CT>,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Draws one line of a line plot, in `colour`, with its legend entry `label`.
fn draw_line<X, Y>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<X, Y>>,
    points: impl IntoIterator<Item = (f64, f64)>,
    colour: RGBColor,
    label: impl Into<String>,
) -> Result<()>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    Ok(())
}

/// The colour of the `i`th line of a plot.
fn line_colour(i: usize) -> RGBColor {
    LINE_COLOURS[i % LINE_COLOURS.len()]
}

/// Horizontal bars of msgs/s, one per scenario in run order (first on top), each labelled
/// with its rate and its ratio to its baseline. `None` when there are no rows.
fn throughput_svg(rows: &[Throughput], payload_bytes: usize) -> Result<Option<String>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let kinds: Vec<BarKind> = BarKind::ALL
        .into_iter()
        .filter(|k| rows.iter().any(|r| BarKind::of(r) == *k))
        .collect();
    let layout = BarLayout::of(rows, kinds.len());
    let caption = format!("Produce throughput, {payload_bytes}-byte payloads");
    let svg = svg_plot((WIDTH, layout.height), |root| {
        let segments = i32::try_from(layout.segments).unwrap_or(i32::MAX);
        let mut chart = chart_on(root, &caption, layout.label_px)
            .build_cartesian_2d(0f64..layout.x_max, (0..segments).into_segmented())?;
        styled_mesh(&mut chart)
            .disable_y_mesh()
            .x_max_light_lines(1)
            .y_labels(layout.segments)
            .y_label_formatter(&|v| layout.name_at(rows, v))
            .x_label_formatter(&|v| thousands(*v))
            .x_desc("messages / s")
            .draw()?;
        for kind in &kinds {
            draw_bars(&mut chart, rows, &layout, *kind)?;
        }
        draw_bar_labels(&mut chart, rows, &layout)?;
        draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
    })?;
    Ok(Some(svg))
}

/// The throughput plot's geometry: a row of [`BarLayout::ROW_PX`] per bar, the first on
/// top, under empty rows that keep the legend clear of the bars.
struct BarLayout {
    /// Bars, one per throughput row.
    bars: usize,
    /// Rows of the y axis: the bars, then the empty ones above them.
    segments: usize,
    /// The plot's height, pixels.
    height: u32,
    /// The x axis' end: room right of the longest bar for its label.
    x_max: f64,
    /// Width of the scenario names' band, pixels.
    label_px: u32,
}

impl BarLayout {
    /// Height of one bar's row, pixels.
    const ROW_PX: usize = 36;

    /// The layout for `rows` under a legend of `legend_entries` entries.
    fn of(rows: &[Throughput], legend_entries: usize) -> Self {
        // The empty rows on top hold the legend (about 20 px an entry).
        let legend_rows = (legend_entries * 20 + 16).div_ceil(Self::ROW_PX);
        let segments = rows.len() + legend_rows;
        let max = rows
            .iter()
            .map(|r| finite_or_zero(r.msgs_per_s))
            .fold(0.0, f64::max);
        let name_chars = rows
            .iter()
            .map(|r| r.scenario.chars().count())
            .max()
            .unwrap_or(0);
        Self {
            bars: rows.len(),
            segments,
            height: u32::try_from(120 + segments * Self::ROW_PX).unwrap_or(u32::MAX),
            x_max: if max > 0.0 { max * 1.6 } else { 1.0 },
            label_px: u32::try_from(20 + name_chars * 8).unwrap_or(200),
        }
    }

    /// The y segment of row `i`: segments count from the bottom, the first row is on top.
    fn segment_of(&self, i: usize) -> i32 {
        i32::try_from(self.bars - 1 - i).unwrap_or(0)
    }

    /// The y axis label at `v`: the scenario of the bar centred there, none elsewhere (the
    /// segments at or above `bars` are the legend's).
    fn name_at(&self, rows: &[Throughput], v: &SegmentValue<i32>) -> String {
        match v {
            SegmentValue::CenterOf(y) => usize::try_from(*y)
                .ok()
                .filter(|y| *y < self.bars)
                .map(|y| rows[self.bars - 1 - y].scenario.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        }
    }
}

/// The bars of the rows of one `kind`, in its colour, with its legend entry.
fn draw_bars(
    chart: &mut BarChart<'_, '_>,
    rows: &[Throughput],
    layout: &BarLayout,
    kind: BarKind,
) -> Result<()> {
    let bars = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| BarKind::of(r) == kind)
        .map(|(i, r)| {
            let y = layout.segment_of(i);
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (finite_or_zero(r.msgs_per_s), SegmentValue::Exact(y + 1)),
                ],
                kind.colour().filled(),
            );
            bar.set_margin(7, 7, 0, 0);
            bar
        });
    let colour = kind.colour();
    chart
        .draw_series(bars)?
        .label(kind.legend())
        .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], colour.filled()));
    Ok(())
}

/// Each bar's [`bar_label`], just right of its end.
fn draw_bar_labels(
    chart: &mut BarChart<'_, '_>,
    rows: &[Throughput],
    layout: &BarLayout,
) -> Result<()> {
    let label_style =
        TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        EmptyElement::at((
            finite_or_zero(r.msgs_per_s),
            SegmentValue::CenterOf(layout.segment_of(i)),
        )) + Text::new(bar_label(r), (6, 0), label_style.clone())
    }))?;
    Ok(())
}

/// A bar's label: its rate and its ratios to its baselines
/// (`41,230 msgs/s · 0.82× direct · 0.69× mosquitto-qos1`).
fn bar_label(row: &Throughput) -> String {
    let mut label = format!("{} msgs/s", thousands(row.msgs_per_s));
    if let (Some(ratio), Some(baseline)) =
        (row.ratio.filter(|r| r.is_finite()), row.baseline.as_deref())
    {
        label.push_str(&format!(" · {ratio:.2}× {baseline}"));
    }
    if let Some(vs) = row.vs_mosquitto.filter(|r| r.is_finite()) {
        label.push_str(&format!(" · {vs:.2}× {}", mosquitto_for(&row.scenario)));
    }
    label
}

/// The mosquitto scenario an MQTT scenario is set against (same QoS suffix).
fn mosquitto_for(scenario: &str) -> String {
    match scenario.rfind("-qos") {
        Some(at) => format!("mosquitto{}", &scenario[at..]),
        None => "mosquitto".to_string(),
    }
}

/// Latency CDFs, one line per (protocol, kind) row, x = ms on a log scale. `None` when no
/// row has a CDF point.
fn latency_svg(rows: &[Latency]) -> Result<Option<String>> {
    let Some((x_lo, x_hi)) = latency_axis(rows) else {
        return Ok(None);
    };
    let svg = svg_plot((WIDTH, 540), |root| {
        let mut chart = chart_on(root, "Latency CDF", 60)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), 0f64..1.0)?;
        styled_mesh(&mut chart)
            .x_desc("latency, ms (log scale)")
            .y_desc("fraction of messages at or below")
            .x_label_formatter(&|v| axis_number(*v))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()?;
        for (i, row) in rows.iter().enumerate() {
            let points: Vec<(f64, f64)> = row
                .cdf
                .iter()
                .filter(|(f, ms)| f.is_finite() && ms.is_finite())
                .map(|&(fraction, ms)| (ms.max(x_lo), fraction.clamp(0.0, 1.0)))
                .collect();
            if points.is_empty() {
                continue;
            }
            let rate = thousands(row.rate as f64);
            let label = format!("{} {} @ {rate}/s", row.protocol, row.kind);
            draw_line(&mut chart, points, line_colour(i), label)?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
    })?;
    Ok(Some(svg))
}

/// The latency plot's x range: whole decades around every positive CDF point (at least one
/// decade). `None` when there is no such point.
fn latency_axis(rows: &[Latency]) -> Option<(f64, f64)> {
    let positive = || {
        rows.iter()
            .flat_map(|r| r.cdf.iter())
            .map(|(_, ms)| *ms)
            .filter(|ms| ms.is_finite() && *ms > 0.0)
    };
    let (lo, hi) = (positive().reduce(f64::min)?, positive().reduce(f64::max)?);
    let x_lo = 10f64.powf(lo.log10().floor());
    let mut x_hi = 10f64.powf(hi.log10().ceil());
    if x_hi <= x_lo {
        x_hi = x_lo * 10.0;
    }
    Some((x_lo, x_hi))
}

/// Server RSS against connections held open, one line per server, starting at
/// (0, RSS before). `None` when there are no rows.
fn connections_svg(rows: &[Connections]) -> Result<Option<String>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let lines: Vec<Vec<(f64, f64)>> = rows.iter().map(rss_line).collect();
    let x_max = lines
        .iter()
        .flatten()
        .map(|p| p.0)
        .chain(rows.iter().map(|r| r.connections as f64))
        .fold(0.0, f64::max);
    let y_max = lines.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    let x_max = if x_max > 0.0 { x_max * 1.05 } else { 1.0 };
    let y_max = if y_max > 0.0 { y_max * 1.15 } else { 1.0 };

    let svg = svg_plot((WIDTH, 500), |root| {
        let mut chart = chart_on(root, "Server memory with idle MQTT connections", 60)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
        styled_mesh(&mut chart)
            .max_light_lines(1)
            .x_desc("connections open")
            .y_desc("server RSS, MiB")
            .x_label_formatter(&|v| thousands(*v))
            .y_label_formatter(&|v| axis_number(*v))
            .draw()?;
        for (i, (row, points)) in rows.iter().zip(&lines).enumerate() {
            let colour = line_colour(i);
            draw_line(
                &mut chart,
                points.iter().copied(),
                colour,
                row.server.as_str(),
            )?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
        }
        draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })?;
    Ok(Some(svg))
}

/// One server's (connections, RSS MiB) points in connection order, from (0, RSS before),
/// leaving out any that are not finite.
fn rss_line(row: &Connections) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = std::iter::once((0.0, row.rss_before_mib))
        .chain(row.rss_points.iter().map(|&(c, mib)| (c as f64, mib)))
        .filter(|(c, mib)| c.is_finite() && mib.is_finite())
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

/// How a markdown table column is aligned.
#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}
use Align::{Left, Right};

/// Writes a markdown table: the header, the alignment row, then one line per row, so the
/// separator always has as many columns as the header.
fn table(
    s: &mut String,
    columns: &[(&str, Align)],
    rows: impl Iterator<Item = Vec<String>>,
) -> std::fmt::Result {
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    writeln!(s, "| {} |", names.join(" | "))?;
    let aligns: Vec<&str> = columns
        .iter()
        .map(|(_, align)| match align {
            Left => "---",
            Right => "--:",
        })
        .collect();
    writeln!(s, "|{}|", aligns.join("|"))?;
    for row in rows {
        writeln!(s, "| {} |", row.join(" | "))?;
    }
    Ok(())
}

/// The generated section's markdown (without the marker lines), ending in a newline.
fn section(r: &RunResults, plots: &Plots) -> Result<String> {
    let mut s = String::new();
    writeln!(
        s,
        "<!-- Generated by barnabas-bench from a run's results: edits between the markers are overwritten. -->"
    )?;
    heading(&mut s, "Run")?;
    run_facts(&mut s, r)?;
    heading(&mut s, "Throughput")?;
    if r.throughput.is_empty() {
        not_run(&mut s, "throughput")?;
    } else {
        throughput_table(&mut s, &r.throughput, plots.throughput)?;
    }
    heading(&mut s, "Latency")?;
    if r.latency.is_empty() {
        not_run(&mut s, "latency")?;
    } else {
        latency_table(&mut s, &r.latency, plots.latency)?;
    }
    heading(&mut s, "Idle connections")?;
    if r.connections.is_empty() {
        not_run(&mut s, "idle-connection")?;
    } else {
        connections_table(&mut s, &r.connections, plots.connections)?;
    }
    Ok(s)
}

/// A `###` heading, set apart by blank lines.
fn heading(s: &mut String, title: &str) -> std::fmt::Result {
    writeln!(s)?;
    writeln!(s, "### {title}")?;
    writeln!(s)
}

/// Says that the run had no scenario of a `kind`, where its table would be.
fn not_run(s: &mut String, kind: &str) -> std::fmt::Result {
    writeln!(s, "_Not run: this run had no {kind} scenario._")
}

/// What the run was on and what it ran, as a list, then its command line.
fn run_facts(s: &mut String, r: &RunResults) -> Result<()> {
    let m = &r.machine;
    writeln!(
        s,
        "- **Machine:** {} cores, {:.1} GiB RAM, {}, kernel {}",
        m.cores,
        m.mem_gib,
        or_unknown(&m.cpu_model),
        or_unknown(&m.kernel)
    )?;
    let v = &r.versions;
    let mut versions = format!(
        "barnabas {}, tansu {}, librdkafka {}",
        or_unknown(&v.barnabas),
        or_unknown(&v.tansu),
        or_unknown(&v.librdkafka)
    );
    if let Some(mosquitto) = &v.mosquitto {
        write!(versions, ", mosquitto {}", or_unknown(mosquitto))?;
    }
    writeln!(s, "- **Versions:** {versions}")?;
    writeln!(s, "- **Engine:** {}", or_unknown(&r.engine))?;
    writeln!(s, "- **Payload:** {} bytes per message", r.payload_bytes)?;
    match r.ready_ms.filter(|ms| ms.is_finite()) {
        Some(ms) => writeln!(s, "- **Gateway start → ready:** {} ms", ms_cell(ms))?,
        None => writeln!(
            s,
            "- **Gateway start → ready:** – (not started by the bench)"
        )?,
    }
    writeln!(s, "- **Command:**")?;
    writeln!(s)?;
    let fence = fence_for(&r.command);
    writeln!(s, "{fence}sh\n{}\n{fence}", r.command.trim_end())?;
    Ok(())
}

/// The throughput table's columns.
const THROUGHPUT_COLUMNS: [(&str, Align); 11] = [
    ("scenario", Left),
    ("msgs/s", Right),
    ("MB/s", Right),
    ("ratio", Right),
    ("baseline", Left),
    ("÷ same records", Right),
    ("÷ mosquitto", Right),
    ("÷ Strimzi", Right),
    ("server CPU cores", Right),
    ("server CPU s / 100k msgs", Right),
    ("server RSS MiB", Right),
];

/// The throughput rows, then their plot when there is one.
fn throughput_table(s: &mut String, rows: &[Throughput], plotted: bool) -> Result<()> {
    table(
        s,
        &THROUGHPUT_COLUMNS,
        rows.iter().map(|t| {
            let mut cells = vec![
                cell(&t.scenario),
                thousands(t.msgs_per_s),
                fixed(t.mb_per_s, 1),
                opt_fixed(t.ratio, 2),
                t.baseline.as_deref().map_or_else(|| "–".to_string(), cell),
            ];
            cells.extend(t.comparisons_and_cpu().map(|v| opt_fixed(v, 2)));
            cells.push(opt_fixed(t.server_rss_mib, 1));
            cells
        }),
    )?;
    if plotted {
        writeln!(s)?;
        writeln!(s, "![Throughput per scenario](bench/{THROUGHPUT_SVG})")?;
    }
    Ok(())
}

/// The latency table's columns.
const LATENCY_COLUMNS: [(&str, Align); 10] = [
    ("protocol", Left),
    ("kind", Left),
    ("rate (msgs/s)", Right),
    ("samples", Right),
    ("p50 ms", Right),
    ("p90 ms", Right),
    ("p99 ms", Right),
    ("p99.9 ms", Right),
    ("max ms", Right),
    ("p99 added over direct (ms)", Right),
];

/// The latency rows, then their plot, or why there is none.
fn latency_table(s: &mut String, rows: &[Latency], plotted: bool) -> Result<()> {
    table(
        s,
        &LATENCY_COLUMNS,
        rows.iter().map(|l| {
            vec![
                cell(&l.protocol),
                cell(&l.kind),
                thousands(l.rate as f64),
                thousands(l.count as f64),
                ms_cell(l.p50_ms),
                ms_cell(l.p90_ms),
                ms_cell(l.p99_ms),
                ms_cell(l.p999_ms),
                ms_cell(l.max_ms),
                l.p99_added_ms.filter(|ms| ms.is_finite()).map_or_else(
                    || "–".to_string(),
                    |ms| {
                        let sign = if ms < 0.0 { "−" } else { "+" };
                        format!("{sign}{}", ms_cell(ms.abs()))
                    },
                ),
            ]
        }),
    )?;
    writeln!(s)?;
    if plotted {
        writeln!(s, "![Latency CDF per protocol](bench/{LATENCY_SVG})")?;
    } else {
        writeln!(s, "_No CDF points were recorded, so there is no plot._")?;
    }
    Ok(())
}

/// The idle-connection rows, then their plot when there is one.
fn connections_table(s: &mut String, rows: &[Connections], plotted: bool) -> Result<()> {
    table(
        s,
        &[
            ("server", Left),
            ("connections", Right),
            ("KiB per connection", Right),
            ("CONNACK p50 ms", Right),
            ("CONNACK p99 ms", Right),
            ("one at a time: CONNACK p50 ms", Right),
            ("p99 ms", Right),
        ],
        rows.iter().map(|c| {
            vec![
                cell(&c.server),
                thousands(c.connections as f64),
                fixed(c.kib_per_connection, 1),
                ms_cell(c.connack_p50_ms),
                ms_cell(c.connack_p99_ms),
                ms_cell(c.connack_one_p50_ms),
                ms_cell(c.connack_one_p99_ms),
            ]
        }),
    )?;
    if plotted {
        writeln!(s)?;
        writeln!(
            s,
            "![Server RSS against idle connections](bench/{CONNECTIONS_SVG})"
        )?;
    }
    Ok(())
}

/// Puts `section` between the marker lines of `existing`, keeping everything outside them
/// byte for byte. With no file, makes one holding just a title and the markers; with no
/// markers, appends them. A lone marker is an error, rather than a guess at where the
/// generated part ends (which could eat hand-written prose).
fn splice(existing: Option<&str>, section: &str) -> Result<String> {
    let block = |s: &str| format!("{BEGIN}\n{section}{END}\n", section = s);
    let Some(text) = existing else {
        return Ok(format!("# Benchmarks\n\n{}", block(section)));
    };
    let begin = find_line(text, BEGIN, 0);
    let end = begin.and_then(|(_, after)| find_line(text, END, after));
    match (begin, end) {
        (Some((_, after_begin)), Some((end_start, _))) => Ok(format!(
            "{}{section}{}",
            &text[..after_begin],
            &text[end_start..]
        )),
        (None, _) if find_line(text, END, 0).is_none() => {
            let mut out = text.to_string();
            if !out.is_empty() {
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push('\n');
            }
            out.push_str(&block(section));
            Ok(out)
        }
        _ => bail!("found one of `{BEGIN}` and `{END}` without the other after it; fix the markers by hand"),
    }
}

/// The first line at or after byte `from` whose content (trimmed) is `marker`: the byte
/// offset of its start and of the start of the next line.
fn find_line(text: &str, marker: &str, from: usize) -> Option<(usize, usize)> {
    let mut start = from;
    for line in text[from..].split_inclusive('\n') {
        let next = start + line.len();
        if line.trim() == marker {
            return Some((start, next));
        }
        start = next;
    }
    None
}

/// A code fence longer than any run of backticks in `text`.
fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// `text`, or `unknown` when it is empty.
fn or_unknown(text: &str) -> String {
    if text.trim().is_empty() {
        "unknown".to_string()
    } else {
        cell(text)
    }
}

/// Zero for NaN and infinities, so a bad number draws nothing rather than breaking a plot.
fn finite_or_zero(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// A number rounded to a whole, with thousands separators (`41,230`); `–` if not finite.
fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "–".to_string();
    }
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits.chars().any(|c| c != '0') {
        out.insert(0, '-');
    }
    out
}

/// A number with `decimals` decimals; `–` if not finite.
fn fixed(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "–".to_string()
    }
}

/// [`fixed`] for an optional number: `–` when absent.
fn opt_fixed(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "–".to_string(), |v| fixed(v, decimals))
}

/// Milliseconds with about three significant digits (`0.412`, `3.17`, `41.2`, `1,203`).
fn ms_cell(ms: f64) -> String {
    if !ms.is_finite() {
        "–".to_string()
    } else if ms.abs() < 1.0 {
        format!("{ms:.3}")
    } else if ms.abs() < 10.0 {
        format!("{ms:.2}")
    } else if ms.abs() < 100.0 {
        format!("{ms:.1}")
    } else {
        thousands(ms)
    }
}

/// An axis tick label: no trailing zeros (`0.01`, `1`, `250`).
fn axis_number(v: f64) -> String {
    if v.abs() >= 1000.0 {
        return thousands(v);
    }
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::results::{Machine, Versions};

    fn throughput(
        scenario: &str,
        msgs_per_s: f64,
        ratio: Option<f64>,
        vs_mosquitto: Option<f64>,
    ) -> Throughput {
        Throughput {
            scenario: scenario.to_string(),
            baseline: ratio.map(|_| "direct".to_string()),
            messages: (msgs_per_s * 10.0) as usize,
            seconds: 10.0,
            msgs_per_s,
            mb_per_s: msgs_per_s * 100.0 / 1e6,
            ratio,
            vs_mosquitto,
            vs_same_records: None,
            vs_strimzi: None,
            server_cpu_cores: Some(0.91),
            server_rss_mib: Some(48.2),
        }
    }

    fn latency(protocol: &str, kind: &str, scale: f64, added: Option<f64>) -> Latency {
        Latency {
            protocol: protocol.to_string(),
            kind: kind.to_string(),
            rate: 1000,
            count: 30_000,
            p50_ms: 1.2 * scale,
            p90_ms: 2.5 * scale,
            p99_ms: 4.75 * scale,
            p999_ms: 9.1 * scale,
            max_ms: 23.0 * scale,
            p99_added_ms: added,
            cdf: vec![
                (0.0, 0.3 * scale),
                (0.5, 1.2 * scale),
                (0.9, 2.5 * scale),
                (0.99, 4.75 * scale),
                (0.999, 9.1 * scale),
                (1.0, 23.0 * scale),
            ],
        }
    }

    fn connections(server: &str, before: f64, kib: f64) -> Connections {
        let per = kib / 1024.0;
        Connections {
            server: server.to_string(),
            connections: 10_000,
            rss_before_mib: before,
            rss_points: (1..=4)
                .map(|k| (k * 2500, before + per * (k * 2500) as f64))
                .collect(),
            kib_per_connection: kib,
            connack_p50_ms: 0.41,
            connack_p99_ms: 2.3,
            connack_one_p50_ms: 0.07,
            connack_one_p99_ms: 0.2,
        }
    }

    fn sample() -> RunResults {
        RunResults {
            machine: Machine {
                cores: 2,
                mem_gib: 7.75,
                cpu_model: "AMD EPYC 7B13".to_string(),
                kernel: "6.1.0-18-amd64".to_string(),
            },
            versions: Versions {
                barnabas: "0.1.0".to_string(),
                tansu: "0.6.0".to_string(),
                librdkafka: "2.10.0".to_string(),
                mosquitto: Some("2.0.18".to_string()),
            },
            command: "barnabas-bench --seconds 10 --size 100 --json run.json".to_string(),
            engine: "sqlite".to_string(),
            payload_bytes: 100,
            ready_ms: Some(412.3),
            throughput: vec![
                throughput("direct", 50_312.0, None, None),
                throughput("mqtt-qos1", 41_230.4, Some(0.8195), Some(0.687)),
                throughput("http-produce-100", 25_156.0, Some(0.5), None),
                throughput("mosquitto-qos1", 60_000.0, None, None),
            ],
            latency: vec![
                latency("direct", "ack", 1.0, None),
                latency("mqtt-qos1", "ack", 1.6, Some(2.85)),
                latency("mqtt-qos1", "receive", 3.0, None),
            ],
            connections: vec![
                connections("barnabas", 30.5, 14.2),
                connections("mosquitto", 2.1, 5.3),
            ],
        }
    }

    const PROSE_BEFORE: &str = "# Benchmarks\n\nHand-written intro | with a pipe.\n\n";
    const PROSE_AFTER: &str = "\n## Reading the numbers\n\nMore prose.\n";

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The text content of every `<text>` element.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].to_string())
            })
            .collect()
    }

    fn assert_svg(path: &Path, expected_texts: &[&str]) -> String {
        let svg = read(path);
        assert!(
            svg.trim_start().starts_with("<svg"),
            "{}: {}",
            path.display(),
            &svg[..80.min(svg.len())]
        );
        assert!(
            svg.trim_end().ends_with("</svg>"),
            "{} is not closed",
            path.display()
        );
        let texts = texts(&svg);
        for want in expected_texts {
            assert!(
                texts.iter().any(|t| t.contains(want)),
                "{}: no <text> containing {want:?} in {texts:?}",
                path.display()
            );
        }
        svg
    }

    #[test]
    fn renders_plots_and_section_between_markers() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("benchmarks.md");
        let original = format!("{PROSE_BEFORE}{BEGIN}\nold generated text\n{END}\n{PROSE_AFTER}");
        fs::write(&md, &original).unwrap();

        let results = sample();
        render(&results, dir.path()).unwrap();

        let bench = dir.path().join("bench");
        let svg = assert_svg(
            &bench.join(THROUGHPUT_SVG),
            &[
                "direct",
                "mqtt-qos1",
                "mosquitto-qos1",
                "0.82× direct",
                "0.69× mosquitto-qos1",
                "messages / s",
            ],
        );
        // Each kind of bar has its own colour: one bar and one legend swatch for each.
        for (colour, kind) in [
            ("#1F77B4", "vs direct"),
            ("#2CA02C", "vs mosquitto"),
            ("#7F7F7F", "direct baseline"),
            ("#FF7F0E", "mosquitto baseline"),
        ] {
            let rects = svg
                .split("<rect")
                .skip(1)
                .filter(|r| r.contains(&format!("fill=\"{colour}\"")))
                .count();
            assert_eq!(rects, 2, "{kind} ({colour}): bar + legend swatch");
        }
        assert!(texts(&svg).iter().any(|t| t.contains("0.50× direct")));
        assert!(!texts(&svg).iter().any(|t| t.contains("0.50× direct ·")));

        let svg = assert_svg(
            &bench.join(LATENCY_SVG),
            &[
                "direct ack",
                "mqtt-qos1 ack",
                "mqtt-qos1 receive",
                "Latency CDF",
            ],
        );
        assert!(
            svg.matches("<polyline").count() >= 3,
            "one CDF line per row"
        );

        assert_svg(
            &bench.join(CONNECTIONS_SVG),
            &[
                "barnabas",
                "mosquitto",
                "connections open",
                "server RSS, MiB",
            ],
        );

        let first = read(&md);
        assert!(
            first.starts_with(&format!("{PROSE_BEFORE}{BEGIN}\n")),
            "{first}"
        );
        assert!(first.ends_with(&format!("{END}\n{PROSE_AFTER}")), "{first}");
        assert!(!first.contains("old generated text"));
        assert_eq!(first.matches(BEGIN).count(), 1);
        assert_eq!(first.matches(END).count(), 1);
        for row in [
            "| direct | 50,312 | 5.0 | – | – | – | – | – | 0.91 | 1.81 | 48.2 |",
            "| mqtt-qos1 | 41,230 | 4.1 | 0.82 | direct | – | 0.69 | – | 0.91 | 2.21 | 48.2 |",
            "| http-produce-100 | 25,156 | 2.5 | 0.50 | direct | – | – | – | 0.91 | 3.62 | 48.2 |",
            "| mosquitto-qos1 | 60,000 | 6.0 | – | – | – | – | – | 0.91 | 1.52 | 48.2 |",
            "| direct | ack | 1,000 | 30,000 | 1.20 | 2.50 | 4.75 | 9.10 | 23.0 | – |",
            "| mqtt-qos1 | ack | 1,000 | 30,000 | 1.92 | 4.00 | 7.60 | 14.6 | 36.8 | +2.85 |",
            "| barnabas | 10,000 | 14.2 | 0.410 | 2.30 |",
            "| mosquitto | 10,000 | 5.3 | 0.410 | 2.30 |",
            "- **Machine:** 2 cores, 7.8 GiB RAM, AMD EPYC 7B13, kernel 6.1.0-18-amd64",
            "- **Versions:** barnabas 0.1.0, tansu 0.6.0, librdkafka 2.10.0, mosquitto 2.0.18",
            "- **Engine:** sqlite",
            "- **Payload:** 100 bytes per message",
            "- **Gateway start → ready:** 412 ms",
            "```sh\nbarnabas-bench --seconds 10 --size 100 --json run.json\n```",
            "![Throughput per scenario](bench/throughput.svg)",
            "![Latency CDF per protocol](bench/latency.svg)",
            "![Server RSS against idle connections](bench/connections.svg)",
        ] {
            assert!(first.contains(row), "missing {row:?} in:\n{first}");
        }
        assert!(!first.contains("Not run"), "{first}");

        // A second render changes nothing, inside or outside the markers.
        render(&results, dir.path()).unwrap();
        assert_eq!(read(&md), first);
    }

    #[test]
    fn empty_sections_have_no_plot_and_say_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let bench = dir.path().join("bench");
        fs::create_dir_all(&bench).unwrap();
        // Plots from an earlier run must not outlive it.
        fs::write(bench.join(LATENCY_SVG), "<svg>stale</svg>").unwrap();

        let results = RunResults {
            latency: Vec::new(),
            connections: Vec::new(),
            ..sample()
        };
        render(&results, dir.path()).unwrap();

        assert!(bench.join(THROUGHPUT_SVG).is_file());
        assert!(!bench.join(LATENCY_SVG).exists());
        assert!(!bench.join(CONNECTIONS_SVG).exists());
        let md = read(&dir.path().join("benchmarks.md"));
        assert!(
            md.contains("_Not run: this run had no latency scenario._"),
            "{md}"
        );
        assert!(
            md.contains("_Not run: this run had no idle-connection scenario._"),
            "{md}"
        );
        assert!(!md.contains("bench/latency.svg"));
        assert!(!md.contains("bench/connections.svg"));
        assert!(md.contains("bench/throughput.svg"));

        // Nothing at all: no plots, no error.
        render(&RunResults::default(), dir.path()).unwrap();
        assert!(!bench.join(THROUGHPUT_SVG).exists());
        let md = read(&dir.path().join("benchmarks.md"));
        assert!(
            md.contains("_Not run: this run had no throughput scenario._"),
            "{md}"
        );
        assert!(md.contains("- **Gateway start → ready:** – (not started by the bench)"));
    }

    #[test]
    fn latency_rows_without_cdf_points_get_a_table_but_no_plot() {
        let dir = tempfile::tempdir().unwrap();
        let mut row = latency("http", "ack", 1.0, Some(0.5));
        row.cdf.clear();
        let results = RunResults {
            latency: vec![row],
            ..sample()
        };
        render(&results, dir.path()).unwrap();
        assert!(!dir.path().join("bench").join(LATENCY_SVG).exists());
        let md = read(&dir.path().join("benchmarks.md"));
        assert!(md.contains("| http | ack |"), "{md}");
        assert!(md.contains("_No CDF points were recorded"), "{md}");
    }

    #[test]
    fn missing_file_or_markers_are_created() {
        let created = splice(None, "GEN\n").unwrap();
        assert_eq!(created, format!("# Benchmarks\n\n{BEGIN}\nGEN\n{END}\n"));

        let appended = splice(Some("prose without newline"), "GEN\n").unwrap();
        assert_eq!(
            appended,
            format!("prose without newline\n\n{BEGIN}\nGEN\n{END}\n")
        );
        // Appended once, then replaced in place.
        assert_eq!(splice(Some(&appended), "GEN\n").unwrap(), appended);
        assert_eq!(
            splice(Some(&appended), "NEW\n").unwrap(),
            format!("prose without newline\n\n{BEGIN}\nNEW\n{END}\n")
        );
    }

    #[test]
    fn splice_keeps_prose_byte_for_byte() {
        // Markers quoted inside prose lines are not markers; CRLF prose survives untouched.
        let before = format!("Intro mentioning `{BEGIN}` inline.\r\n\r\n");
        let after = "\r\nOutro without final newline";
        let text = format!("{before}{BEGIN}\r\nold\r\n{END}{after}");
        let out = splice(Some(&text), "GEN\n").unwrap();
        assert_eq!(out, format!("{before}{BEGIN}\r\nGEN\n{END}{after}"));
    }

    #[test]
    fn lone_marker_is_an_error() {
        assert!(splice(Some(&format!("a\n{BEGIN}\nb\n")), "GEN\n").is_err());
        assert!(splice(Some(&format!("a\n{END}\nb\n")), "GEN\n").is_err());
        assert!(splice(Some(&format!("{END}\n{BEGIN}\n")), "GEN\n").is_err());
    }

    #[test]
    fn numbers_are_formatted_for_reading() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(1_234_567.8), "1,234,568");
        assert_eq!(thousands(-4_321.0), "-4,321");
        assert_eq!(thousands(f64::NAN), "–");
        assert_eq!(opt_fixed(Some(0.8195), 2), "0.82");
        assert_eq!(opt_fixed(None, 2), "–");
        assert_eq!(opt_fixed(Some(f64::INFINITY), 2), "–");
        assert_eq!(ms_cell(0.4123), "0.412");
        assert_eq!(ms_cell(3.174), "3.17");
        assert_eq!(ms_cell(41.23), "41.2");
        assert_eq!(ms_cell(1203.4), "1,203");
        assert_eq!(axis_number(0.01), "0.01");
        assert_eq!(axis_number(250.0), "250");
        assert_eq!(fence_for("plain"), "```");
        assert_eq!(fence_for("has ```` fence"), "`````");
        assert_eq!(cell("a|b"), "a\\|b");
    }
}
