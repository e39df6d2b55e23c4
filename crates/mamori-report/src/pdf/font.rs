//! The one font of the PDF: loading it with errors a person can act on, and measuring text with
//! the same glyphs and advances that are later written, so that wrapping and drawing agree.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use skrifa::charmap::Charmap;
use skrifa::instance::{LocationRef, Size};
use skrifa::metrics::GlyphMetrics;
use skrifa::{FontRef, GlyphId, MetadataProvider};

use crate::i18n::{Lang, TextKey};
use crate::ReportError;

/// Characters the report draws itself besides its texts: figures, trend arrows, separators.
const SYMBOLS: &str = "0123456789,.%+-()▲▼±—…/:・";

/// Drawn instead of a character the font lacks. An ASCII character, so that the text layer says
/// `?` rather than mapping an empty box to nothing.
const REPLACEMENT: char = '?';

/// Reads the font file. The error names the path and the Debian package that provides the
/// default font, because the person who sees it is usually the one who has to install it.
pub(crate) fn read_font(path: &Path) -> Result<Vec<u8>, ReportError> {
    std::fs::read(path).map_err(|source| ReportError::FontUnreadable { path: path.to_owned(), source })
}

/// A glyph and its advance in em.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlacedGlyph {
    pub id: GlyphId,
    pub advance_em: f32,
}

/// Measures text in the font. Borrows the font's bytes; cheap lookups are cached because the same
/// few hundred characters are measured thousands of times while wrapping.
pub(crate) struct FontMetrics<'a> {
    charmap: Charmap<'a>,
    glyph_metrics: GlyphMetrics<'a>,
    units_per_em: f32,
    /// Distance from the top of a line box to the baseline, in em.
    pub ascent_em: f32,
    cache: RefCell<HashMap<char, Option<PlacedGlyph>>>,
    replacement: PlacedGlyph,
}

impl<'a> FontMetrics<'a> {
    /// Parses the font and checks that it can draw every text of the report in both languages.
    pub(crate) fn new(data: &'a [u8], path: &Path) -> Result<FontMetrics<'a>, ReportError> {
        let unusable = |reason: String| ReportError::FontUnusable { path: path.to_owned(), reason };
        let font = FontRef::new(data).map_err(|error| unusable(format!("not an OpenType font ({error})")))?;
        let metrics = font.metrics(Size::unscaled(), LocationRef::default());
        if metrics.units_per_em == 0 {
            return Err(unusable("its units per em is zero".to_owned()));
        }
        let units_per_em = f32::from(metrics.units_per_em);
        let charmap = font.charmap();
        let glyph_metrics = font.glyph_metrics(Size::unscaled(), LocationRef::default());
        let lookup = |character: char| {
            let id = charmap.map(character)?;
            let advance = glyph_metrics.advance_width(id)?;
            Some(PlacedGlyph { id, advance_em: advance / units_per_em })
        };
        let replacement =
            lookup(REPLACEMENT).ok_or_else(|| unusable(format!("it has no glyph for '{REPLACEMENT}'")))?;
        let mut missing = BTreeSet::new();
        for key in TextKey::ALL {
            for lang in [Lang::Ja, Lang::En] {
                for character in key.text(lang).chars().chain(SYMBOLS.chars()) {
                    if !character.is_control() && lookup(character).is_none() {
                        missing.insert(character);
                    }
                }
            }
        }
        if !missing.is_empty() {
            let sample: String = missing.iter().take(12).collect();
            return Err(unusable(format!(
                "it lacks {} characters the report needs, e.g. {sample} (a Japanese font is required)",
                missing.len()
            )));
        }
        Ok(FontMetrics {
            charmap,
            glyph_metrics,
            units_per_em,
            ascent_em: metrics.ascent / units_per_em,
            cache: RefCell::new(HashMap::new()),
            replacement,
        })
    }

    /// The glyph that draws `character`, or `None` when the font has none.
    fn lookup(&self, character: char) -> Option<PlacedGlyph> {
        if let Some(cached) = self.cache.borrow().get(&character) {
            return *cached;
        }
        let found = self.charmap.map(character).and_then(|id| {
            let advance = self.glyph_metrics.advance_width(id)?;
            Some(PlacedGlyph { id, advance_em: advance / self.units_per_em })
        });
        self.cache.borrow_mut().insert(character, found);
        found
    }

    /// The character as it will be drawn: itself, or [`REPLACEMENT`] when the font lacks it.
    pub(crate) fn drawable(&self, character: char) -> char {
        if self.lookup(character).is_some() {
            character
        } else {
            REPLACEMENT
        }
    }

    pub(crate) fn glyph(&self, character: char) -> PlacedGlyph {
        self.lookup(character).unwrap_or(self.replacement)
    }

    pub(crate) fn char_width(&self, character: char, size: f32) -> f32 {
        self.glyph(character).advance_em * size
    }

    pub(crate) fn width(&self, text: &str, size: f32) -> f32 {
        text.chars().map(|character| self.char_width(character, size)).sum()
    }
}
