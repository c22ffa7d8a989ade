//! Field-level differences between two records of one code, so that a concept that changed in one
//! column costs that column, not a whole record, in the store.
//!
//! A [`Patch`] holds the fields that differ; the properties (a list, in mapping order, several
//! values per code allowed) are rebuilt by an edit script over the older list. Applying the patch
//! to the record it was made from gives the newer record exactly.

use serde::{Deserialize, Serialize};

use super::codec::{Reader, Writer};
use super::concept::{Concept, Designation, Value};
use super::view::ConceptView;

/// One step of the edit script that turns the older property list into the newer one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Edit {
    /// Copy the next `n` older properties.
    Keep(u32),
    /// Skip the next `n` older properties.
    Drop(u32),
    /// Add this property.
    Put(Box<str>, Value),
}

/// The fields of a record that differ from the record it is made from (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patch {
    display: Option<Option<Box<str>>>,
    definition: Option<Option<Box<str>>>,
    designations: Option<Vec<Designation>>,
    status: Option<Option<Box<str>>>,
    inactive: Option<bool>,
    not_selectable: Option<bool>,
    parents: Option<Vec<Box<str>>>,
    valid_from: Option<Option<Box<str>>>,
    valid_to: Option<Option<Box<str>>>,
    properties: Option<Vec<Edit>>,
}

fn changed<T: PartialEq + Clone>(old: &T, new: &T) -> Option<T> {
    (old != new).then(|| new.clone())
}

/// The edit script from `old` to `new`: equal entries are kept, an entry whose code matches but
/// whose value does not is replaced, entries only one side has are dropped or put.
fn edits(old: &[(Box<str>, Value)], new: &[(Box<str>, Value)]) -> Vec<Edit> {
    let mut out: Vec<Edit> = Vec::new();
    let push = |out: &mut Vec<Edit>, e: Edit| match (out.last_mut(), &e) {
        (Some(Edit::Keep(n)), Edit::Keep(1)) | (Some(Edit::Drop(n)), Edit::Drop(1)) => *n += 1,
        _ => out.push(e),
    };
    let (mut i, mut j) = (0, 0);
    while j < new.len() {
        match old.get(i) {
            Some(o) if *o == new[j] => {
                push(&mut out, Edit::Keep(1));
                i += 1;
                j += 1;
            }
            Some(o) if o.0 == new[j].0 => {
                push(&mut out, Edit::Drop(1));
                push(&mut out, Edit::Put(new[j].0.clone(), new[j].1.clone()));
                i += 1;
                j += 1;
            }
            Some(_) if old[i..].iter().any(|o| o.0 == new[j].0) => {
                push(&mut out, Edit::Drop(1));
                i += 1;
            }
            _ => {
                push(&mut out, Edit::Put(new[j].0.clone(), new[j].1.clone()));
                j += 1;
            }
        }
    }
    // Whatever is left of the older list is dropped by not being kept.
    if matches!(out.last(), Some(Edit::Drop(_))) {
        out.pop();
    }
    out
}

impl Patch {
    /// The patch that turns `old` into `new` (records of the same code).
    pub fn between(old: &Concept, new: &Concept) -> Self {
        Self {
            display: changed(&old.display, &new.display),
            definition: changed(&old.definition, &new.definition),
            designations: changed(&old.designations, &new.designations),
            status: changed(&old.status, &new.status),
            inactive: changed(&old.inactive, &new.inactive),
            not_selectable: changed(&old.not_selectable, &new.not_selectable),
            parents: changed(&old.parents, &new.parents),
            valid_from: changed(&old.valid_from, &new.valid_from),
            valid_to: changed(&old.valid_to, &new.valid_to),
            properties: (old.properties != new.properties)
                .then(|| edits(&old.properties, &new.properties)),
        }
    }
}

impl Patch {
    /// Writes the patch in the records file's encoding (strings through its dictionary).
    pub(super) fn write(&self, w: &mut Writer<'_>) {
        let strings = [
            &self.display,
            &self.definition,
            &self.status,
            &self.valid_from,
            &self.valid_to,
        ];
        let mut flags = 0u64;
        for (k, s) in strings.iter().enumerate() {
            flags |= u64::from(s.is_some()) << k;
        }
        flags |= u64::from(self.designations.is_some()) << 5
            | u64::from(self.parents.is_some()) << 6
            | u64::from(self.properties.is_some()) << 7
            | u64::from(self.inactive.is_some()) << 8
            | u64::from(self.inactive == Some(true)) << 9
            | u64::from(self.not_selectable.is_some()) << 10
            | u64::from(self.not_selectable == Some(true)) << 11;
        w.varint(flags);
        for s in strings.into_iter().flatten() {
            w.opt_string(s.as_deref());
        }
        if let Some(d) = &self.designations {
            w.designations(d);
        }
        if let Some(p) = &self.parents {
            w.strings(p);
        }
        if let Some(edits) = &self.properties {
            w.varint(edits.len() as u64);
            for e in edits {
                match e {
                    Edit::Keep(n) => {
                        w.out.push(0);
                        w.varint(u64::from(*n));
                    }
                    Edit::Drop(n) => {
                        w.out.push(1);
                        w.varint(u64::from(*n));
                    }
                    Edit::Put(code, v) => {
                        w.out.push(2);
                        w.string(code);
                        w.value(v);
                    }
                }
            }
        }
    }
}

/// Reads a patch [`Patch::write`] wrote and applies it to the record `c` holds (the record it was
/// made from): `c` becomes the patched record, its fields borrowed from the records file or the
/// base, nothing copied. Fails (naming the step) when the patch does not fit the base: the store
/// is corrupt.
pub(super) fn apply_written<'a>(
    r: &mut Reader<'a>,
    dict: &'a [Box<str>],
    c: &mut ConceptView<'a>,
) -> Result<(), String> {
    let flags = r.varint()?;
    for (k, field) in [
        &mut c.display,
        &mut c.definition,
        &mut c.status,
        &mut c.valid_from,
        &mut c.valid_to,
    ]
    .into_iter()
    .enumerate()
    {
        if flags & (1 << k) != 0 {
            *field = r.opt_str(dict)?;
        }
    }
    if flags & (1 << 5) != 0 {
        r.designations(&mut c.designations, dict)?;
    }
    if flags & (1 << 6) != 0 {
        r.strings(&mut c.parents, dict)?;
    }
    if flags & (1 << 7) != 0 {
        // The newer list is built after the older one in the same list, then the older one
        // is removed: no other list is needed.
        let props = &mut c.properties;
        let old = props.len();
        let mut i = 0usize;
        let n = r.varint()? as usize;
        for step in 0..n {
            match r.byte()? {
                t @ (0 | 1) => {
                    let end = usize::try_from(r.varint()?)
                        .ok()
                        .and_then(|k| i.checked_add(k))
                        .filter(|&end| end <= old)
                        .ok_or_else(|| {
                            format!(
                                "property edit {step} goes past the {old} properties of {}",
                                c.code
                            )
                        })?;
                    if t == 0 {
                        props.extend_from_within(i..end);
                    }
                    i = end;
                }
                2 => {
                    let code = r.str(dict)?;
                    props.push((code, r.value(dict)?));
                }
                t => return Err(format!("unknown property edit {t}")),
            }
        }
        props.drain(..old);
    }
    if flags & (1 << 8) != 0 {
        c.inactive = flags & (1 << 9) != 0;
    }
    if flags & (1 << 10) != 0 {
        c.not_selectable = flags & (1 << 11) != 0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concept(props: &[(&str, &str)]) -> Concept {
        let mut c = Concept::new("A81001");
        c.display = Some("THE DENSHAM SURGERY".into());
        c.properties = props
            .iter()
            .map(|(k, v)| ((*k).into(), Value::String((*v).into())))
            .collect();
        c
    }

    /// `base` with `p` applied, through the records file's encoding as a read applies it.
    fn applied(p: &Patch, base: &Concept) -> Result<Concept, String> {
        let mut bytes = Vec::new();
        let mut none = |_: &str| None;
        p.write(&mut Writer {
            out: &mut bytes,
            intern: &mut none,
        });
        let mut view = ConceptView::of(base);
        let mut r = Reader { b: &bytes, at: 0 };
        apply_written(&mut r, &[], &mut view)?;
        assert_eq!(r.at, bytes.len(), "the whole patch is read");
        Ok(view.to_concept())
    }

    #[test]
    fn patches_rebuild_the_newer_record_exactly() {
        let base = concept(&[
            ("name", "THE DENSHAM SURGERY"),
            ("town", "STOCKTON"),
            ("role", "RO76"),
            ("role", "RO268"),
            ("RE4", "00K"),
        ]);
        let cases = [
            concept(&[
                ("name", "THE DENSHAM SURGERY"),
                ("town", "STOCKTON-ON-TEES"),
                ("role", "RO76"),
                ("role", "RO268"),
                ("RE4", "16C"),
            ]),
            concept(&[("name", "THE DENSHAM SURGERY"), ("role", "RO76")]),
            concept(&[
                ("name", "THE DENSHAM SURGERY"),
                ("address3", "LAWSON STREET"),
                ("town", "STOCKTON"),
                ("role", "RO76"),
                ("role", "RO268"),
                ("RE4", "00K"),
                ("opEndDate", "2020-01-01"),
            ]),
            concept(&[]),
            base.clone(),
        ];
        for new in cases {
            let mut new = new;
            new.status = Some("inactive".into());
            new.inactive = true;
            new.display = None;
            let p = Patch::between(&base, &new);
            assert_eq!(applied(&p, &base).expect("fits"), new);
        }
        let same = Patch::between(&base, &base);
        assert_eq!(same, Patch::default());
        let bad = Patch {
            properties: Some(vec![Edit::Keep(9)]),
            ..Patch::default()
        };
        assert!(applied(&bad, &base).is_err());
    }
}
