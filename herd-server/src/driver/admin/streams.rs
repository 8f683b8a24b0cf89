//! The live page's `/events` streams: at most [`MAX_STREAMS`] open at once, and
//! [`MAX_STREAMS_PER_ADDRESS`] from one address, each holding a `StreamSlot`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Most `/events` streams served at once (each costs a gathering per tick).
pub const MAX_STREAMS: usize = 16;
/// Most `/events` streams of one address: a quarter of [`MAX_STREAMS`], so one address (a script
/// opening streams and leaving them idle) cannot lock the operator out of the live page.
pub const MAX_STREAMS_PER_ADDRESS: usize = MAX_STREAMS / 4;

/// The `/events` streams open: in all, and by address.
#[derive(Default)]
pub(crate) struct Streams {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// Why an `/events` stream was not opened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// [`MAX_STREAMS`] are open.
    Full,
    /// [`MAX_STREAMS_PER_ADDRESS`] are open from this address.
    Address,
}

/// One `/events` stream's place among [`MAX_STREAMS`] (and its address's among
/// [`MAX_STREAMS_PER_ADDRESS`]); given back when dropped.
pub(crate) struct StreamSlot {
    streams: Arc<Mutex<Streams>>,
    from: IpAddr,
}

impl StreamSlot {
    pub(crate) fn take(streams: &Arc<Mutex<Streams>>, from: IpAddr) -> Result<Self, NoSlot> {
        let mut s = streams.lock().unwrap_or_else(|p| p.into_inner());
        if s.total >= MAX_STREAMS {
            return Err(NoSlot::Full);
        }
        let mine = s.by_address.entry(from).or_default();
        if *mine >= MAX_STREAMS_PER_ADDRESS {
            return Err(NoSlot::Address);
        }
        *mine += 1;
        s.total += 1;
        Ok(StreamSlot {
            streams: streams.clone(),
            from,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut s = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        s.total -= 1;
        if let Some(n) = s.by_address.get_mut(&self.from) {
            *n -= 1;
            if *n == 0 {
                s.by_address.remove(&self.from);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_slots_are_bounded_in_all_and_by_address() {
        let streams = Arc::default();
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        let mut slots: Vec<_> = (0..MAX_STREAMS_PER_ADDRESS)
            .map(|_| StreamSlot::take(&streams, ip(1)).unwrap())
            .collect();
        assert_eq!(
            StreamSlot::take(&streams, ip(1)).err(),
            Some(NoSlot::Address)
        );
        for n in 2..=(MAX_STREAMS / MAX_STREAMS_PER_ADDRESS) as u8 {
            for _ in 0..MAX_STREAMS_PER_ADDRESS {
                slots.push(StreamSlot::take(&streams, ip(n)).unwrap());
            }
        }
        assert_eq!(StreamSlot::take(&streams, ip(99)).err(), Some(NoSlot::Full));
        slots.truncate(0);
        assert!(StreamSlot::take(&streams, ip(1)).is_ok());
        assert!(streams.lock().unwrap().by_address.len() <= 1);
    }
}
