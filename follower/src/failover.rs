//! Failover between several host URLs: which URL the next connection attempt goes to.
//!
//! Attempts are grouped in *rounds*, one per backoff step: a round tries each URL at most once,
//! moving on at once when a URL cannot be reached, and ends at the first URL that accepts the
//! connection (when that connection ends, the next round starts at the URL after it) or when
//! every URL failed (the next round starts again at the last URL where authentication
//! succeeded). Between rounds the connection task waits its backoff delay.

/// The configured URLs and the failover cursor.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    urls: Vec<String>,
    /// Index of the next URL to try.
    next: usize,
    /// URLs tried in the current round.
    tried: usize,
    /// Where authentication last succeeded (the first URL until then).
    preferred: usize,
}

impl Endpoints {
    /// `urls` must not be empty (checked by `Config::validate`); an empty list yields no URL.
    pub(crate) fn new(urls: Vec<String>) -> Self {
        Endpoints {
            urls,
            next: 0,
            tried: 0,
            preferred: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.urls.len()
    }

    pub(crate) fn url(&self, index: usize) -> &str {
        self.urls.get(index).map_or("", String::as_str)
    }

    /// The URL to try now (index and text), or `None` when this round has tried every URL.
    pub(crate) fn next_in_round(&mut self) -> Option<usize> {
        if self.tried >= self.urls.len() {
            return None;
        }
        let index = self.next;
        self.next = (self.next + 1) % self.urls.len();
        self.tried += 1;
        Some(index)
    }

    /// Where the next round will start.
    pub(crate) fn upcoming(&self) -> &str {
        self.url(self.next)
    }

    /// A connection to `index` was made and has ended; `authenticated` when it got that far.
    /// The next round starts at the URL after it.
    pub(crate) fn connection_ended(&mut self, index: usize, authenticated: bool) {
        if authenticated {
            self.preferred = index;
        }
        self.start_round((index + 1) % self.urls.len().max(1));
    }

    /// No URL of this round could be reached: the next round starts at the preferred URL.
    pub(crate) fn round_failed(&mut self) {
        self.start_round(self.preferred);
    }

    fn start_round(&mut self, from: usize) {
        self.next = from;
        self.tried = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: usize) -> Endpoints {
        Endpoints::new((0..n).map(|i| format!("ws://h{i}/")).collect())
    }

    fn round(e: &mut Endpoints) -> Vec<usize> {
        std::iter::from_fn(|| e.next_in_round()).collect()
    }

    #[test]
    fn one_url_is_tried_once_per_round() {
        let mut e = eps(1);
        assert_eq!(round(&mut e), vec![0]);
        e.round_failed();
        assert_eq!(e.upcoming(), "ws://h0/");
        assert_eq!(round(&mut e), vec![0]);
        e.connection_ended(0, true);
        assert_eq!(round(&mut e), vec![0]);
    }

    #[test]
    fn unreachable_hosts_are_skipped_within_a_round() {
        let mut e = eps(3);
        // h0 and h1 unreachable, h2 accepts.
        assert_eq!(e.next_in_round(), Some(0));
        assert_eq!(e.next_in_round(), Some(1));
        assert_eq!(e.next_in_round(), Some(2));
        // Authenticated on h2, then the connection dropped: the next round starts after it and
        // wraps round to h2 last.
        e.connection_ended(2, true);
        assert_eq!(e.upcoming(), "ws://h0/");
        assert_eq!(round(&mut e), vec![0, 1, 2]);
        // Nothing reachable: start again from the last host that worked.
        e.round_failed();
        assert_eq!(e.upcoming(), "ws://h2/");
        assert_eq!(round(&mut e), vec![2, 0, 1]);
    }

    #[test]
    fn a_connection_that_never_authenticated_moves_on_without_changing_the_preference() {
        let mut e = eps(2);
        assert_eq!(e.next_in_round(), Some(0));
        e.connection_ended(0, true);
        assert_eq!(e.next_in_round(), Some(1));
        e.connection_ended(1, false);
        assert_eq!(e.next_in_round(), Some(0));
        assert_eq!(e.next_in_round(), Some(1));
        assert_eq!(e.next_in_round(), None);
        e.round_failed();
        assert_eq!(
            e.next_in_round(),
            Some(0),
            "host 0 is where auth last worked"
        );
    }

    #[test]
    fn empty_list_yields_nothing() {
        let mut e = eps(0);
        assert_eq!(e.next_in_round(), None);
        e.connection_ended(0, false);
        e.round_failed();
        assert_eq!(e.upcoming(), "");
    }
}
