//! The report as one self-contained HTML page: inline CSS, no scripts, no external resources, so
//! that it can be mailed, archived or printed from any browser (A4, header rows repeated).

use std::fmt::Write as _;

use crate::content::{self, Align, Block, Cell, ReportContent, Table, Tone};
use crate::i18n::Lang;
use crate::model::MonthlyReport;

const STYLE: &str = r#"
@page { size: A4 portrait; margin: 14mm 12mm 16mm 12mm;
  @bottom-right { content: counter(page) " / " counter(pages); font-size: 8pt; color: #555; } }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 190mm; padding: 8mm 0; color: #1a1a1a; font-size: 10pt; line-height: 1.5;
  font-family: "IPAexGothic", "IPAexゴシック", "Noto Sans CJK JP", "Hiragino Sans", "Yu Gothic", "Meiryo", sans-serif; }
h1 { font-size: 18pt; margin: 0 0 4mm; padding-bottom: 2mm; border-bottom: 2px solid #1f4e79; color: #1f4e79; }
h2 { font-size: 12.5pt; margin: 7mm 0 2mm; padding-left: 2mm; border-left: 4px solid #1f4e79; color: #1f4e79;
  break-after: avoid; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.5mm 5mm; margin: 0 0 3mm; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; overflow-wrap: anywhere; }
p { margin: 1.5mm 0; }
table { width: 100%; border-collapse: collapse; font-size: 8pt; margin: 2mm 0; }
thead { display: table-header-group; }
th { background: #dde6f0; color: #1a1a1a; font-weight: bold; text-align: left; vertical-align: bottom;
  word-break: keep-all; }
th, td { border: 1px solid #b7c4d1; padding: 0.8mm 1.2mm; white-space: pre-line; }
td { overflow-wrap: anywhere; }
td.nowrap { white-space: nowrap; }
td { vertical-align: top; }
tr { break-inside: avoid; }
tbody tr:nth-child(even) td { background: #f4f7fa; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { display: block; font-size: 7pt; color: #777; }
.muted { color: #777; } .good { color: #1b7a3a; } .warning { color: #a85d00; } .bad { color: #b3261e; font-weight: bold; }
footer { margin-top: 8mm; font-size: 8pt; color: #555; border-top: 1px solid #b7c4d1; padding-top: 1mm; }
"#;

/// Renders the whole report. Every text from the data is HTML-escaped.
pub fn render_html(report: &MonthlyReport, lang: Lang) -> String {
    let content = content::build(report, lang);
    let mut html = String::with_capacity(64 * 1024);
    write_page(&mut html, &content);
    html
}

fn write_page(html: &mut String, content: &ReportContent) {
    let title = &content.footer;
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n<dl class=\"facts\">\n",
        content.lang.tag(),
        escape(title),
        escape(&content.title),
    );
    for (label, value) in &content.facts {
        let _ = writeln!(html, "<dt>{}</dt><dd>{}</dd>", escape(label), escape(value));
    }
    html.push_str("</dl>\n");
    for section in &content.sections {
        let _ = writeln!(html, "<section>\n<h2>{}</h2>", escape(&section.heading));
        for block in &section.blocks {
            match block {
                Block::Paragraph(text) => {
                    let _ = writeln!(html, "<p>{}</p>", escape(text));
                }
                Block::Table(table) => write_table(html, table),
            }
        }
        html.push_str("</section>\n");
    }
    let _ = write!(html, "<footer>{}</footer>\n</body>\n</html>\n", escape(&content.footer));
}

fn write_table(html: &mut String, table: &Table) {
    html.push_str("<table>\n<colgroup>");
    let total_share: f32 = table.columns.iter().map(|column| column.share).sum();
    for column in &table.columns {
        let percent = if total_share > 0.0 { column.share * 100.0 / total_share } else { 0.0 };
        let _ = write!(html, "<col style=\"width:{percent:.1}%\">");
    }
    html.push_str("</colgroup>\n<thead><tr>");
    for column in &table.columns {
        let _ = write!(
            html,
            "<th{}>{}</th>",
            cell_classes(column.align, Tone::Normal, false),
            escape(&column.label)
        );
    }
    html.push_str("</tr></thead>\n<tbody>\n");
    for row in &table.rows {
        html.push_str("<tr>");
        for (cell, column) in row.iter().zip(&table.columns) {
            // What the PDF keeps on one line (figures, states, short dates) stays on one here too.
            write_cell(html, cell, column.align, column.max_lines == 1);
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</tbody>\n</table>\n");
}

fn write_cell(html: &mut String, cell: &Cell, align: Align, one_line: bool) {
    let _ = write!(html, "<td{}>{}", cell_classes(align, cell.tone, one_line), escape(&cell.text));
    if let Some(note) = &cell.note {
        let _ = write!(html, "<span class=\"note\">{}</span>", escape(note));
    }
    html.push_str("</td>");
}

fn cell_classes(align: Align, tone: Tone, one_line: bool) -> String {
    let mut classes = Vec::new();
    if align == Align::Right {
        classes.push("num");
    }
    if one_line {
        classes.push("nowrap");
    }
    match tone {
        Tone::Normal => {}
        Tone::Muted => classes.push("muted"),
        Tone::Good => classes.push("good"),
        Tone::Warning => classes.push("warning"),
        Tone::Bad => classes.push("bad"),
    }
    if classes.is_empty() {
        String::new()
    } else {
        format!(" class=\"{}\"", classes.join(" "))
    }
}

/// Escapes for both element content and quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 16);
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            character => escaped.push(character),
        }
    }
    escaped
}
