//! A box's telemetry, as pure functions with no I/O: [`exposition`] parses
//! the Prometheus text a box serves (with the contract's limits enforced
//! while parsing), [`figures`] turns one scrape plus the previous one into
//! the figures the cloud keeps (rates, ratios, latency quantiles), and
//! [`codec`] packs a window of samples into a few bytes per value
//! ([`recorder`] packs the open one as it fills). The
//! relay's scraper, the store and the fuzz targets share it.

pub mod codec;
pub mod exposition;
pub mod figures;
pub mod recorder;

pub use exposition::{parse, Limits, ParseError, Sample};
pub use figures::{AllowList, Figures, ModelInfo, SeriesKey, Tracker};
