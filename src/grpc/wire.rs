//! Protocol buffers on the answer path, by hand: the fields of a request plangate reads, read
//! in place from the bytes received (no map, no `String` per header), and the answer written
//! straight into the response buffer.
//!
//! The writer emits what prost emits for the same message — fields in tag order, proto3
//! defaults left out, a set `oneof` always — so that the bytes on the wire do not depend on who
//! encoded them (tests/answers_pinned.rs, and `grpc::answer`'s tests against prost).

/// Bytes that are not a well-formed message, or a form this reader leaves to prost (groups, a
/// singular field given twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unread;

/// One field's value, by wire type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed 32- or 64-bit value (never read here).
    Fixed,
}

impl<'a> Value<'a> {
    /// A length-delimited value, or `Unread` for any other wire type (prost refuses a field
    /// of the wrong wire type too).
    pub fn bytes(self) -> Result<&'a [u8], Unread> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(Unread),
        }
    }

    /// A string field's text, checked as UTF-8 (as prost checks it).
    pub fn str(self) -> Result<&'a str, Unread> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Unread)
    }

    pub fn varint(self) -> Result<u64, Unread> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(Unread),
        }
    }
}

/// The fields of one message, in the order they were written.
#[derive(Debug, Clone)]
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

pub(crate) fn fields(message: &[u8]) -> Fields<'_> {
    Fields { rest: message }
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, Unread> {
        let mut v: u64 = 0;
        for (i, &b) in self.rest.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                // The tenth byte may carry one bit only.
                if i == 9 && b > 1 {
                    return Err(Unread);
                }
                self.rest = &self.rest[i + 1..];
                return Ok(v);
            }
        }
        Err(Unread)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], Unread> {
        let n = usize::try_from(n).map_err(|_| Unread)?;
        if n > self.rest.len() {
            return Err(Unread);
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn field(&mut self) -> Result<(u32, Value<'a>), Unread> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| Unread)?;
        if tag == 0 {
            return Err(Unread);
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let n = self.varint()?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            // Groups (3, 4) are left to prost; 6 and 7 are no wire type.
            _ => return Err(Unread),
        };
        Ok((tag, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), Unread>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let f = self.field();
        if f.is_err() {
            // One error, then the end.
            self.rest = &[];
        }
        Some(f)
    }
}

/// Sets a singular field once: given twice (a merge, in protobuf's rules), the message is left
/// to prost.
pub(crate) fn once<T>(slot: &mut Option<T>, value: T) -> Result<(), Unread> {
    if slot.is_some() {
        return Err(Unread);
    }
    *slot = Some(value);
    Ok(())
}

/// A map entry's key and value (`string` keys and values; absent ones are empty), the last of
/// each given winning, as prost decodes it.
pub(crate) fn map_entry(entry: &[u8]) -> Result<(&str, &str), Unread> {
    let (mut k, mut v) = ("", "");
    for f in fields(entry) {
        match f? {
            (1, val) => k = val.str()?,
            (2, val) => v = val.str()?,
            _ => {}
        }
    }
    Ok((k, v))
}

// ---- writing ----

/// Where a message is written: a `Vec`, or a slice of known size (the answer is measured
/// first, written into a buffer on the stack, and handed to tonic in one copy — `BytesMut`
/// checks its room on every small write, which cost more than the writing).
pub trait Out {
    fn put_slice(&mut self, s: &[u8]);
    /// One byte (tags and lengths are written byte by byte: no copy call for a byte or two).
    fn put_byte(&mut self, b: u8);
}

impl Out for Vec<u8> {
    fn put_slice(&mut self, s: &[u8]) {
        self.extend_from_slice(s);
    }

    fn put_byte(&mut self, b: u8) {
        self.push(b);
    }
}

/// A message that writes itself: its length first, then its bytes.
pub trait Message {
    fn encoded_len(&self) -> usize;
    fn encode(&self, out: &mut impl Out);

    /// The message's bytes, in a `Vec` of their length.
    fn to_vec(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode(&mut buf);
        buf
    }
}

/// A slice written from its start; `at` counts what was written (beyond the end: nothing
/// written there, and `at` tells the caller the size was wrong).
pub struct Slice<'a> {
    buf: &'a mut [u8],
    pub at: usize,
}

impl<'a> Slice<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Slice { buf, at: 0 }
    }
}

impl Out for Slice<'_> {
    fn put_slice(&mut self, s: &[u8]) {
        let end = self.at + s.len();
        if let Some(d) = self.buf.get_mut(self.at..end) {
            d.copy_from_slice(s);
        }
        self.at = end;
    }

    fn put_byte(&mut self, b: u8) {
        if let Some(d) = self.buf.get_mut(self.at) {
            *d = b;
        }
        self.at += 1;
    }
}

pub(crate) const VARINT: u32 = 0;
pub(crate) const LEN: u32 = 2;

pub(crate) fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub(crate) fn key_len(tag: u32) -> usize {
    varint_len(u64::from(tag) << 3)
}

/// The length of a length-delimited field of `len` bytes, key and length included.
pub(crate) fn len_field(tag: u32, len: usize) -> usize {
    key_len(tag) + varint_len(len as u64) + len
}

/// A varint: 7 bits per byte, low bits first, the high bit set on all but the last.
pub(crate) fn put_varint(out: &mut impl Out, mut v: u64) {
    while v >= 0x80 {
        out.put_byte((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_byte(v as u8);
}

/// The key and length of a length-delimited field; its `len` bytes follow.
pub(crate) fn put_len(out: &mut impl Out, tag: u32, len: usize) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(LEN));
    put_varint(out, len as u64);
}

/// A `string` or `bytes` field, left out when empty (proto3).
pub(crate) fn str_field(tag: u32, s: &[u8]) -> usize {
    if s.is_empty() {
        0
    } else {
        len_field(tag, s.len())
    }
}

pub(crate) fn put_str(out: &mut impl Out, tag: u32, s: &[u8]) {
    if !s.is_empty() {
        put_len(out, tag, s.len());
        out.put_slice(s);
    }
}

/// A varint field (integers, enums, bools), left out when 0 (proto3).
pub(crate) fn varint_field(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + varint_len(v)
    }
}

pub(crate) fn put_varint_field(out: &mut impl Out, tag: u32, v: u64) {
    if v != 0 {
        put_varint(out, (u64::from(tag) << 3) | u64::from(VARINT));
        put_varint(out, v);
    }
}

/// An `int32` as protobuf writes it: negative values as ten-byte varints.
pub(crate) fn int32(v: i32) -> u64 {
    i64::from(v) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_have_their_length() {
        for v in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            assert_eq!(out.len(), prost::encoding::encoded_len_varint(v));
            let mut f = Fields { rest: &out };
            assert_eq!(f.varint(), Ok(v));
            assert!(f.rest.is_empty());
        }
    }

    #[test]
    fn fields_are_written_as_prost_writes_them() {
        for (tag, v) in [
            (1, 0u64),
            (2, 1),
            (15, 300),
            (16, u64::MAX),
            (536_870_911, 7),
        ] {
            let mut ours = Vec::new();
            put_varint_field(&mut ours, tag, v);
            let mut theirs = Vec::new();
            if v != 0 {
                prost::encoding::uint64::encode(tag, &v, &mut theirs);
            }
            assert_eq!(ours, theirs, "{tag} {v}");
            assert_eq!(ours.len(), varint_field(tag, v));
            let mut ours = Vec::new();
            put_len(&mut ours, tag, v as usize % 100_000);
            ours.extend(std::iter::repeat_n(b'x', v as usize % 100_000));
            let mut theirs = Vec::new();
            prost::encoding::bytes::encode(tag, &vec![b'x'; v as usize % 100_000], &mut theirs);
            assert_eq!(ours, theirs);
            assert_eq!(ours.len(), len_field(tag, v as usize % 100_000));
        }
    }

    #[test]
    fn malformed_input_is_unread_never_a_panic() {
        // Truncated varint, length past the end, tag 0, a group, an 11-byte varint.
        for bad in [
            &[0x08, 0x80][..],
            &[0x0a, 0x05, 1, 2],
            &[0x00, 0x01],
            &[0x0b],
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
        ] {
            assert!(fields(bad).any(|f| f.is_err()), "{bad:?}");
            assert_eq!(fields(bad).filter(|f| f.is_err()).count(), 1);
        }
    }

    #[test]
    fn map_entries_read_as_prost_reads_them() {
        use prost::Message;
        let m: std::collections::HashMap<String, String> = [("k".into(), "v".into())].into();
        #[derive(Clone, PartialEq, prost::Message)]
        struct M {
            #[prost(map = "string, string", tag = "1")]
            m: std::collections::HashMap<String, String>,
        }
        let bytes = M { m }.encode_to_vec();
        let (tag, entry) = fields(&bytes).next().unwrap().unwrap();
        assert_eq!(tag, 1);
        assert_eq!(map_entry(entry.bytes().unwrap()), Ok(("k", "v")));
        // Key or value left out: empty.
        assert_eq!(map_entry(&[0x12, 0x01, b'x']), Ok(("", "x")));
        assert_eq!(map_entry(&[0x12, 0x01, 0xff]), Err(Unread));
    }
}
