//! A list of concepts held compactly while a release is imported: each concept is encoded as it
//! is read (every string written once, in a dictionary, and referred to by number), so a
//! national register costs tens of bytes a concept in memory rather than a kilobyte.

use std::collections::HashMap;

use super::codec::{Reader, Writer};
use super::concept::Concept;

/// Concepts, encoded; in the order pushed until [`ConceptList::sort_by_code`].
#[derive(Debug, Default, Clone)]
pub struct ConceptList {
    dict: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32>,
    bytes: Vec<u8>,
    /// Where each record starts in `bytes`, in the order pushed.
    at: Vec<u64>,
    /// The listed order (indexes into `at`), when it is not the order pushed.
    order: Option<Vec<u32>>,
    /// The hash of the source row each concept was made from (0: not known), in the order pushed.
    rows: Vec<u64>,
    /// For a row the store already has (same row, same mapping): the token the store gave it,
    /// in the order pushed; `u32::MAX` for a converted concept.
    known: Vec<u32>,
}

/// No store token: the concept was converted.
const CONVERTED: u32 = u32::MAX;

impl ConceptList {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a concept at the end.
    pub fn push(&mut self, c: &Concept) {
        self.push_row(c, 0);
    }

    /// Adds a concept made from a source row whose hash is `row_hash`.
    pub fn push_row(&mut self, c: &Concept, row_hash: u64) {
        self.rows.push(row_hash);
        self.known.push(CONVERTED);
        self.at.push(self.bytes.len() as u64);
        if let Some(order) = &mut self.order {
            order.push((self.at.len() - 1) as u32);
        }
        let (dict, ids) = (&mut self.dict, &mut self.ids);
        let mut intern = |s: &str| {
            Some(match ids.get(s) {
                Some(&id) => id,
                None => {
                    let id = dict.len() as u32;
                    dict.push(s.into());
                    ids.insert(s.into(), id);
                    id
                }
            })
        };
        let mut w = Writer {
            out: &mut self.bytes,
            intern: &mut intern,
        };
        w.varint(c.code.len() as u64);
        w.out.extend_from_slice(c.code.as_bytes());
        match &c.display {
            Some(d) => {
                w.varint(d.len() as u64 + 1);
                w.out.extend_from_slice(d.as_bytes());
            }
            None => w.varint(0),
        }
        w.concept_fields(c);
    }

    /// Adds a row the store already has as a record (the very same row, read with the same
    /// mapping): only its code is kept, with the store's `token` for the record. It reads back
    /// as a concept with its code alone; [`ConceptList::known`] tells such entries.
    pub fn push_known(&mut self, code: &str, row_hash: u64, token: u32) {
        self.rows.push(row_hash);
        self.known.push(token.min(CONVERTED - 1));
        self.at.push(self.bytes.len() as u64);
        if let Some(order) = &mut self.order {
            order.push((self.at.len() - 1) as u32);
        }
        let mut none = |_: &str| None;
        let mut w = Writer {
            out: &mut self.bytes,
            intern: &mut none,
        };
        w.varint(code.len() as u64);
        w.out.extend_from_slice(code.as_bytes());
        w.varint(0);
        w.concept_fields(&Concept::new(code));
    }

    /// The store's token for concept `i` when it is a row the store already has.
    pub fn known(&self, i: usize) -> Option<u32> {
        let t = self.known[self.pushed_as(i)];
        (t != CONVERTED).then_some(t)
    }

    /// The hash of the row concept `i` was made from (0: not known).
    pub fn row_hash(&self, i: usize) -> u64 {
        self.rows[self.pushed_as(i)]
    }

    /// How many concepts are rows the store already has.
    pub fn known_count(&self) -> usize {
        self.known.iter().filter(|&&t| t != CONVERTED).count()
    }

    /// Number of concepts.
    pub fn len(&self) -> usize {
        self.at.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Where concept `i` was pushed (0 for the first pushed).
    pub fn pushed_as(&self, i: usize) -> usize {
        self.order.as_ref().map_or(i, |o| o[i] as usize)
    }

    fn code_at(&self, slot: usize) -> &[u8] {
        let mut r = Reader {
            b: &self.bytes,
            at: self.at[slot] as usize,
        };
        let len = r.varint().unwrap_or(0) as usize;
        &self.bytes[r.at..r.at + len]
    }

    /// The code of concept `i`.
    pub fn code(&self, i: usize) -> &str {
        std::str::from_utf8(self.code_at(self.pushed_as(i))).unwrap_or("")
    }

    /// Concept `i`, decoded.
    pub fn get(&self, i: usize) -> Concept {
        let mut r = Reader {
            b: &self.bytes,
            at: self.at[self.pushed_as(i)] as usize,
        };
        // Written by `push` just before: it reads back, or the list is not what it wrote.
        let read = |r: &mut Reader<'_>| -> Result<Concept, String> {
            let len = r.varint()? as usize;
            let mut c = Concept::new(r.text(len)?);
            let d = r.varint()? as usize;
            if d > 0 {
                c.display = Some(r.text(d - 1)?.into());
            }
            r.concept_fields(&mut c, &self.dict)?;
            Ok(c)
        };
        read(&mut r).unwrap_or_else(|e| {
            tracing::error!(error = %e, "concept list damaged");
            Concept::new(self.code(i))
        })
    }

    /// The concepts, decoded one at a time.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Concept> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Sorts by code; concepts with equal codes stay in the order pushed.
    pub fn sort_by_code(&mut self) {
        let mut order: Vec<u32> = match self.order.take() {
            Some(o) => o,
            None => (0..self.at.len() as u32).collect(),
        };
        order.sort_by(|&a, &b| {
            self.code_at(a as usize)
                .cmp(self.code_at(b as usize))
                .then(a.cmp(&b))
        });
        self.order = Some(order);
    }

    /// Keeps the first `n` concepts.
    pub fn truncate(&mut self, n: usize) {
        if n < self.len() {
            let kept: Vec<Concept> = (0..n).map(|i| self.get(i)).collect();
            *self = kept.into();
        }
    }

    /// The concepts as a vector.
    pub fn to_vec(&self) -> Vec<Concept> {
        self.iter().collect()
    }
}

impl From<Vec<Concept>> for ConceptList {
    fn from(concepts: Vec<Concept>) -> Self {
        let mut list = Self::new();
        for c in &concepts {
            list.push(c);
        }
        list
    }
}

impl PartialEq for ConceptList {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::super::concept::Value;
    use super::*;

    #[test]
    fn concepts_read_back_sorted_stably_and_small() {
        let mut list = ConceptList::new();
        let mut pushed = Vec::new();
        for (i, code) in ["TS181HU", "DL11AA", "TS181HU", "HG11AA"]
            .iter()
            .enumerate()
        {
            let mut c = Concept::new(*code);
            c.display = (i != 3).then(|| format!("display {i}").into());
            c.properties
                .push(("country".into(), Value::Code("E92000001".into())));
            c.properties
                .push(("eastings".into(), Value::Integer(451234)));
            list.push(&c);
            pushed.push(c);
        }
        assert_eq!(list.to_vec(), pushed);
        list.sort_by_code();
        let codes: Vec<&str> = (0..list.len()).map(|i| list.code(i)).collect();
        assert_eq!(codes, ["DL11AA", "HG11AA", "TS181HU", "TS181HU"]);
        assert_eq!(list.get(2), pushed[0], "equal codes keep the order pushed");
        assert_eq!(list.get(3), pushed[2]);
        assert_eq!(list.pushed_as(3), 2);
        let mut first = list.clone();
        first.truncate(2);
        assert_eq!(first.to_vec(), vec![pushed[1].clone(), pushed[3].clone()]);
        // Repeated property codes and values cost a number each.
        // (4 records: codes, displays, 2 property codes and a value written once.)
        assert!(list.bytes.len() < 4 * 30, "{}", list.bytes.len());
    }
}
