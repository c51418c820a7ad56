//! A set of states held as a bit set indexed by [`StateId`].
//!
//! Because state ids are assigned in document order, iterating the set in
//! ascending id order *is* entry order and descending order is exit order, so
//! the interpreter never sorts.

use serde::{Deserialize, Serialize};

use super::StateId;

/// A set of states of one document, iterated in document order.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct StateSet {
    words: Vec<u64>,
}

impl std::fmt::Debug for StateSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter().map(|s| s.0)).finish()
    }
}

impl StateSet {
    /// An empty set able to hold `capacity` states without growing.
    pub fn with_capacity(capacity: usize) -> Self {
        StateSet {
            words: vec![0; capacity.div_ceil(64)],
        }
    }

    /// Adds a state; returns whether it was absent.
    #[inline]
    pub fn insert(&mut self, s: StateId) -> bool {
        let (w, b) = (s.index() / 64, s.index() % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
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

    /// Number of 64-bit words backing the set.
    #[inline]
    pub fn word_count(&self) -> usize {
        self.words.len()
    }

    /// The `i`-th word (states `64*i .. 64*i+63`).
    #[inline]
    pub fn word(&self, i: usize) -> u64 {
        self.words.get(i).copied().unwrap_or(0)
    }

    /// Removes every state.
    pub fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Number of states in the set.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether the two sets share a state.
    pub fn intersects(&self, other: &StateSet) -> bool {
        self.words
            .iter()
            .zip(other.words.iter())
            .any(|(a, b)| a & b != 0)
    }

    /// Adds every state of `other`.
    pub fn union_with(&mut self, other: &StateSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a |= b;
        }
    }

    /// States in ascending document order (entry order).
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = StateId> + '_ {
        self.words
            .iter()
            .enumerate()
            .flat_map(|(wi, &word)| BitIter(word).map(move |b| StateId((wi * 64 + b) as u32)))
    }

    /// States in descending document order (exit order).
    pub fn iter_rev(&self) -> impl Iterator<Item = StateId> + '_ {
        self.words.iter().enumerate().rev().flat_map(|(wi, &word)| {
            BitIter(word)
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
}
