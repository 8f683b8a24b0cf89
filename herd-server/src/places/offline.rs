//! The offline back-end: GeoNames `cities1000` (CC BY 4.0) in an R-tree, answered nearest first.
//!
//! Points live on the unit sphere (x, y, z), where straight-line distance grows with great-circle
//! distance, so the R-tree's nearest-neighbour walk yields places nearest first and stops at the radius.

use std::borrow::Cow;
use std::sync::OnceLock;

use rstar::{PointDistance, RTree, RTreeObject, AABB};
use serde_json::{json, Value};

use super::Answer;
use crate::node::Lookup;

static DATA: &str = include_str!("../../data/cities1000.csv");

const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// The credit every offline answer carries.
pub const ATTRIBUTION: &str =
    "Place data from <a href=\"https://www.geonames.org/\">GeoNames</a> (cities1000), CC BY 4.0";

/// One place of the data set: its point, and where its CSV line starts. Names are read from the line
/// (compiled into the binary) only for the places an answer returns, which keeps the index at 32 bytes
/// a place instead of a heap string or two each.
#[derive(Debug)]
pub struct Place {
    xyz: [f64; 3],
    start: u32,
    row: u32,
}

/// A place's details, parsed from its line.
struct Details {
    lat: f64,
    lon: f64,
    name: String,
    vicinity: String,
}

impl Place {
    fn details(&self) -> Option<Details> {
        let line = DATA.get(self.start as usize..)?.lines().next()?;
        parse_line(line)
    }
}

fn parse_line(line: &str) -> Option<Details> {
    let mut f = csv_fields(line);
    let lat: f64 = f.next()?.parse().ok()?;
    let lon: f64 = f.next()?.parse().ok()?;
    let name = f.next()?;
    let admin1 = f.next().unwrap_or_default();
    let admin2 = f.next().unwrap_or_default();
    let cc = f.next().unwrap_or_default();
    let vicinity: Vec<&str> = [&*admin2, &*admin1, &*cc]
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    Some(Details {
        lat,
        lon,
        name: name.trim().to_owned(),
        vicinity: vicinity.join(", "),
    })
}

impl RTreeObject for Place {
    type Envelope = AABB<[f64; 3]>;
    fn envelope(&self) -> Self::Envelope {
        AABB::from_point(self.xyz)
    }
}

impl PointDistance for Place {
    fn distance_2(&self, p: &[f64; 3]) -> f64 {
        self.xyz.iter().zip(p).map(|(a, b)| (a - b) * (a - b)).sum()
    }
}

fn xyz(lat: f64, lon: f64) -> [f64; 3] {
    let (lat, lon) = (lat.to_radians(), lon.to_radians());
    [lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()]
}

/// Great-circle distance in metres between two points on the unit sphere.
fn metres_between(a: &[f64; 3], b: &[f64; 3]) -> f64 {
    let chord = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    2.0 * (chord / 2.0).min(1.0).asin() * EARTH_RADIUS_M
}

/// The fields of one CSV line (RFC 4180): a field may be quoted to hold commas, with `""` for a quote.
fn csv_fields(line: &str) -> impl Iterator<Item = Cow<'_, str>> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let r = rest?;
        if let Some(quoted) = r.strip_prefix('"') {
            // The closing quote is the first one not doubled.
            let bytes = quoted.as_bytes();
            let mut end = 0;
            while end < bytes.len() {
                if bytes[end] == b'"' {
                    if bytes.get(end + 1) == Some(&b'"') {
                        end += 2;
                        continue;
                    }
                    break;
                }
                end += 1;
            }
            let field = &quoted[..end];
            rest = quoted
                .get(end + 1..)
                .and_then(|after| after.strip_prefix(','));
            Some(if field.contains("\"\"") {
                Cow::Owned(field.replace("\"\"", "\""))
            } else {
                Cow::Borrowed(field)
            })
        } else {
            match r.split_once(',') {
                Some((field, after)) => {
                    rest = Some(after);
                    Some(Cow::Borrowed(field))
                }
                None => {
                    rest = None;
                    Some(Cow::Borrowed(r))
                }
            }
        }
    })
}

static INDEX: OnceLock<RTree<Place>> = OnceLock::new();

/// Waits until the index is built, off the event loop: it is built beside the start (a moment; far
/// longer unoptimised or on a busy machine), and a look-up that comes sooner must not hold up the
/// connections and peer links that share its loop (their keep-alives above all) meanwhile.
pub async fn ready() {
    if INDEX.get().is_none() {
        let _ = tokio::task::spawn_blocking(index).await;
    }
}

/// The index, built once (about 144,000 places).
pub fn index() -> &'static RTree<Place> {
    INDEX.get_or_init(|| {
        let header = DATA.find('\n').map_or(DATA.len(), |i| i + 1);
        let mut start = header;
        let mut places = Vec::with_capacity(150_000);
        for (row, line) in DATA[header..].split_inclusive('\n').enumerate() {
            let mut f = csv_fields(line.trim_end());
            let lat = f.next().and_then(|v| v.parse::<f64>().ok());
            let lon = f.next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(lat), Some(lon)) = (lat, lon) {
                places.push(Place {
                    xyz: xyz(lat, lon),
                    start: start as u32,
                    row: row as u32,
                });
            }
            start += line.len();
        }
        let tree = RTree::bulk_load(places);
        release_data();
        tree
    })
}

/// Hands the pages of [`DATA`] back once a pass over the whole of it is done (the index's build,
/// [`land`]): 7.8 MB that only the lines of answered places are read from again, a page each.
///
/// `DATA` is compiled into the binary: read-only pages of its file, which count in the process's
/// resident memory once read. `MADV_PAGEOUT` asks the kernel to reclaim them; a page read later
/// comes back from the file (or the page cache), the same bytes. Unlike `MADV_DONTNEED` it can
/// never lose data, even were the binary loaded into anonymous memory (a packed executable): such
/// pages would go to swap or stay. Only whole pages inside `DATA` are named; where it is not
/// supported (kernels before 5.4, other systems) nothing changes.
fn release_data() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sysconf` only reads a system constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let (start, len) = (DATA.as_ptr() as usize, DATA.len());
        let first = start.next_multiple_of(page.max(1));
        let end = (start + len) / page.max(1) * page.max(1);
        if end > first {
            // SAFETY: `first..end` lies within `DATA`, immutable `'static` bytes that nothing
            // writes; `MADV_PAGEOUT` changes no byte of memory (it only lets the kernel reclaim
            // the pages, which a later read faults back in), so no Rust reference is affected.
            // Its result is ignored: a refusal leaves the pages resident, as before.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_PAGEOUT);
            }
        }
    }
}

/// Size in degrees of the cells of [`land`].
pub const LAND_CELL: f64 = 1.5;

/// The south-west corners (latitude, longitude) of the [`LAND_CELL`]-degree cells that hold at least
/// one place of the data set, in the data's order: about 5,000 cells, a faint map of where people
/// live that the live page draws under the clients without fetching any map from outside.
pub fn land() -> Vec<(f64, f64)> {
    let header = DATA.find('\n').map_or(DATA.len(), |i| i + 1);
    let mut seen = std::collections::HashSet::new();
    let mut cells = Vec::new();
    for line in DATA[header..].lines() {
        let mut f = line.splitn(3, ',');
        let lat = f.next().and_then(|v| v.parse::<f64>().ok());
        let lon = f.next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(lat), Some(lon)) = (lat, lon) {
            let cell = (
                (lat / LAND_CELL).floor() as i32,
                (lon / LAND_CELL).floor() as i32,
            );
            if seen.insert(cell) {
                cells.push((f64::from(cell.0) * LAND_CELL, f64::from(cell.1) * LAND_CELL));
            }
        }
    }
    release_data();
    cells
}

/// Places within the radius of the look-up, nearest first, at most `bound` of them.
pub fn search(q: &Lookup) -> Answer {
    let radius_m = q.radius.km() * 1000.0;
    let centre = xyz(q.latitude(), q.longitude());
    let results: Vec<Value> = index()
        .nearest_neighbor_iter(&centre)
        .take(usize::from(q.bound))
        .take_while(|p| metres_between(&p.xyz, &centre) <= radius_m)
        .filter_map(|p| {
            let d = p.details()?;
            Some(json!({
                "geometry": { "location": { "lat": d.lat, "lng": d.lon } },
                "name": d.name,
                "place_id": format!("geonames-cities1000-{}", p.row),
                "types": ["locality", "political"],
                "vicinity": d.vicinity,
            }))
        })
        .collect();
    if q.bound == 0 {
        return Answer::new(
            json!({ "html_attributions": [ATTRIBUTION], "results": [], "status": "OK" }),
        );
    }
    Answer::ok(results, vec![json!(ATTRIBUTION)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_proto::Radius;

    fn lookup(lat: f64, lon: f64, km: &str, bound: u8) -> Lookup {
        let location = herd_proto::Location::from_degrees(lat, lon).unwrap();
        let line = format!("AT Test +0.000000000 c {} 1", location.as_str());
        Lookup {
            record: herd_proto::AtRecord::parse(line.as_bytes())
                .unwrap()
                .into_owned(),
            radius: Radius::parse(km.as_bytes()).unwrap().into_owned(),
            bound,
        }
    }

    #[test]
    fn quoted_csv_fields() {
        let f: Vec<Cow<'_, str>> = csv_fields(r#"1.5,2.5,"Xeraco,Jaraco",Valencia,,ES"#).collect();
        assert_eq!(f, ["1.5", "2.5", "Xeraco,Jaraco", "Valencia", "", "ES"]);
        let f: Vec<Cow<'_, str>> = csv_fields(r#"1,2,San Andres,"A, B",,CO"#).collect();
        assert_eq!(f, ["1", "2", "San Andres", "A, B", "", "CO"]);
        let f: Vec<Cow<'_, str>> = csv_fields(r#"6.2,124.8,"T""boli",Davao,,PH"#).collect();
        assert_eq!(f, ["6.2", "124.8", "T\"boli", "Davao", "", "PH"]);
    }

    #[test]
    fn near_ucla() {
        let a = search(&lookup(34.068930, -118.445127, "10", 5));
        assert_eq!(a.status(), "OK");
        let names: Vec<&str> = a.json["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 5);
        assert!(
            names.contains(&"Beverly Hills") || names.contains(&"Century City"),
            "{names:?}"
        );
        assert_eq!(a.json["html_attributions"][0], ATTRIBUTION);
    }

    #[test]
    fn land_is_a_few_thousand_cells_of_the_places() {
        let cells = land();
        assert!((3_000..8_000).contains(&cells.len()), "{}", cells.len());
        // Los Angeles is land; the middle of the Pacific is not.
        let holds = |lat: f64, lon: f64| {
            cells.iter().any(|&(a, o)| {
                (a..a + LAND_CELL).contains(&lat) && (o..o + LAND_CELL).contains(&lon)
            })
        };
        assert!(holds(34.07, -118.45));
        assert!(!holds(0.0, -140.0));
    }

    #[test]
    fn nothing_in_the_middle_of_the_pacific() {
        let a = search(&lookup(0.0, -140.0, "50", 20));
        assert_eq!(a.status(), "ZERO_RESULTS");
        assert_eq!(a.json["results"], json!([]));
    }

    #[test]
    fn nearest_first_within_radius() {
        let a = search(&lookup(34.068930, -118.445127, "50", 20));
        let results = a.json["results"].as_array().unwrap();
        assert_eq!(results.len(), 20);
        let c = xyz(34.068930, -118.445127);
        let d: Vec<f64> = results
            .iter()
            .map(|r| {
                let l = &r["geometry"]["location"];
                metres_between(
                    &xyz(l["lat"].as_f64().unwrap(), l["lng"].as_f64().unwrap()),
                    &c,
                )
            })
            .collect();
        assert!(d.windows(2).all(|w| w[0] <= w[1]));
        assert!(d.iter().all(|&m| m <= 50_000.0));
    }
}
