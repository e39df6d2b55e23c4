//! The report as an A4 PDF with the Japanese font embedded (subset by krilla, with a ToUnicode map
//! so that the text can be searched and copied).

mod font;
pub(crate) mod layout;

use std::path::Path;
use std::sync::Arc;

use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect};
use krilla::metadata::{DateTime, Metadata};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::text::{Font, GlyphId, KrillaGlyph};
use krilla::Document;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::content;
use crate::i18n::Lang;
use crate::model::MonthlyReport;
use crate::ReportError;
pub(crate) use font::FontMetrics;
use layout::{DrawOp, PageOps, Rgb, PAGE_HEIGHT, PAGE_WIDTH};

/// Checks that `font` exists and can draw every text of the report, without rendering anything:
/// for a start-up check, so that a missing font is reported before the first report is due.
pub fn check_font(font: &Path) -> Result<(), ReportError> {
    let data = Arc::new(font::read_font(font)?);
    FontMetrics::new(&data, font)?;
    load_pdf_font(data, font).map(|_| ())
}

/// Renders the report as PDF bytes, embedding (a subset of) the font at `font`, normally
/// [`crate::DEFAULT_FONT`].
pub fn render_pdf(report: &MonthlyReport, lang: Lang, font: &Path) -> Result<Vec<u8>, ReportError> {
    let data = Arc::new(font::read_font(font)?);
    let metrics = FontMetrics::new(&data, font)?;
    let content = content::build(report, lang);
    let pages = layout::lay_out(&content, &metrics);
    // Shares the bytes that `metrics` measures with, rather than copying a 4 MB font.
    let pdf_font = load_pdf_font(Arc::clone(&data), font)?;

    let mut document = Document::new();
    let mut metadata = Metadata::new()
        .title(format!("{} — {}", content.title, content.footer))
        .language(lang.tag().to_owned())
        .creator("mamori".to_owned());
    if let Some(created) = pdf_date(&report.generated) {
        metadata = metadata.creation_date(created);
    }
    document.set_metadata(metadata);
    for ops in &pages {
        draw_page(&mut document, ops, &pdf_font, &metrics)?;
    }
    document.finish().map_err(|error| ReportError::Pdf { reason: format!("{error:?}") })
}

fn load_pdf_font(data: Arc<Vec<u8>>, path: &Path) -> Result<Font, ReportError> {
    Font::new(data.into(), 0).ok_or_else(|| ReportError::FontUnusable {
        path: path.to_owned(),
        reason: "the PDF writer cannot read it".to_owned(),
    })
}

fn pdf_error(what: &str) -> ReportError {
    ReportError::Pdf { reason: format!("invalid geometry for {what}") }
}

fn draw_page(
    document: &mut Document,
    ops: &PageOps,
    pdf_font: &Font,
    metrics: &FontMetrics<'_>,
) -> Result<(), ReportError> {
    let settings = PageSettings::from_wh(PAGE_WIDTH, PAGE_HEIGHT).ok_or_else(|| pdf_error("the page"))?;
    let mut page = document.start_page_with(settings);
    let mut surface = page.surface();
    for op in ops {
        match op {
            DrawOp::Rect { x, y, width, height, colour } => {
                let mut path = PathBuilder::new();
                path.push_rect(Rect::from_xywh(*x, *y, *width, *height).ok_or_else(|| pdf_error("a box"))?);
                let path = path.finish().ok_or_else(|| pdf_error("a box"))?;
                surface.set_stroke(None);
                surface.set_fill(Some(fill(*colour)));
                surface.draw_path(&path);
            }
            DrawOp::Line { x1, y1, x2, y2, thickness, colour } => {
                let mut path = PathBuilder::new();
                path.move_to(*x1, *y1);
                path.line_to(*x2, *y2);
                let path = path.finish().ok_or_else(|| pdf_error("a rule"))?;
                surface.set_fill(None);
                surface.set_stroke(Some(Stroke {
                    paint: paint(*colour),
                    width: *thickness,
                    ..Stroke::default()
                }));
                surface.draw_path(&path);
            }
            DrawOp::Text { x, baseline, size, colour, text, .. } => {
                // One glyph per character, each its own cluster: the ToUnicode map then gives back
                // exactly the characters that were laid out.
                let glyphs: Vec<KrillaGlyph> = text
                    .char_indices()
                    .map(|(offset, character)| {
                        let glyph = metrics.glyph(character);
                        KrillaGlyph::new(
                            GlyphId::new(glyph.id.to_u32()),
                            glyph.advance_em,
                            0.0,
                            0.0,
                            0.0,
                            offset..offset + character.len_utf8(),
                            None,
                        )
                    })
                    .collect();
                surface.set_stroke(None);
                surface.set_fill(Some(fill(*colour)));
                surface.draw_glyphs(
                    Point::from_xy(*x, *baseline),
                    &glyphs,
                    pdf_font.clone(),
                    text,
                    *size,
                    false,
                );
            }
        }
    }
    surface.finish();
    page.finish();
    Ok(())
}

fn paint(colour: Rgb) -> krilla::paint::Paint {
    rgb::Color::new(colour.0, colour.1, colour.2).into()
}

fn fill(colour: Rgb) -> Fill {
    Fill { paint: paint(colour), opacity: NormalizedF32::ONE, rule: Default::default() }
}

/// The PDF's creation date, taken from the report's `generated` so that re-rendering the same
/// report gives the same metadata.
fn pdf_date(generated: &str) -> Option<DateTime> {
    let time = OffsetDateTime::parse(generated, &Rfc3339).ok()?;
    let year = u16::try_from(time.year()).ok()?;
    let offset = time.offset();
    Some(
        DateTime::new(year)
            .month(u8::from(time.month()))
            .day(time.day())
            .hour(time.hour())
            .minute(time.minute())
            .second(time.second())
            .utc_offset_hour(offset.whole_hours())
            .utc_offset_minute(offset.minutes_past_hour().unsigned_abs()),
    )
}
