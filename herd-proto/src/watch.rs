//! The watch lines of the WebSocket door (PROTOCOL.md §10): `WATCH CLIENT <id>`,
//! `WATCH NEAR <lat> <lon> <radius_km>`, and `UNWATCH` with the same arguments.
//!
//! They are client lines like IAMAT and WHATSAT, parsed here so the grammar lives once: the
//! location uses the IAMAT location's rules (decimal degrees, latitude within -90..=90, longitude
//! within -180..=180; the sign may be left out here, since the two numbers are separate fields) and
//! the radius is WHATSAT's (greater than 0, at most 50 km).

#[allow(unused_imports)]
use crate::prelude::*;
use alloc::borrow::Cow;

use crate::error::{ErrorKind, ParseError};
use crate::message::{Location, Radius};
use crate::parse;

/// What a watch matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Watch<'a> {
    /// Every record of one client.
    Client(Cow<'a, [u8]>),
    /// Every record whose location is within `radius` kilometres of `center`.
    Near {
        /// The centre, as an ISO 6709 location (the signs written out).
        center: Location<'a>,
        /// The radius in kilometres, as in WHATSAT.
        radius: Radius<'a>,
    },
}

/// A `WATCH …` or `UNWATCH …` line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WatchLine<'a> {
    /// Start pushing the records that match.
    Watch(Watch<'a>),
    /// Stop one watch made by the same arguments.
    Unwatch(Watch<'a>),
}

impl<'a> WatchLine<'a> {
    /// Parses a watch line (white space as in every client line).
    ///
    /// # Errors
    /// [`ErrorKind::UnknownCommand`] for a line that is not `WATCH`/`UNWATCH` or a kind that is not
    /// `CLIENT`/`NEAR`; a field error of the location or radius otherwise.
    pub fn parse(line: &'a [u8]) -> Result<Self, ParseError> {
        let mut words = parse::Words::new(line);
        let Some((at, cmd)) = words.next() else {
            return Err(ParseError::new(0, ErrorKind::Empty));
        };
        let watch = match cmd {
            b"WATCH" | b"UNWATCH" => Watch::parse_fields(line, &mut words)?,
            _ => return Err(ParseError::new(at, ErrorKind::UnknownCommand)),
        };
        if let Some((extra, _)) = words.next() {
            return Err(ParseError::new(extra, ErrorKind::ExtraField));
        }
        Ok(if cmd == b"WATCH" {
            WatchLine::Watch(watch)
        } else {
            WatchLine::Unwatch(watch)
        })
    }

    /// Appends the line (without terminator).
    pub fn write_to(&self, dst: &mut Vec<u8>) {
        let (cmd, w): (&[u8], _) = match self {
            WatchLine::Watch(w) => (b"WATCH ", w),
            WatchLine::Unwatch(w) => (b"UNWATCH ", w),
        };
        dst.extend_from_slice(cmd);
        w.write_to(dst);
    }

    /// The line as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_to(&mut v);
        v
    }

    /// The watch the line names.
    pub fn watch(&self) -> &Watch<'a> {
        match self {
            WatchLine::Watch(w) | WatchLine::Unwatch(w) => w,
        }
    }
}

impl<'a> Watch<'a> {
    fn parse_fields(line: &'a [u8], words: &mut parse::Words<'a>) -> Result<Self, ParseError> {
        let missing = || ParseError::new(line.len(), ErrorKind::MissingField);
        let (at, kind) = words.next().ok_or_else(missing)?;
        match kind {
            b"CLIENT" => {
                let (_, id) = words.next().ok_or_else(missing)?;
                Ok(Watch::Client(Cow::Borrowed(id)))
            }
            b"NEAR" => {
                let (lat_at, lat) = words.next().ok_or_else(missing)?;
                let (lon_at, lon) = words.next().ok_or_else(missing)?;
                let (r_at, r) = words.next().ok_or_else(missing)?;
                // The IAMAT location grammar, with the signs a client may leave out here.
                let mut text = Vec::with_capacity(lat.len() + lon.len() + 2);
                for (f, f_at) in [(lat, lat_at), (lon, lon_at)] {
                    if f.first().is_some_and(u8::is_ascii_digit) {
                        text.push(b'+');
                    } else if !matches!(f.first(), Some(b'+' | b'-')) {
                        return Err(ParseError::new(f_at, ErrorKind::Location));
                    }
                    text.extend_from_slice(f);
                }
                let center = Location::parse(&text)
                    .map_err(|e| {
                        let at = if e.kind == ErrorKind::LongitudeRange {
                            lon_at
                        } else {
                            lat_at
                        };
                        ParseError::new(at, e.kind)
                    })?
                    .into_owned();
                let radius =
                    Radius::parse(r).map_err(|e| ParseError::new(r_at + e.offset, e.kind))?;
                Ok(Watch::Near { center, radius })
            }
            _ => Err(ParseError::new(at, ErrorKind::UnknownCommand)),
        }
    }

    /// Appends `CLIENT <id>` or `NEAR <lat> <lon> <radius>`.
    pub fn write_to(&self, dst: &mut Vec<u8>) {
        match self {
            Watch::Client(id) => {
                dst.extend_from_slice(b"CLIENT ");
                dst.extend_from_slice(id);
            }
            Watch::Near { center, radius } => {
                dst.extend_from_slice(b"NEAR ");
                dst.extend_from_slice(center.latitude_str().as_bytes());
                dst.push(b' ');
                dst.extend_from_slice(center.longitude_str().as_bytes());
                dst.push(b' ');
                dst.extend_from_slice(radius.as_str().as_bytes());
            }
        }
    }

    /// Copies what is borrowed.
    pub fn into_owned(self) -> Watch<'static> {
        match self {
            Watch::Client(id) => Watch::Client(Cow::Owned(id.into_owned())),
            Watch::Near { center, radius } => Watch::Near {
                center: center.into_owned(),
                radius: radius.into_owned(),
            },
        }
    }
}

/// Great-circle distance in kilometres between two points given in degrees (haversine, on a sphere
/// of the Earth's mean radius): the one distance the herd uses, for `WATCH NEAR` and the tools.
#[cfg(feature = "std")]
pub fn km_between(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0088 * a.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> WatchLine<'_> {
        WatchLine::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
    }

    fn err(line: &str) -> ErrorKind {
        WatchLine::parse(line.as_bytes()).unwrap_err().kind
    }

    #[test]
    fn watch_lines_parse_and_write_back() {
        let w = ok("WATCH CLIENT kiwi.cs.ucla.edu");
        assert_eq!(
            w,
            WatchLine::Watch(Watch::Client(Cow::Borrowed(b"kiwi.cs.ucla.edu")))
        );
        assert_eq!(w.to_bytes(), b"WATCH CLIENT kiwi.cs.ucla.edu");
        let n = ok(" UNWATCH\tNEAR 34.068930 -118.445127 10.5 ");
        let WatchLine::Unwatch(Watch::Near { center, radius }) = &n else {
            panic!("{n:?}")
        };
        assert_eq!(center.as_str(), "+34.068930-118.445127");
        assert_eq!(radius.as_str(), "10.5");
        assert_eq!(n.to_bytes(), b"UNWATCH NEAR +34.068930 -118.445127 10.5");
        assert_eq!(WatchLine::parse(&n.to_bytes()).unwrap(), n);
        assert_eq!(
            ok("WATCH NEAR +90 +180 50").to_bytes(),
            b"WATCH NEAR +90 +180 50"
        );
    }

    #[test]
    fn bad_watch_lines_say_why() {
        assert_eq!(err(""), ErrorKind::Empty);
        assert_eq!(err("watch CLIENT a"), ErrorKind::UnknownCommand);
        assert_eq!(err("WATCH SERVER a"), ErrorKind::UnknownCommand);
        assert_eq!(err("WATCH CLIENT"), ErrorKind::MissingField);
        assert_eq!(err("WATCH CLIENT a b"), ErrorKind::ExtraField);
        assert_eq!(err("WATCH NEAR 1 2"), ErrorKind::MissingField);
        assert_eq!(err("WATCH NEAR 91 0 1"), ErrorKind::LatitudeRange);
        assert_eq!(err("WATCH NEAR 0 -180.5 1"), ErrorKind::LongitudeRange);
        assert_eq!(err("WATCH NEAR 1e3 0 1"), ErrorKind::Location);
        assert_eq!(err("WATCH NEAR x 0 1"), ErrorKind::Location);
        assert_eq!(err("WATCH NEAR 0 0 0"), ErrorKind::RadiusRange);
        assert_eq!(err("WATCH NEAR 0 0 50.1"), ErrorKind::RadiusRange);
        assert_eq!(err("WATCH NEAR 0 0 -1"), ErrorKind::Radius);
        let e = WatchLine::parse(b"WATCH NEAR 0 0 -1").unwrap_err();
        assert_eq!(e.offset, 15);
    }

    #[cfg(feature = "std")]
    #[test]
    fn distances() {
        assert!(km_between(0.0, 0.0, 0.0, 0.0).abs() < 1e-9);
        let d = km_between(34.068930, -118.445127, 34.0522, -118.2437);
        assert!((d - 18.6).abs() < 0.5, "{d}");
        // Across the antimeridian, the short way.
        assert!(km_between(0.0, 179.9, 0.0, -179.9) < 23.0);
    }
}
