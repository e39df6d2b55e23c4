//! Places the report's content on A4 pages: wraps text, breaks tables across pages with their
//! header row repeated, and numbers the pages. The result is a list of drawing operations per page,
//! which is what the PDF writer draws and what the tests can inspect without reading a PDF.

use crate::content::{Align, Block, Cell, ReportContent, Table, Tone};
use crate::i18n::{fill, TextKey};
use crate::pdf::font::FontMetrics;

/// A4 portrait in points.
pub(crate) const PAGE_WIDTH: f32 = 595.28;
pub(crate) const PAGE_HEIGHT: f32 = 841.89;
pub(crate) const MARGIN_LEFT: f32 = 40.0;
pub(crate) const MARGIN_RIGHT: f32 = 40.0;
const CONTENT_WIDTH: f32 = PAGE_WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
const CONTENT_TOP: f32 = 44.0;
/// Content stops here; below are the footer and the page number.
const CONTENT_BOTTOM: f32 = PAGE_HEIGHT - 54.0;
const FOOTER_RULE_Y: f32 = PAGE_HEIGHT - 42.0;
const FOOTER_BASELINE: f32 = PAGE_HEIGHT - 30.0;

const TITLE_SIZE: f32 = 18.0;
const HEADING_SIZE: f32 = 12.0;
const BODY_SIZE: f32 = 9.0;
const TABLE_SIZE: f32 = 7.5;
const TABLE_HEADER_SIZE: f32 = 7.0;
const NOTE_SIZE: f32 = 5.5;
const FOOTER_SIZE: f32 = 7.5;
const LINE_SPACING: f32 = 1.35;
const CELL_PADDING_X: f32 = 3.0;
const CELL_PADDING_Y: f32 = 2.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rgb(pub u8, pub u8, pub u8);

const INK: Rgb = Rgb(26, 26, 26);
const ACCENT: Rgb = Rgb(31, 78, 121);
const GREY: Rgb = Rgb(110, 110, 110);
const RULE: Rgb = Rgb(183, 196, 209);
const HEADER_FILL: Rgb = Rgb(221, 230, 240);
const STRIPE_FILL: Rgb = Rgb(244, 247, 250);

fn tone_colour(tone: Tone) -> Rgb {
    match tone {
        Tone::Normal => INK,
        Tone::Muted => GREY,
        Tone::Good => Rgb(27, 122, 58),
        Tone::Warning => Rgb(168, 93, 0),
        Tone::Bad => Rgb(179, 38, 30),
    }
}

/// One thing to draw. Coordinates are in points from the page's top left corner.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DrawOp {
    /// One line of text; `text` holds only characters the font can draw.
    Text {
        x: f32,
        baseline: f32,
        size: f32,
        colour: Rgb,
        text: String,
        width: f32,
    },
    Rect {
        x: f32,
        y: f32,
        width: f32,
        height: f32,
        colour: Rgb,
    },
    Line {
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        thickness: f32,
        colour: Rgb,
    },
}

pub(crate) type PageOps = Vec<DrawOp>;

/// Lays out the whole report, footer and page numbers included.
pub(crate) fn lay_out(content: &ReportContent, metrics: &FontMetrics<'_>) -> Vec<PageOps> {
    let mut composer = Composer { metrics, pages: Vec::new(), y: CONTENT_TOP };
    composer.new_page();
    composer.title_block(content);
    for section in &content.sections {
        composer.section(&section.heading, &section.blocks);
    }
    composer.add_footers(&content.footer, TextKey::PageNumber.text(content.lang));
    composer.pages
}

struct Composer<'m, 'a> {
    metrics: &'m FontMetrics<'a>,
    pages: Vec<PageOps>,
    /// Top of the free space on the current page.
    y: f32,
}

/// A table cell broken into lines.
struct CellLines {
    lines: Vec<String>,
    note: Option<String>,
    colour: Rgb,
}

impl CellLines {
    fn height(&self) -> f32 {
        let note = if self.note.is_some() { line_height(NOTE_SIZE) } else { 0.0 };
        self.lines.len() as f32 * line_height(TABLE_SIZE) + note
    }
}

fn line_height(size: f32) -> f32 {
    size * LINE_SPACING
}

impl Composer<'_, '_> {
    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = CONTENT_TOP;
    }

    fn push(&mut self, op: DrawOp) {
        if let Some(page) = self.pages.last_mut() {
            page.push(op);
        }
    }

    fn ensure_room(&mut self, height: f32) {
        if self.y + height > CONTENT_BOTTOM && self.y > CONTENT_TOP {
            self.new_page();
        }
    }

    /// Draws one line whose top is at `top`; the text must already fit.
    fn text_line(&mut self, x: f32, top: f32, size: f32, colour: Rgb, text: &str) {
        let text: String = text.chars().map(|character| self.metrics.drawable(character)).collect();
        let width = self.metrics.width(&text, size);
        let baseline = top + (LINE_SPACING - 1.0) / 2.0 * size + self.metrics.ascent_em * size;
        self.push(DrawOp::Text { x, baseline, size, colour, text, width });
    }

    /// Where a line of text starts in a cell of `width` starting at `left`.
    fn aligned_x(&self, left: f32, width: f32, text: &str, size: f32, align: Align) -> f32 {
        match align {
            Align::Left => left,
            Align::Right => left + width - self.metrics.width(text, size),
        }
    }

    fn title_block(&mut self, content: &ReportContent) {
        let title_lines = wrap(self.metrics, &content.title, TITLE_SIZE, CONTENT_WIDTH, 2);
        for line in &title_lines {
            self.text_line(MARGIN_LEFT, self.y, TITLE_SIZE, ACCENT, line);
            self.y += line_height(TITLE_SIZE);
        }
        self.y += 2.0;
        self.push(DrawOp::Line {
            x1: MARGIN_LEFT,
            y1: self.y,
            x2: PAGE_WIDTH - MARGIN_RIGHT,
            y2: self.y,
            thickness: 1.5,
            colour: ACCENT,
        });
        self.y += 6.0;
        let label_width =
            content.facts.iter().map(|(label, _)| self.metrics.width(label, BODY_SIZE)).fold(0.0, f32::max)
                + 12.0;
        for (label, value) in &content.facts {
            let value_lines = wrap(self.metrics, value, BODY_SIZE, CONTENT_WIDTH - label_width, 3);
            self.text_line(MARGIN_LEFT, self.y, BODY_SIZE, GREY, label);
            for line in &value_lines {
                self.text_line(MARGIN_LEFT + label_width, self.y, BODY_SIZE, INK, line);
                self.y += line_height(BODY_SIZE);
            }
        }
    }

    fn section(&mut self, heading: &str, blocks: &[Block]) {
        self.y += 10.0;
        // Keep the heading with the start of what follows it.
        let following = match blocks.first() {
            Some(Block::Paragraph(text)) => {
                let lines = wrap(self.metrics, text, BODY_SIZE, CONTENT_WIDTH, usize::MAX).len();
                lines.min(2) as f32 * line_height(BODY_SIZE)
            }
            Some(Block::Table(table)) => {
                let widths = column_widths(table);
                let header = self.header_lines(table, &widths);
                let first_row = table.rows.first().map(|row| self.row_lines(table, row, &widths));
                row_height(&header) + first_row.as_deref().map(row_height).unwrap_or(0.0)
            }
            None => 0.0,
        };
        let heading_lines = wrap(self.metrics, heading, HEADING_SIZE, CONTENT_WIDTH - 8.0, 3);
        let heading_height = heading_lines.len() as f32 * line_height(HEADING_SIZE) + 4.0;
        self.ensure_room(heading_height + following);
        self.push(DrawOp::Rect {
            x: MARGIN_LEFT,
            y: self.y + 1.0,
            width: 3.0,
            height: heading_height - 4.0,
            colour: ACCENT,
        });
        for line in &heading_lines {
            self.text_line(MARGIN_LEFT + 8.0, self.y, HEADING_SIZE, ACCENT, line);
            self.y += line_height(HEADING_SIZE);
        }
        self.y += 4.0;
        for block in blocks {
            match block {
                Block::Paragraph(text) => self.paragraph(text),
                Block::Table(table) => self.table(table),
            }
        }
    }

    fn paragraph(&mut self, text: &str) {
        for line in wrap(self.metrics, text, BODY_SIZE, CONTENT_WIDTH, usize::MAX) {
            self.ensure_room(line_height(BODY_SIZE));
            self.text_line(MARGIN_LEFT, self.y, BODY_SIZE, INK, &line);
            self.y += line_height(BODY_SIZE);
        }
        self.y += 3.0;
    }

    fn header_lines(&self, table: &Table, widths: &[f32]) -> Vec<CellLines> {
        table
            .columns
            .iter()
            .zip(widths)
            .map(|(column, width)| CellLines {
                lines: wrap(self.metrics, &column.label, TABLE_HEADER_SIZE, inner(*width), 3),
                note: None,
                colour: INK,
            })
            .collect()
    }

    fn row_lines(&self, table: &Table, row: &[Cell], widths: &[f32]) -> Vec<CellLines> {
        row.iter()
            .zip(&table.columns)
            .zip(widths)
            .map(|((cell, column), width)| CellLines {
                lines: wrap(self.metrics, &cell.text, TABLE_SIZE, inner(*width), column.max_lines),
                note: cell
                    .note
                    .as_deref()
                    .filter(|note| !note.is_empty())
                    .and_then(|note| wrap(self.metrics, note, NOTE_SIZE, inner(*width), 1).pop()),
                colour: tone_colour(cell.tone),
            })
            .collect()
    }

    fn table(&mut self, table: &Table) {
        let widths = column_widths(table);
        let header = self.header_lines(table, &widths);
        self.ensure_room(row_height(&header) + line_height(TABLE_SIZE) + 2.0 * CELL_PADDING_Y);
        self.draw_row(table, &widths, &header, TABLE_HEADER_SIZE, Some(HEADER_FILL));
        for (index, row) in table.rows.iter().enumerate() {
            let cells = self.row_lines(table, row, &widths);
            if self.y + row_height(&cells) > CONTENT_BOTTOM {
                self.new_page();
                self.draw_row(table, &widths, &header, TABLE_HEADER_SIZE, Some(HEADER_FILL));
            }
            let fill = (index % 2 == 1).then_some(STRIPE_FILL);
            self.draw_row(table, &widths, &cells, TABLE_SIZE, fill);
        }
        self.y += 6.0;
    }

    fn draw_row(&mut self, table: &Table, widths: &[f32], cells: &[CellLines], size: f32, fill: Option<Rgb>) {
        let height = row_height(cells);
        let top = self.y;
        if let Some(colour) = fill {
            self.push(DrawOp::Rect { x: MARGIN_LEFT, y: top, width: CONTENT_WIDTH, height, colour });
        }
        let mut left = MARGIN_LEFT;
        for ((cell, column), width) in cells.iter().zip(&table.columns).zip(widths) {
            let mut line_top = top + CELL_PADDING_Y;
            for line in &cell.lines {
                let x = self.aligned_x(left + CELL_PADDING_X, inner(*width), line, size, column.align);
                self.text_line(x, line_top, size, cell.colour, line);
                line_top += line_height(size);
            }
            if let Some(note) = &cell.note {
                let x = self.aligned_x(left + CELL_PADDING_X, inner(*width), note, NOTE_SIZE, column.align);
                self.text_line(x, line_top, NOTE_SIZE, GREY, note);
            }
            left += width;
        }
        // Grid: the row's bottom rule, and column separators over the row's height.
        let bottom = top + height;
        let right = MARGIN_LEFT + CONTENT_WIDTH;
        let rule = |x1, y1, x2, y2| DrawOp::Line { x1, y1, x2, y2, thickness: 0.4, colour: RULE };
        self.push(rule(MARGIN_LEFT, top, right, top));
        self.push(rule(MARGIN_LEFT, bottom, right, bottom));
        let mut x = MARGIN_LEFT;
        self.push(rule(x, top, x, bottom));
        for width in widths {
            x += width;
            self.push(rule(x, top, x, bottom));
        }
        self.y = bottom;
    }

    fn add_footers(&mut self, footer: &str, page_number: &str) {
        let total = self.pages.len();
        for index in 0..total {
            let number =
                fill(page_number, &[("page", (index + 1).to_string()), ("pages", total.to_string())]);
            let number_width = self.metrics.width(&number, FOOTER_SIZE);
            let footer_room = CONTENT_WIDTH - number_width - 20.0;
            let footer_line =
                wrap(self.metrics, footer, FOOTER_SIZE, footer_room, 1).pop().unwrap_or_default();
            let footer_width = self.metrics.width(&footer_line, FOOTER_SIZE);
            let number_x = PAGE_WIDTH - MARGIN_RIGHT - number_width;
            let baseline = FOOTER_BASELINE;
            let Some(page) = self.pages.get_mut(index) else { continue };
            page.push(DrawOp::Line {
                x1: MARGIN_LEFT,
                y1: FOOTER_RULE_Y,
                x2: PAGE_WIDTH - MARGIN_RIGHT,
                y2: FOOTER_RULE_Y,
                thickness: 0.5,
                colour: RULE,
            });
            page.push(DrawOp::Text {
                x: MARGIN_LEFT,
                baseline,
                size: FOOTER_SIZE,
                colour: GREY,
                text: footer_line.chars().map(|character| self.metrics.drawable(character)).collect(),
                width: footer_width,
            });
            page.push(DrawOp::Text {
                x: number_x,
                baseline,
                size: FOOTER_SIZE,
                colour: GREY,
                text: number,
                width: number_width,
            });
        }
    }
}

fn inner(width: f32) -> f32 {
    (width - 2.0 * CELL_PADDING_X).max(1.0)
}

fn column_widths(table: &Table) -> Vec<f32> {
    let total_share: f32 = table.columns.iter().map(|column| column.share).sum();
    let total_share = if total_share > 0.0 { total_share } else { 1.0 };
    table.columns.iter().map(|column| CONTENT_WIDTH * column.share / total_share).collect()
}

fn row_height(cells: &[CellLines]) -> f32 {
    cells.iter().map(CellLines::height).fold(line_height(TABLE_SIZE), f32::max) + 2.0 * CELL_PADDING_Y
}

/// Characters that must not begin a line in Japanese (行頭禁則), plus ASCII closing punctuation.
const NO_LINE_START: &str =
    "、。，．・：；？！ー）」』】〕〉》’”ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ々〜…‥%)]},.:;!?";
/// Characters that must not end a line (行末禁則).
const NO_LINE_END: &str = "（「『【〔〈《‘“([{";

/// Japanese is broken between any two characters; Latin text only at spaces and after the
/// punctuation that joins the parts of hostnames and rule IDs.
fn is_wide(character: char) -> bool {
    u32::from(character) >= 0x2E80
}

fn may_break_between(before: char, after: char) -> bool {
    if after.is_whitespace() || NO_LINE_START.contains(after) || NO_LINE_END.contains(before) {
        return false;
    }
    before.is_whitespace() || "-_./\\,;:@".contains(before) || is_wide(before) || is_wide(after)
}

/// Breaks `text` into lines no wider than `width`. Newlines in the text start new lines. When more
/// than `max_lines` would be needed, the last line kept ends with "…".
pub(crate) fn wrap(
    metrics: &FontMetrics<'_>,
    text: &str,
    size: f32,
    width: f32,
    max_lines: usize,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut truncated = false;
    'paragraphs: for paragraph in text.split('\n') {
        let characters: Vec<char> = paragraph.chars().collect();
        let mut start = 0;
        while start < characters.len() {
            if lines.len() == max_lines {
                truncated = true;
                break 'paragraphs;
            }
            let mut used = 0.0;
            let mut last_break = None;
            let mut end = start;
            while end < characters.len() {
                let advance = metrics.char_width(characters[end], size);
                if end > start && may_break_between(characters[end - 1], characters[end]) {
                    last_break = Some(end);
                }
                // A single character wider than the column still gets a line of its own.
                if used + advance > width && end > start {
                    break;
                }
                used += advance;
                end += 1;
            }
            let cut = if end < characters.len() { last_break.unwrap_or(end) } else { end };
            let line: String = characters[start..cut].iter().collect();
            lines.push(line.trim_end().to_owned());
            start = cut;
            while start < characters.len() && characters[start].is_whitespace() {
                start += 1;
            }
        }
        if characters.is_empty() && lines.len() < max_lines {
            lines.push(String::new());
        }
    }
    if truncated {
        if let Some(last) = lines.last_mut() {
            while !last.is_empty() && metrics.width(last, size) + metrics.char_width('…', size) > width {
                last.pop();
            }
            let kept = last.trim_end().len();
            last.truncate(kept);
            last.push('…');
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::{
        EndpointRow, EndpointStatus, IsolationRow, IsolationTrigger, MonthlyReport, ReportMonth, RuleCount,
        Severity, SeverityCounts, Totals,
    };
    use crate::{content, Lang, DEFAULT_FONT};

    fn font_bytes() -> Option<Vec<u8>> {
        match std::fs::read(DEFAULT_FONT) {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                eprintln!("SKIPPED: {DEFAULT_FONT} is missing (Debian package fonts-ipaexfont-gothic)");
                None
            }
        }
    }

    const WIDTH: f32 = 80.0;

    #[test]
    fn lines_fit_and_japanese_punctuation_never_starts_a_line() {
        let Some(bytes) = font_bytes() else { return };
        let metrics = FontMetrics::new(&bytes, Path::new(DEFAULT_FONT)).unwrap();
        let text = "不正ソフトウェア対策を全端末に導入し、定期的に定義ファイルを更新している。\
                    オフラインの端末（3台）は、来月までに確認する。";
        for width in [40.0, 47.0, 55.0, 61.0, 80.0, 93.0] {
            let lines = wrap(&metrics, text, TABLE_SIZE, width, usize::MAX);
            assert_eq!(lines.concat(), text, "nothing lost or added at width {width}");
            for line in &lines {
                assert!(metrics.width(line, TABLE_SIZE) <= width + 0.01, "{line:?} wider than {width}");
                let first = line.chars().next().unwrap();
                assert!(!NO_LINE_START.contains(first), "{line:?} starts with {first} at width {width}");
                let last = line.chars().last().unwrap();
                assert!(!NO_LINE_END.contains(last), "{line:?} ends with {last} at width {width}");
            }
        }
    }

    #[test]
    fn hostnames_break_after_dots_and_hyphens_and_are_cut_with_an_ellipsis() {
        let Some(bytes) = font_bytes() else { return };
        let metrics = FontMetrics::new(&bytes, Path::new(DEFAULT_FONT)).unwrap();
        let host = "reading-room-07.imaging.minato-general-hospital.example";
        let lines = wrap(&metrics, host, TABLE_SIZE, WIDTH, usize::MAX);
        assert!(lines.len() > 1);
        assert_eq!(lines.concat(), host);
        for line in &lines[..lines.len() - 1] {
            assert!(line.ends_with(['-', '.']), "{line:?} should end at a joint of the name");
        }
        let cut = wrap(&metrics, host, TABLE_SIZE, WIDTH, 2);
        assert_eq!(cut.len(), 2);
        assert!(cut[1].ends_with('…'));
        assert!(cut.iter().all(|line| metrics.width(line, TABLE_SIZE) <= WIDTH + 0.01));
        // A name without any joint is broken anywhere rather than overflowing.
        let unbroken = "x".repeat(200);
        let lines = wrap(&metrics, &unbroken, TABLE_SIZE, WIDTH, usize::MAX);
        assert!(lines.len() > 2 && lines.iter().all(|line| metrics.width(line, TABLE_SIZE) <= WIDTH + 0.01));
        // Short text is left alone.
        assert_eq!(wrap(&metrics, "受付PC-01", TABLE_SIZE, WIDTH, 2), vec!["受付PC-01"]);
    }

    fn hostile_report() -> MonthlyReport {
        let long_token = "ｗ".repeat(30) + &"W".repeat(300);
        let endpoint = |index: usize| EndpointRow {
            host: if index.is_multiple_of(2) { long_token.clone() } else { format!("受付PC-{index:02}") },
            agent_id: long_token.clone(),
            status: EndpointStatus::Online,
            detections: SeverityCounts { critical: 4_000_000_000, high: 1, medium: 22, low: 333 },
            quarantined: u32::MAX,
            processes_stopped: 123_456,
            isolations: 99_999,
            last_scan: Some("not a timestamp at all, but a very long sentence instead".to_owned()),
            last_seen: None,
        };
        let endpoints: Vec<EndpointRow> = (0..30).map(endpoint).collect();
        let totals = Totals::from_rows(&endpoints, &[], u32::MAX);
        MonthlyReport {
            institution: "医療法人社団".repeat(40),
            month: ReportMonth::new(2026, 4).unwrap(),
            generated: "2026-05-01T07:30:00+09:00".to_owned(),
            period_start: "2026-04-01T00:00:00+09:00".to_owned(),
            period_end: "2026-04-30T23:59:59+09:00".to_owned(),
            endpoints,
            totals,
            previous: Some(Totals::default()),
            top_rules: vec![RuleCount {
                rule_id: long_token.clone(),
                title: "長いルール名".repeat(50),
                severity: Severity::High,
                count: u32::MAX,
            }],
            isolations: vec![IsolationRow {
                host: long_token.clone(),
                started: long_token.clone(),
                ended: None,
                reason: long_token.clone(),
                trigger: IsolationTrigger::Manual,
            }],
            backups: Vec::new(),
            checklist: Vec::new(),
        }
    }

    #[test]
    fn no_text_leaves_the_page_or_runs_into_its_neighbour() {
        let Some(bytes) = font_bytes() else { return };
        let metrics = FontMetrics::new(&bytes, Path::new(DEFAULT_FONT)).unwrap();
        for lang in [Lang::Ja, Lang::En] {
            let pages = lay_out(&content::build(&hostile_report(), lang), &metrics);
            assert!(pages.len() > 1);
            for (page_index, ops) in pages.iter().enumerate() {
                let mut texts: Vec<(f32, f32, f32, &str)> = ops
                    .iter()
                    .filter_map(|op| match op {
                        DrawOp::Text { x, baseline, width, text, .. } => {
                            Some((*baseline, *x, *width, text.as_str()))
                        }
                        _ => None,
                    })
                    .collect();
                for (baseline, x, width, text) in &texts {
                    assert!(*x >= MARGIN_LEFT - 0.01, "{text:?} starts left of the margin");
                    assert!(
                        x + width <= PAGE_WIDTH - MARGIN_RIGHT + 0.01,
                        "{text:?} runs past the right margin"
                    );
                    assert!(*baseline > 0.0 && *baseline < PAGE_HEIGHT, "{text:?} is off page {page_index}");
                }
                texts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
                for pair in texts.windows(2) {
                    let ((baseline_a, x_a, width_a, text_a), (baseline_b, x_b, _, text_b)) =
                        (pair[0], pair[1]);
                    if (baseline_a - baseline_b).abs() < 0.01 {
                        assert!(x_a + width_a <= x_b + 0.01, "{text_a:?} overlaps {text_b:?}");
                    }
                }
            }
        }
    }
}
