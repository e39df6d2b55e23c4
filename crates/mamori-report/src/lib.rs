//! The monthly security report of one institution, for hospital IT staff and management, in
//! Japanese (the default) or English, as a printable HTML page or an A4 PDF.
//!
//! The manager gathers the month's figures into a [`MonthlyReport`] (plain serde data: endpoints,
//! totals and last month's totals, the most frequent rules, network isolations, backup health and
//! the state of the MHLW guideline checklist) and calls [`render_html`] or [`render_pdf`]. This
//! crate owns the data model, every printed word ([`TextKey`], one table of Japanese and English
//! texts) and the layout. It does no I/O beyond reading the font file it is given.
//! [`MonthlyReport::validate`] checks a report's timestamps where bad data should be refused; the
//! renderers themselves print an unreadable timestamp as it is. [`check_font`] lets the manager
//! report a missing font at start-up rather than when the first report is due.
//!
//! The PDF embeds a subset of the Japanese font [`DEFAULT_FONT`] (IPAexGothic) so that it prints
//! anywhere, carries a ToUnicode map so that its text can be searched and extracted, breaks long
//! tables across pages with the header row repeated, and numbers its pages `1 / 3`.
//!
//! Text that comes from the network (hostnames, rule titles, reasons) is HTML-escaped, stripped of
//! control and bidirectional-override characters, and wrapped or cut so that it stays on the page.

mod content;
mod html;
mod i18n;
mod model;
mod pdf;

use std::path::PathBuf;

pub use html::render_html;
pub use i18n::{Lang, TextKey};
pub use model::{
    BackupRow, ChecklistRow, ChecklistStatus, EndpointRow, EndpointStatus, IsolationRow, IsolationTrigger,
    MonthlyReport, ReportMonth, RuleCount, Severity, SeverityCounts, Totals,
};
pub use pdf::{check_font, render_pdf};

/// IPAexGothic as installed by Debian's `fonts-ipaexfont-gothic` (the project's setup script
/// installs it).
pub const DEFAULT_FONT: &str = "/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf";

/// The Debian package that provides [`DEFAULT_FONT`], named in font errors.
pub const DEFAULT_FONT_PACKAGE: &str = "fonts-ipaexfont-gothic";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "cannot read the report font {path}: {source}; install the Debian package \
         {DEFAULT_FONT_PACKAGE} (IPAexGothic, {DEFAULT_FONT}) or give the path of another Japanese font"
    )]
    FontUnreadable { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is not a usable report font: {reason}; install the Debian package {DEFAULT_FONT_PACKAGE} \
         (IPAexGothic, {DEFAULT_FONT}) or give the path of another Japanese TrueType/OpenType font"
    )]
    FontUnusable { path: PathBuf, reason: String },
    #[error("invalid report month {value:?}: expected YYYY-MM with a month from 01 to 12")]
    InvalidMonth { value: String },
    #[error("{field} is not an RFC 3339 timestamp: {value:?}")]
    InvalidTimestamp { field: String, value: String },
    #[error("the report period starts ({start}) after it ends ({end})")]
    InvalidPeriod { start: String, end: String },
    #[error("unknown report language {value:?}: expected \"ja\" or \"en\"")]
    UnknownLanguage { value: String },
    #[error("writing the PDF failed: {reason}")]
    Pdf { reason: String },
}
