//! A set of states held as a bit set indexed by [`StateId`].
//!
//! Because state ids are assigned in document order, iterating the set in
//! ascending id order *is* entry order and descending order is exit order, so
//! the interpreter never sorts.
//!
//! In a large set (more than [`DENSE_WORDS`] words) a second level of bits
//! marks which 64-bit words are non-zero, so iterating, clearing and
//! comparing cost one word per 4 096 states of the document plus the states
//! in the set: a configuration of a handful of states in a 100 000-state
//! document is walked in about 25 word reads, not 1 563 (issue 19: per-event
//! cost independent of document size). A small set has no second level and
//! walks its few words directly, which is faster there (keeping the second
//! level up to date cost a 3-state chart 15% of its events per second).

use serde::{Deserialize, Serialize};

use super::StateId;

/// A set of states of one document, iterated in document order.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StateSet {
    /// Bit `i % 64` of word `i / 64` is state `i`.
    words: Vec<u64>,
    /// Bit `w % 64` of word `w / 64` is set exactly when `words[w] != 0`;
    /// empty while the set has at most [`DENSE_WORDS`] words.
    summary: Vec<u64>,
}

/// The most words a set walks directly, without a second level (1 024
/// states).
pub const DENSE_WORDS: usize = 16;

impl std::fmt::Debug for StateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter().map(|s| s.0)).finish()
    }
}

impl StateSet {
    /// An empty set able to hold `capacity` states without growing.
    pub fn with_capacity(capacity: usize) -> Self {
        let words = capacity.div_ceil(64);
        StateSet {
            words: vec![0; words],
            summary: if words > DENSE_WORDS {
                vec![0; words.div_ceil(64)]
            } else {
                Vec::new()
            },
        }
    }

    #[inline]
    fn grow_to(&mut self, w: usize) {
        if w >= self.words.len() {
            self.grow(w);
        }
    }

    /// Room for word `w` (sets built with [`StateSet::with_capacity`]
    /// never need it, so it stays out of the hot path).
    #[cold]
    #[inline(never)]
    fn grow(&mut self, w: usize) {
        self.words.resize(w + 1, 0);
        if self.words.len() > DENSE_WORDS {
            let had = self.summary.len();
            self.summary.resize((w + 1).div_ceil(64), 0);
            if had == 0 {
                for (i, word) in self.words.iter().enumerate() {
                    if *word != 0 {
                        self.summary[i / 64] |= 1 << (i % 64);
                    }
                }
            }
        }
    }

    /// Adds a state; returns whether it was absent.
    #[inline(always)]
    pub fn insert(&mut self, s: StateId) -> bool {
        let (w, b) = (s.index() / 64, s.index() % 64);
        self.grow_to(w);
        let word = &mut self.words[w];
        let was = *word & (1 << b) != 0;
        *word |= 1 << b;
        if let Some(bits) = self.summary.get_mut(w / 64) {
            *bits |= 1 << (w % 64);
        }
        !was
    }

    /// Removes a state; returns whether it was present.
    #[inline(always)]
    pub fn remove(&mut self, s: StateId) -> bool {
        let (w, b) = (s.index() / 64, s.index() % 64);
        match self.words.get_mut(w) {
            Some(word) => {
                let was = *word & (1 << b) != 0;
                *word &= !(1 << b);
                if *word == 0
                    && let Some(bits) = self.summary.get_mut(w / 64)
                {
                    *bits &= !(1 << (w % 64));
                }
                was
            }
            None => false,
        }
    }

    /// Whether the state is in the set.
    #[inline]
    pub fn contains(&self, s: StateId) -> bool {
        let (w, b) = (s.index() / 64, s.index() % 64);
        self.words.get(w).is_some_and(|word| word & (1 << b) != 0)
    }

    /// The first non-zero word at index `from` or later, as `(index, word)`
    /// (word `i` holds states `64*i .. 64*i+63`): a cursor over the set's
    /// words that holds no borrow between steps.
    #[inline]
    pub fn first_word_from(&self, from: usize) -> Option<(usize, u64)> {
        if self.summary.is_empty() {
            return self
                .words
                .get(from..)?
                .iter()
                .position(|w| *w != 0)
                .map(|i| (from + i, self.words[from + i]));
        }
        let mut si = from / 64;
        let mut bits = *self.summary.get(si)? & (!0u64 << (from % 64));
        loop {
            if bits != 0 {
                let w = si * 64 + bits.trailing_zeros() as usize;
                return Some((w, self.words[w]));
            }
            si += 1;
            bits = *self.summary.get(si)?;
        }
    }

    /// Number of 64-bit words backing the set.
    #[inline]
    pub fn word_count(&self) -> usize {
        self.words.len()
    }

    /// Whether the set walks its words directly (at most [`DENSE_WORDS`]
    /// words, no second level): then reading every word is cheaper than
    /// looking for the non-zero ones.
    #[inline]
    pub fn is_dense(&self) -> bool {
        self.summary.is_empty()
    }

    /// The `i`-th word (states `64*i .. 64*i+63`).
    #[inline]
    pub fn word(&self, i: usize) -> u64 {
        self.words.get(i).copied().unwrap_or(0)
    }

    /// Removes every state.
    pub fn clear(&mut self) {
        if self.summary.is_empty() {
            self.words.iter_mut().for_each(|w| *w = 0);
            return;
        }
        for si in 0..self.summary.len() {
            let mut bits = std::mem::take(&mut self.summary[si]);
            while bits != 0 {
                self.words[si * 64 + bits.trailing_zeros() as usize] = 0;
                bits &= bits - 1;
            }
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        if self.summary.is_empty() {
            self.words.iter().all(|w| *w == 0)
        } else {
            self.summary.iter().all(|w| *w == 0)
        }
    }

    /// Number of states in the set.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the two sets share a state.
    pub fn intersects(&self, other: &StateSet) -> bool {
        if self.summary.is_empty() || other.summary.is_empty() {
            return self
                .words
                .iter()
                .zip(other.words.iter())
                .any(|(a, b)| a & b != 0);
        }
        self.summary
            .iter()
            .zip(other.summary.iter())
            .enumerate()
            .any(|(si, (a, b))| {
                BitIter(a & b).any(|bit| {
                    let w = si * 64 + bit;
                    self.words[w] & other.words[w] != 0
                })
            })
    }

    /// A small set's non-zero words as one summary word (it has at most
    /// [`DENSE_WORDS`] words), so that its iterators walk it as they walk
    /// the first summary word of a large set, with no branch of their own.
    #[inline(always)]
    fn dense_summary(&self) -> u64 {
        let mut mask = 0u64;
        for (i, w) in self.words.iter().enumerate() {
            mask |= u64::from(*w != 0) << i;
        }
        mask
    }

    /// States in ascending document order (entry order).
    #[inline]
    pub fn iter(&self) -> Iter<'_> {
        if self.summary.is_empty() {
            // The summary word loaded, as if it were summary word 0.
            return Iter {
                set: self,
                next_summary: 1,
                summary: self.dense_summary(),
                base: 0,
                bits: 0,
            };
        }
        Iter {
            set: self,
            next_summary: 0,
            summary: 0,
            base: 0,
            bits: 0,
        }
    }

    /// States in descending document order (exit order).
    #[inline]
    pub fn iter_rev(&self) -> IterRev<'_> {
        if self.summary.is_empty() {
            return IterRev {
                set: self,
                next_summary: 0,
                summary: self.dense_summary(),
                base: 0,
                bits: 0,
            };
        }
        IterRev {
            set: self,
            next_summary: self.summary.len(),
            summary: 0,
            base: 0,
            bits: 0,
        }
    }
}

/// Ascending iterator over a [`StateSet`]: summary bits, then the bits of
/// each word they mark (a plain loop, no nested adapters, as it runs on
/// every microstep).
pub struct Iter<'a> {
    set: &'a StateSet,
    /// The summary word to load when `summary` runs out.
    next_summary: usize,
    /// Unvisited bits of the current summary word (index `next_summary - 1`).
    summary: u64,
    /// First state id of the current word.
    base: usize,
    /// Unvisited bits of the current word.
    bits: u64,
}

impl Iterator for Iter<'_> {
    type Item = StateId;
    #[inline(always)]
    fn next(&mut self) -> Option<StateId> {
        loop {
            if self.bits != 0 {
                let b = self.bits.trailing_zeros() as usize;
                self.bits &= self.bits - 1;
                return Some(StateId((self.base + b) as u32));
            }
            if self.summary != 0 {
                let w = (self.next_summary - 1) * 64 + self.summary.trailing_zeros() as usize;
                self.summary &= self.summary - 1;
                self.base = w * 64;
                self.bits = self.set.words[w];
                continue;
            }
            // (A small set has no summary words: its walk ends here.)
            self.summary = *self.set.summary.get(self.next_summary)?;
            self.next_summary += 1;
        }
    }
}

/// Descending iterator over a [`StateSet`] (exit order).
pub struct IterRev<'a> {
    set: &'a StateSet,
    /// One past the summary word to load when `summary` runs out.
    next_summary: usize,
    /// Unvisited bits of the current summary word (index `next_summary`).
    summary: u64,
    base: usize,
    bits: u64,
}

impl Iterator for IterRev<'_> {
    type Item = StateId;
    #[inline(always)]
    fn next(&mut self) -> Option<StateId> {
        loop {
            if self.bits != 0 {
                let b = 63 - self.bits.leading_zeros() as usize;
                self.bits &= !(1u64 << b);
                return Some(StateId((self.base + b) as u32));
            }
            if self.summary != 0 {
                let hi = 63 - self.summary.leading_zeros() as usize;
                self.summary &= !(1u64 << hi);
                let w = self.next_summary * 64 + hi;
                self.base = w * 64;
                self.bits = self.set.words[w];
                continue;
            }
            // (A small set starts at summary word 0: its walk ends here.)
            if self.next_summary == 0 {
                return None;
            }
            self.next_summary -= 1;
            self.summary = self.set.summary[self.next_summary];
        }
    }
}

struct BitIter(u64);

impl Iterator for BitIter {
    type Item = usize;
    #[inline]
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let b = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(b)
    }
}

impl FromIterator<StateId> for StateSet {
    fn from_iter<I: IntoIterator<Item = StateId>>(iter: I) -> Self {
        let mut set = StateSet::default();
        for s in iter {
            set.insert(s);
        }
        set
    }
}

impl Serialize for StateSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(|s| s.0))
    }
}

impl<'de> Deserialize<'de> for StateSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ids = Vec::<u32>::deserialize(deserializer)?;
        Ok(ids.into_iter().map(StateId).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterates_in_both_orders_across_words() {
        let set: StateSet = [3, 70, 0, 64, 130].into_iter().map(StateId).collect();
        let fwd: Vec<u32> = set.iter().map(|s| s.0).collect();
        let rev: Vec<u32> = set.iter_rev().map(|s| s.0).collect();
        assert_eq!(fwd, vec![0, 3, 64, 70, 130]);
        assert_eq!(rev, vec![130, 70, 64, 3, 0]);
        assert_eq!(set.len(), 5);
    }

    #[test]
    fn insert_remove_contains() {
        let mut set = StateSet::with_capacity(10);
        assert!(set.insert(StateId(5)));
        assert!(!set.insert(StateId(5)));
        assert!(set.contains(StateId(5)));
        assert!(set.remove(StateId(5)));
        assert!(!set.remove(StateId(500)));
        assert!(set.is_empty());
    }

    /// Sets spread over many words of the second level: every operation
    /// agrees with a plain sorted list of the same ids.
    #[test]
    fn sparse_sets_across_the_summary_agree_with_a_list() {
        let ids = [0u32, 63, 64, 4_095, 4_096, 70_000, 99_999];
        let mut set = StateSet::with_capacity(100_000);
        for &i in &ids {
            set.insert(StateId(i));
        }
        assert_eq!(set.iter().map(|s| s.0).collect::<Vec<_>>(), ids);
        assert_eq!(
            set.iter_rev().map(|s| s.0).collect::<Vec<_>>(),
            ids.iter().rev().copied().collect::<Vec<_>>()
        );
        assert_eq!(set.len(), ids.len());
        let mut words = Vec::new();
        let mut cursor = set.first_word_from(0);
        while let Some((w, _)) = cursor {
            words.push(w);
            cursor = set.first_word_from(w + 1);
        }
        assert_eq!(words, [0, 1, 63, 64, 1_093, 1_562]);
        assert_eq!(set.first_word_from(2).map(|(w, _)| w), Some(63));
        assert_eq!(set.first_word_from(65).map(|(w, _)| w), Some(1_093));
        assert_eq!(set.first_word_from(1_563), None);
        // Removing the only state of a word drops the word from the walk.
        assert!(set.remove(StateId(70_000)));
        assert_eq!(set.first_word_from(65).map(|(w, _)| w), Some(1_562));
        let mut other = StateSet::default();
        other.insert(StateId(4_096));
        assert!(set.intersects(&other));
        other.remove(StateId(4_096));
        other.insert(StateId(4_097));
        assert!(!set.intersects(&other));
        set.insert(StateId(4_097));
        assert!(set.intersects(&other));
        set.clear();
        assert!(set.is_empty());
        assert_eq!(set.iter().count(), 0);
        assert_eq!(set, StateSet::with_capacity(100_000));
        // A set that starts small and grows past the dense size (as a
        // snapshot is read back) gains its second level with what it holds.
        let mut grown: StateSet = [3u32, 900].into_iter().map(StateId).collect();
        for &i in &ids {
            grown.insert(StateId(i));
        }
        let mut all: Vec<u32> = ids.to_vec();
        all.extend([3, 900]);
        all.sort();
        assert_eq!(grown.iter().map(|s| s.0).collect::<Vec<_>>(), all);
        assert_eq!(grown.first_word_from(2).map(|(w, _)| w), Some(14));
        assert!(grown.remove(StateId(900)));
        assert_eq!(grown.first_word_from(2).map(|(w, _)| w), Some(63));
    }
}
