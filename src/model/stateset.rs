//! A set of states held as a bit set indexed by [`StateId`].
//!
//! Because state ids are assigned in document order, iterating the set in
//! ascending id order *is* entry order and descending order is exit order, so
//! the interpreter never sorts.
//!
//! A second level of bits marks which 64-bit words are non-zero, so
//! iterating, clearing and comparing cost one word per 4 096 states of the
//! document plus the states in the set: a configuration of a handful of
//! states in a 100 000-state document is walked in about 25 word reads, not
//! 1 563 (issue 19: per-event cost independent of document size).

use serde::{Deserialize, Serialize};

use super::StateId;

/// A set of states of one document, iterated in document order.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StateSet {
    /// Bit `i % 64` of word `i / 64` is state `i`.
    words: Vec<u64>,
    /// Bit `w % 64` of word `w / 64` is set exactly when `words[w] != 0`.
    summary: Vec<u64>,
}

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
            summary: vec![0; words.div_ceil(64)],
        }
    }

    #[inline]
    fn grow_to(&mut self, w: usize) {
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
            self.summary.resize((w + 1).div_ceil(64), 0);
        }
    }

    /// Adds a state; returns whether it was absent.
    #[inline]
    pub fn insert(&mut self, s: StateId) -> bool {
        let (w, b) = (s.index() / 64, s.index() % 64);
        self.grow_to(w);
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        self.summary[w / 64] |= 1 << (w % 64);
        !was
    }

    /// Removes a state; returns whether it was present.
    #[inline]
    pub fn remove(&mut self, s: StateId) -> bool {
        let (w, b) = (s.index() / 64, s.index() % 64);
        match self.words.get_mut(w) {
            Some(word) => {
                let was = *word & (1 << b) != 0;
                *word &= !(1 << b);
                if *word == 0 {
                    self.summary[w / 64] &= !(1 << (w % 64));
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

    /// The indices of the non-zero words, ascending.
    #[inline]
    fn occupied(&self) -> impl DoubleEndedIterator<Item = usize> + '_ {
        self.summary
            .iter()
            .enumerate()
            .flat_map(|(si, &bits)| BitIter(bits).map(move |b| si * 64 + b))
    }

    /// The non-zero words as `(index, word)`, ascending: word `i` holds
    /// states `64*i .. 64*i+63`. A caller that must not borrow the set
    /// while it works can copy them first ([`StateSet::first_word_from`]).
    #[inline]
    pub fn words(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.occupied().map(|w| (w, self.words[w]))
    }

    /// The first non-zero word at index `from` or later, as `(index, word)`:
    /// a cursor over [`StateSet::words`] that holds no borrow between steps.
    #[inline]
    pub fn first_word_from(&self, from: usize) -> Option<(usize, u64)> {
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

    /// Removes every state.
    pub fn clear(&mut self) {
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
        self.summary.iter().all(|w| *w == 0)
    }

    /// Number of states in the set.
    pub fn len(&self) -> usize {
        self.words().map(|(_, w)| w.count_ones() as usize).sum()
    }

    /// Whether the two sets share a state.
    pub fn intersects(&self, other: &StateSet) -> bool {
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

    /// Adds every state of `other`.
    pub fn union_with(&mut self, other: &StateSet) {
        if let Some(last) = other.occupied().next_back() {
            self.grow_to(last);
        }
        for (w, word) in other.words() {
            self.words[w] |= word;
            self.summary[w / 64] |= 1 << (w % 64);
        }
    }

    /// States in ascending document order (entry order).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = StateId> + '_ {
        self.occupied()
            .flat_map(move |wi| BitIter(self.words[wi]).map(move |b| StateId((wi * 64 + b) as u32)))
    }

    /// States in descending document order (exit order).
    pub fn iter_rev(&self) -> impl Iterator<Item = StateId> + '_ {
        self.occupied().rev().flat_map(move |wi| {
            BitIter(self.words[wi])
                .rev()
                .map(move |b| StateId((wi * 64 + b) as u32))
        })
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

impl DoubleEndedIterator for BitIter {
    #[inline]
    fn next_back(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let b = 63 - self.0.leading_zeros() as usize;
        self.0 &= !(1u64 << b);
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
        let words: Vec<usize> = set.words().map(|(w, _)| w).collect();
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
        set.union_with(&other);
        assert!(set.contains(StateId(4_097)));
        set.clear();
        assert!(set.is_empty());
        assert_eq!(set.iter().count(), 0);
        assert_eq!(set, StateSet::with_capacity(100_000));
    }
}
