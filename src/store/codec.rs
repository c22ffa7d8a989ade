//! The compact binary encoding of concept fields shared by records files, patches and the import's
//! concept list: variable-length numbers, strings from a dictionary or written in place, and each
//! concept field in a fixed order. Only the primitives live here; the file layouts are in
//! [`super::segment`], [`super::patch`] and [`super::list`].

use super::concept::{Concept, Designation, Value};
use super::view::{ConceptView, DesignationUseView, DesignationView, ValueView};

pub(super) struct Reader<'a> {
    pub(super) b: &'a [u8],
    pub(super) at: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn byte(&mut self) -> Result<u8, String> {
        let b = *self.b.get(self.at).ok_or("record ends early")?;
        self.at += 1;
        Ok(b)
    }

    pub(super) fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("bad number".into())
    }

    pub(super) fn text(&mut self, len: usize) -> Result<&'a str, String> {
        let end = self.at.checked_add(len).filter(|&e| e <= self.b.len());
        let bytes = &self.b[self.at..end.ok_or("record ends early")?];
        self.at += len;
        std::str::from_utf8(bytes).map_err(|_| "text is not UTF-8".into())
    }

    /// A string: from the dictionary (even numbers) or written in place (odd: length).
    pub(super) fn str(&mut self, dict: &'a [Box<str>]) -> Result<&'a str, String> {
        let v = self.varint()?;
        if v & 1 == 0 {
            dict.get((v >> 1) as usize)
                .map(|s| &**s)
                .ok_or_else(|| "unknown dictionary entry".into())
        } else {
            self.text((v >> 1) as usize)
        }
    }

    /// The concept fields [`Writer::concept_fields`] wrote, into a view that holds the code and
    /// display already (see [`ConceptView::reset`]).
    pub(super) fn view_fields(
        &mut self,
        c: &mut ConceptView<'a>,
        dict: &'a [Box<str>],
    ) -> Result<(), String> {
        let flags = self.byte()?;
        if flags & 1 != 0 {
            c.definition = Some(self.str(dict)?);
        }
        if flags & 2 != 0 {
            c.status = Some(self.str(dict)?);
        }
        c.inactive = flags & 4 != 0;
        c.not_selectable = flags & 8 != 0;
        if flags & 16 != 0 {
            c.valid_from = Some(self.str(dict)?);
        }
        if flags & 32 != 0 {
            c.valid_to = Some(self.str(dict)?);
        }
        if flags & 64 != 0 {
            self.designations(&mut c.designations, dict)?;
        }
        let n = self.varint()? as usize;
        c.properties.reserve(n.min(256));
        for _ in 0..n {
            let code = self.str(dict)?;
            c.properties.push((code, self.value(dict)?));
        }
        if flags & 128 != 0 {
            self.strings(&mut c.parents, dict)?;
        }
        Ok(())
    }

    /// The concept fields [`Writer::concept_fields`] wrote, into a concept that holds the code
    /// and display already.
    pub(super) fn concept_fields(
        &mut self,
        c: &mut Concept,
        dict: &[Box<str>],
    ) -> Result<(), String> {
        // A reader of the dictionary's lifetime and the record's, whichever is shorter.
        let mut r = Reader {
            b: self.b,
            at: self.at,
        };
        let mut v = ConceptView::default();
        r.view_fields(&mut v, dict)?;
        self.at = r.at;
        *c = Concept {
            code: std::mem::take(&mut c.code),
            display: c.display.take(),
            ..v.to_concept()
        };
        Ok(())
    }

    /// A list of strings, replacing `out`'s.
    pub(super) fn strings(
        &mut self,
        out: &mut Vec<&'a str>,
        dict: &'a [Box<str>],
    ) -> Result<(), String> {
        out.clear();
        let n = self.varint()? as usize;
        out.reserve(n.min(64));
        for _ in 0..n {
            out.push(self.str(dict)?);
        }
        Ok(())
    }

    /// `None` (0) or a string (1 and the string).
    pub(super) fn opt_str(&mut self, dict: &'a [Box<str>]) -> Result<Option<&'a str>, String> {
        match self.byte()? {
            0 => Ok(None),
            _ => self.str(dict).map(Some),
        }
    }

    /// A list of designations, replacing `out`'s.
    pub(super) fn designations(
        &mut self,
        out: &mut Vec<DesignationView<'a>>,
        dict: &'a [Box<str>],
    ) -> Result<(), String> {
        out.clear();
        let n = self.varint()? as usize;
        out.reserve(n.min(64));
        for _ in 0..n {
            let f = self.byte()?;
            let language = (f & 1 != 0).then(|| self.str(dict)).transpose()?;
            let use_ = if f & 2 != 0 {
                Some(DesignationUseView {
                    system: self.str(dict)?,
                    code: self.str(dict)?,
                    display: (f & 4 != 0).then(|| self.str(dict)).transpose()?,
                })
            } else {
                None
            };
            let value = self.str(dict)?;
            // Bit 3 (absent from files of designations without extensions): the JSON text.
            let extensions = (f & 8 != 0).then(|| self.str(dict)).transpose()?;
            out.push(DesignationView {
                language,
                use_,
                value,
                extensions,
            });
        }
        Ok(())
    }

    pub(super) fn value(&mut self, dict: &'a [Box<str>]) -> Result<ValueView<'a>, String> {
        Ok(match self.byte()? {
            0 => ValueView::Code(self.str(dict)?),
            1 => ValueView::String(self.str(dict)?),
            2 => {
                let z = self.varint()?;
                ValueView::Integer(((z >> 1) as i64) ^ -((z & 1) as i64))
            }
            3 => ValueView::Boolean(false),
            4 => ValueView::Boolean(true),
            5 => ValueView::DateTime(self.str(dict)?),
            6 => ValueView::Decimal(self.str(dict)?),
            t @ (7 | 8) => ValueView::Coding {
                system: self.str(dict)?,
                code: self.str(dict)?,
                display: (t == 8).then(|| self.str(dict)).transpose()?,
            },
            t => return Err(format!("unknown value kind {t}")),
        })
    }
}

/// Writes the compact encoding; `intern` gives a string's dictionary number, or `None` to write
/// it in place.
pub(super) struct Writer<'w> {
    pub(super) out: &'w mut Vec<u8>,
    pub(super) intern: &'w mut dyn FnMut(&str) -> Option<u32>,
}

impl Writer<'_> {
    pub(super) fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.out.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.out.push(v as u8);
    }

    pub(super) fn string(&mut self, s: &str) {
        match (self.intern)(s) {
            Some(id) => self.varint(u64::from(id) << 1),
            None => {
                self.varint(((s.len() as u64) << 1) | 1);
                self.out.extend_from_slice(s.as_bytes());
            }
        }
    }

    pub(super) fn concept_fields(&mut self, c: &Concept) {
        let flags = u8::from(c.definition.is_some())
            | u8::from(c.status.is_some()) << 1
            | u8::from(c.inactive) << 2
            | u8::from(c.not_selectable) << 3
            | u8::from(c.valid_from.is_some()) << 4
            | u8::from(c.valid_to.is_some()) << 5
            | u8::from(!c.designations.is_empty()) << 6
            | u8::from(!c.parents.is_empty()) << 7;
        self.out.push(flags);
        for s in [&c.definition, &c.status, &c.valid_from, &c.valid_to]
            .into_iter()
            .flatten()
        {
            self.string(s);
        }
        if !c.designations.is_empty() {
            self.designations(&c.designations);
        }
        self.varint(c.properties.len() as u64);
        for (code, v) in &c.properties {
            self.string(code);
            self.value(v);
        }
        if !c.parents.is_empty() {
            self.strings(&c.parents);
        }
    }

    pub(super) fn strings(&mut self, list: &[Box<str>]) {
        self.varint(list.len() as u64);
        for p in list {
            self.string(p);
        }
    }

    pub(super) fn opt_string(&mut self, s: Option<&str>) {
        match s {
            None => self.out.push(0),
            Some(s) => {
                self.out.push(1);
                self.string(s);
            }
        }
    }

    pub(super) fn designations(&mut self, list: &[Designation]) {
        self.varint(list.len() as u64);
        for d in list {
            let f = u8::from(d.language.is_some())
                | u8::from(d.use_.is_some()) << 1
                | u8::from(d.use_.as_ref().is_some_and(|u| u.display.is_some())) << 2
                | u8::from(d.extensions.is_some()) << 3;
            self.out.push(f);
            if let Some(l) = &d.language {
                self.string(l);
            }
            if let Some(u) = &d.use_ {
                self.string(&u.system);
                self.string(&u.code);
                if let Some(x) = &u.display {
                    self.string(x);
                }
            }
            self.string(&d.value);
            if let Some(x) = &d.extensions {
                self.string(x);
            }
        }
    }

    pub(super) fn value(&mut self, v: &Value) {
        match v {
            Value::Code(s) => {
                self.out.push(0);
                self.string(s);
            }
            Value::String(s) => {
                self.out.push(1);
                self.string(s);
            }
            Value::Integer(i) => {
                self.out.push(2);
                self.varint(((i << 1) ^ (i >> 63)) as u64);
            }
            Value::Boolean(b) => self.out.push(if *b { 4 } else { 3 }),
            Value::DateTime(s) => {
                self.out.push(5);
                self.string(s);
            }
            Value::Decimal(s) => {
                self.out.push(6);
                self.string(s);
            }
            Value::Coding {
                system,
                code,
                display,
            } => {
                self.out.push(if display.is_some() { 8 } else { 7 });
                self.string(system);
                self.string(code);
                if let Some(d) = display {
                    self.string(d);
                }
            }
        }
    }
}
