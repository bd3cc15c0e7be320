//! Canonical JSON for the "inline" provider's signature, byte-identical to what its JavaScript prints.
//!
//! The provider computes, in JavaScript,
//! `JSON.stringify(sortDeep(JSON.parse(body)))` where `sortDeep` rebuilds each
//! object from `Object.keys(o).sort()`. Matching it means copying three JS
//! behaviours that serde_json does not share: numbers are f64 printed by
//! `Number.prototype.toString`, keys sort by UTF-16 code units, and objects
//! enumerate array-index keys before all others.
//!
//! [`canonicalize`] runs on unauthenticated request bodies, so it builds no
//! `serde_json::Value`: one pass checks the body and records a flat tape of tokens
//! (strings without escapes and most numbers stay references into the body), and a
//! second pass prints the tape with each object's members in JS order, copying runs
//! of the body that print unchanged in one go. Every output byte is written once,
//! however deep the nesting. It accepts exactly what `serde_json::from_slice::<Value>`
//! accepts; the tests hold it to that and to node.

use std::cmp::Ordering;
use std::ops::Range;

use serde_json::Value;

/// Why a body has no canonical form.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// Not JSON serde_json accepts: bad syntax or UTF-8, a lone surrogate, a number past f64, depth >= 128.
    #[error("body has no canonical JSON form: {0}")]
    NotJson(JsonError),
}

/// What made a body unacceptable, and the byte offset where it was noticed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} at byte {offset}")]
pub struct JsonError {
    reason: &'static str,
    offset: usize,
}

/// Canonical form of a raw JSON body (parse as JSON.parse would, then print as above).
pub fn canonicalize(body: &[u8]) -> Result<String, CanonicalError> {
    // Inputs JS would accept but serde_json rejects (lone surrogates, 1e400 which
    // JS turns into Infinity and prints as null) are errors, so the caller can fall
    // back to a raw-body HMAC instead of signing something JS would not produce.
    //
    // serde_json only accepts valid UTF-8 (bytes >= 0x80 may only appear inside
    // strings, which it validates), so checking the whole body up front refuses
    // nothing it accepts and lets every later slice be a `&str`.
    let text = std::str::from_utf8(body).map_err(|e| {
        CanonicalError::NotJson(JsonError {
            reason: "invalid UTF-8",
            offset: e.valid_up_to(),
        })
    })?;
    if body.len() > MAX_TAPE_BODY {
        return dom_canonicalize(body);
    }
    let mut parser = Parser {
        text,
        bytes: body,
        tape: Vec::with_capacity(body.len() / 8),
        arena: String::new(),
        members: Vec::new(),
        orders: Vec::new(),
        error: None,
    };
    if parser.document().is_err() {
        let error = parser.error.unwrap_or(JsonError {
            reason: "invalid JSON",
            offset: 0,
        });
        return Err(CanonicalError::NotJson(error));
    }
    let mut printer = Printer {
        text,
        arena: &parser.arena,
        tape: &parser.tape,
        orders: &parser.orders,
        out: String::with_capacity(body.len()),
        run: 0..0,
    };
    printer.document();
    printer.flush();
    Ok(printer.out)
}

/// Bodies above this take the DOM path: the tape holds u32 offsets, and the
/// arena can outgrow the body about fivefold (`1e20` prints 21 digits). An
/// ingress sees nothing near 512 MiB.
const MAX_TAPE_BODY: usize = u32::MAX as usize / 8;

/// The reference method: serde_json's DOM, then [`canonical_value`].
fn dom_canonicalize(body: &[u8]) -> Result<String, CanonicalError> {
    serde_json::from_slice::<Value>(body)
        .map(|value| canonical_value(&value))
        .map_err(|_| {
            CanonicalError::NotJson(JsonError {
                reason: "invalid JSON",
                offset: 0,
            })
        })
}

/// Canonical form of an already parsed value (used to hash each `events[i]`).
pub fn canonical_value(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            // JSON.parse yields an f64 for every number, so integers beyond 2^53
            // must round exactly as `as f64` does. ryu-js also prints -0 as "0".
            Some(f) if f.is_finite() => out.push_str(ryu_js::Buffer::new().format_finite(f)),
            // Only reachable if feature unification enables serde_json's arbitrary_precision;
            // JSON.stringify prints non-finite numbers as null.
            _ => out.push_str("null"),
        },
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| js_key_order(a, b));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, key);
                out.push(':');
                write_value(out, &map[key]);
            }
            out.push('}');
        }
    }
}

/// Order in which a JS object built from sorted keys enumerates them.
fn js_key_order(a: &str, b: &str) -> Ordering {
    match (array_index(a), array_index(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => utf16_order(a, b),
    }
}

/// The order of `Array.prototype.sort`: by UTF-16 code units.
fn utf16_order(a: &str, b: &str) -> Ordering {
    utf16_order_from(a.as_bytes(), b.as_bytes(), 0)
}

/// [`utf16_order`] of two UTF-8 strings known to agree on their first `skip` bytes.
fn utf16_order_from(x: &[u8], y: &[u8], skip: usize) -> Ordering {
    let skip = skip.min(x.len()).min(y.len());
    match mismatch(&x[skip..], &y[skip..]) {
        Some(at) => utf16_rank(x[skip + at]).cmp(&utf16_rank(y[skip + at])),
        None => x.len().cmp(&y.len()),
    }
}

/// Ranks a byte where two UTF-8 strings first differ so that byte order is UTF-16 order.
///
/// UTF-8 byte order is code point order. UTF-16 differs only in putting
/// U+E000..=U+FFFF (lead bytes EE, EF) after astral characters (lead bytes
/// F0..F4, surrogate pairs), so those two lead bytes move above F4. Where two
/// strings first differ, both bytes start a character, or both continue
/// characters with the same lead byte (80..BF, untouched), as the shared bytes
/// before decide which.
fn utf16_rank(byte: u8) -> u8 {
    match byte {
        0xEE => 0xFE,
        0xEF => 0xFF,
        other => other,
    }
}

/// Index of the first byte where `x` and `y` differ, if within both.
fn mismatch(x: &[u8], y: &[u8]) -> Option<usize> {
    let common = x.len().min(y.len());
    let mut at = 0;
    while let (Some(p), Some(q)) = (x[at..common].first_chunk::<8>(), y[at..].first_chunk::<8>()) {
        if p != q {
            break;
        }
        at += 8;
    }
    (at..common).find(|&i| x[i] != y[i])
}

/// The numeric value of an ECMAScript array-index key: a canonical decimal in 0..=2^32-2.
fn array_index(key: &str) -> Option<u32> {
    // Rust's parse would also take "+1" and "01", which JS treats as plain strings.
    if key != "0" && (key.starts_with('0') || !key.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    // 2^32-1 fits a u32 but is not an array index (array lengths top out there).
    key.parse().ok().filter(|&n| n != u32::MAX)
}

/// Writes `s` quoted and escaped exactly as `JSON.stringify` does.
fn write_str(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    out.push('"');
    let mut start = 0;
    loop {
        // JSON.stringify escapes exactly `"`, `\` and controls (and lone
        // surrogates, which a str cannot hold).
        let i = skip_unescaped(bytes, start);
        // Escaped bytes are ASCII, so `start..i` always lies on char boundaries.
        out.push_str(&s[start..i]);
        let Some(&byte) = bytes.get(i) else {
            break;
        };
        write_escaped(out, byte);
        start = i + 1;
    }
    out.push('"');
}

/// Writes the escape `JSON.stringify` prints for `"`, `\` or a control character.
fn write_escaped(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match byte {
        b'"' => "\\\"",
        b'\\' => "\\\\",
        b'\x08' => "\\b",
        b'\x0c' => "\\f",
        b'\n' => "\\n",
        b'\r' => "\\r",
        b'\t' => "\\t",
        _ => "",
    };
    if short.is_empty() {
        out.push_str("\\u00");
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    } else {
        out.push_str(short);
    }
}

/// One token of a checked body, in document order (12 bytes: offsets are u32).
#[derive(Clone, Copy)]
enum Node {
    /// `text[start..end]` is already what JS prints: a literal, a number JS
    /// prints as written, or a string token (quotes included) without escapes.
    Verbatim { start: u32, end: u32 },
    /// A member that prints as written, `"key":value`: its key node and value in one.
    Pair { start: u32, end: u32 },
    /// A key with escapes, decoded into `arena[start..end]`.
    Decoded { start: u32, end: u32 },
    /// What JS prints, written out in `arena[start..end]`: a number JS prints
    /// differently from how it was written, or a string value with escapes.
    Text { start: u32, end: u32 },
    /// Elements follow; `end` is the tape index just past the last one.
    Array { end: u32 },
    /// Members follow, each a [`Node::Pair`] or a key node then the value; `end` as for arrays.
    /// `order` is [`IN_ORDER`], or where `orders` lists the member count and then
    /// the key nodes to print, sorted, each repeated key only once.
    Object { end: u32, order: u32 },
}

const _: () = assert!(std::mem::size_of::<Node>() == 12);

/// An object whose members already come in JS order, without repeats.
const IN_ORDER: u32 = u32::MAX;

/// A refusal; the parser keeps the details so results stay small.
struct Refused;

/// An object member while its object is being parsed.
#[derive(Clone, Copy)]
struct Member {
    /// Sorts members as JS enumerates them, unless equal (see [`Member::new`]).
    rank: u64,
    /// Tape index of the key node; the value follows it.
    node: u32,
    /// The decoded key: `text[key]`, or `arena[key]` if `in_arena` (it had escapes).
    key: (u32, u32),
    in_arena: bool,
}

/// Ranks at or above this belong to keys that are not array indexes.
const NAMED: u64 = 1 << 63;

impl Member {
    /// Ranks `key`: an array index ranks as itself; any other key above all of
    /// them by its first eight bytes, zero-padded and mapped by [`utf16_rank`] so
    /// that they sort by UTF-16 code units, less their last bit. Equal ranks at
    /// or above [`NAMED`] need [`utf16_order`] on the whole keys.
    ///
    /// `window` is `key` followed by whatever comes after it, to read eight
    /// bytes at once; `span` is where `key` is in the body or the arena.
    #[inline(always)]
    fn new(key: &str, window: &[u8], node: usize, span: (usize, usize), in_arena: bool) -> Self {
        let bytes = key.as_bytes();
        let mut member = Member {
            rank: 0,
            node: offset(node),
            key: (offset(span.0), offset(span.1)),
            in_arena,
        };
        if let Some(b'0'..=b'9') = bytes.first()
            && let Some(index) = array_index(key)
        {
            member.rank = u64::from(index);
            return member;
        }
        let mut head = match window.first_chunk::<8>() {
            Some(chunk) => u64::from_be_bytes(*chunk),
            None => window
                .iter()
                .take(8)
                .enumerate()
                .fold(0, |head, (i, &b)| head | u64::from(b) << (56 - 8 * i)),
        };
        if bytes.len() < 8 {
            head &= !(u64::MAX >> (8 * bytes.len()));
        }
        if head & 0x8080_8080_8080_8080 != 0 {
            head = u64::from_be_bytes(head.to_be_bytes().map(utf16_rank));
        }
        member.rank = NAMED | head >> 1;
        member
    }
}

/// Sorts members whose keys tie on their [`Member::rank`] by the rest of their
/// bytes in UTF-16 order, ties (repeated keys) in body order.
///
/// Each round skips the bytes a group of keys all share, then ranks the next
/// eight, so no comparison reads a shared prefix again however long it is.
/// Groups still tied go round again; a work list instead of recursion.
fn sort_tied<'k>(tied: &mut [Member], key: impl Fn(&Member) -> &'k [u8]) {
    // Eight bytes from `at`, zero-padded and mapped like a rank, and how many
    // bytes the key has from `at` (9 standing for more than eight).
    let chunk = |key: &[u8], at: usize| {
        let tail = &key[at..];
        let mut head = [0; 8];
        let len = tail.len().min(8);
        head[..len].copy_from_slice(&tail[..len]);
        if !head.is_ascii() {
            head = head.map(utf16_rank);
        }
        (u64::from_be_bytes(head), tail.len().min(9))
    };
    // Every key of a group agrees on its first `depth` bytes.
    let mut groups = vec![(0..tied.len(), 0)];
    while let Some((range, depth)) = groups.pop() {
        let group = &mut tied[range.clone()];
        let first = key(&group[0]);
        let shared = group[1..].iter().fold(first.len(), |shared, m| {
            let other = key(m);
            let end = shared.min(other.len());
            depth + mismatch(&first[depth..end], &other[depth..end]).unwrap_or(end - depth)
        });
        group.sort_by_cached_key(|m| (chunk(key(m), shared), m.node));
        let mut i = 0;
        while i < group.len() {
            let here = chunk(key(&group[i]), shared);
            let run = group[i..]
                .iter()
                .take_while(|m| chunk(key(m), shared) == here)
                .count();
            // Keys that end within these eight bytes are equal here, hence equal.
            if run > 1 && here.1 > 8 {
                let start = range.start + i;
                groups.push((start..start + run, shared + 8));
            }
            i += run;
        }
    }
}

/// First pass: checks the body as serde_json would, records the tape and sorts objects.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    tape: Vec<Node>,
    /// Keys with escapes, decoded; string values with escapes and numbers JS
    /// prints differently from how they were written, as JS prints them.
    arena: String,
    /// Members of the objects being parsed, innermost last.
    members: Vec<Member>,
    /// Print orders of objects whose members needed sorting.
    orders: Vec<u32>,
    error: Option<JsonError>,
}

/// A container the parser is inside.
#[derive(Clone, Copy)]
struct Open {
    /// Its tape index.
    at: usize,
    /// Where its members start on the member stack; [`ARRAY`] for an array.
    members: usize,
    /// Body offset of its opening bracket.
    start: usize,
}

const ARRAY: usize = usize::MAX;

/// serde_json's recursion limit: the 128th nested container is refused.
const MAX_OPEN: usize = 127;

/// Offsets fit: bodies above [`MAX_TAPE_BODY`] never reach the tape.
fn offset(n: usize) -> u32 {
    n as u32
}

/// Index of the first byte at or after `pos` that is not JSON whitespace
/// (no BOM, no U+00A0, no vertical tab).
#[inline]
fn skip_whitespace(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\t' | b'\r') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

impl Parser<'_> {
    #[cold]
    fn fail<T>(&mut self, pos: usize, reason: &'static str) -> Result<T, Refused> {
        self.error = Some(JsonError {
            reason,
            offset: pos,
        });
        Err(Refused)
    }

    fn verbatim(&mut self, start: usize, end: usize) {
        self.tape.push(Node::Verbatim {
            start: offset(start),
            end: offset(end),
        });
    }

    /// The whole body: one value between optional whitespace.
    ///
    /// A loop over tokens with an explicit stack of open containers, so nesting
    /// costs no recursion.
    fn document(&mut self) -> Result<(), Refused> {
        let bytes = self.bytes;
        let mut open: Vec<Open> = Vec::new();
        let mut pos = skip_whitespace(bytes, 0);
        loop {
            // A value starts at `pos`.
            let value = self.tape.len();
            pos = match bytes.get(pos) {
                Some(b'"') => self.string(pos)?,
                Some(&b @ (b'{' | b'[')) => {
                    if open.len() == MAX_OPEN {
                        return self.fail(pos, "nesting too deep");
                    }
                    let start = pos;
                    let object = b == b'{';
                    let close = if object { b'}' } else { b']' };
                    pos = skip_whitespace(bytes, pos + 1);
                    if bytes.get(pos) == Some(&close) {
                        // Empty: "{}" or "[]", as written when nothing is in between.
                        self.tape.push(if pos == start + 1 {
                            Node::Verbatim {
                                start: offset(start),
                                end: offset(pos + 1),
                            }
                        } else if object {
                            Node::Object {
                                end: offset(value + 1),
                                order: IN_ORDER,
                            }
                        } else {
                            Node::Array {
                                end: offset(value + 1),
                            }
                        });
                        pos + 1
                    } else {
                        self.tape.push(Node::Array { end: 0 });
                        let members = if object {
                            pos = self.key(pos)?;
                            self.members.len() - 1
                        } else {
                            ARRAY
                        };
                        open.push(Open {
                            at: value,
                            members,
                            start,
                        });
                        continue;
                    }
                }
                Some(b'-' | b'0'..=b'9') => self.number(pos)?,
                Some(b't') => self.literal(pos, b"true")?,
                Some(b'f') => self.literal(pos, b"false")?,
                Some(b'n') => self.literal(pos, b"null")?,
                Some(_) => return self.fail(pos, "expected a value"),
                None => return self.fail(pos, "end of input where a value was expected"),
            };
            self.merge(open.last(), value);
            // After a value: commas and closing brackets.
            loop {
                pos = skip_whitespace(bytes, pos);
                let Some(&Open { at, members, start }) = open.last() else {
                    if pos != bytes.len() {
                        return self.fail(pos, "trailing characters");
                    }
                    return Ok(());
                };
                match (bytes.get(pos), members == ARRAY) {
                    // After a comma, a value or key must follow: no trailing commas.
                    (Some(b','), true) => {
                        pos = skip_whitespace(bytes, pos + 1);
                        break;
                    }
                    (Some(b','), false) => {
                        pos = self.key(skip_whitespace(bytes, pos + 1))?;
                        break;
                    }
                    (Some(b']'), true) => {
                        self.tape[at] = Node::Array {
                            end: offset(self.tape.len()),
                        };
                    }
                    (Some(b'}'), false) => {
                        let order = self.sort_members(members);
                        self.tape[at] = Node::Object {
                            end: offset(self.tape.len()),
                            order,
                        };
                    }
                    (_, true) => return self.fail(pos, "expected `,` or `]`"),
                    (_, false) => return self.fail(pos, "expected `,` or `}`"),
                }
                open.pop();
                pos += 1;
                self.collapse(at, start, pos);
                self.merge(open.last(), at);
            }
        }
    }

    /// Joins the value just parsed at tape index `value` with the node before
    /// it, when both print as written with only a separator between: a key and
    /// its value become a [`Node::Pair`], neighbouring array elements one node.
    ///
    /// Nodes inside a container that did not collapse end before its closing
    /// bracket, so only direct siblings are ever adjacent this way.
    #[inline]
    fn merge(&mut self, parent: Option<&Open>, value: usize) {
        let len = self.tape.len();
        let Some(parent) = parent else {
            return;
        };
        if value + 1 == len
            && let [
                ..,
                Node::Verbatim { start, end: last },
                Node::Verbatim { start: next, end },
            ] = self.tape[..]
            && last + 1 == next
        {
            self.tape.pop();
            self.tape[len - 2] = if parent.members == ARRAY {
                Node::Verbatim { start, end }
            } else {
                Node::Pair { start, end }
            };
        }
    }

    /// Replaces the container just closed (tape index `at`, body `start..end`)
    /// with one verbatim node when it prints exactly as written: compact, and an
    /// object's members already in order.
    fn collapse(&mut self, at: usize, start: usize, end: usize) {
        let mut expect = start + 1;
        match self.tape[at] {
            // Elements that print as written were merged into one node.
            Node::Array { .. } => match self.tape[at + 1..] {
                [
                    Node::Verbatim {
                        start: first,
                        end: last,
                    },
                ] if first as usize == expect => {
                    expect = last as usize + 1;
                }
                _ => return,
            },
            Node::Object {
                order: IN_ORDER, ..
            } => {
                for node in &self.tape[at + 1..] {
                    let Node::Pair {
                        start: first,
                        end: last,
                    } = *node
                    else {
                        return;
                    };
                    if first as usize != expect {
                        return;
                    }
                    expect = last as usize + 1;
                }
            }
            _ => return,
        }
        if expect == end {
            self.tape.truncate(at);
            self.verbatim(start, end);
        }
    }

    fn literal(&mut self, pos: usize, word: &'static [u8]) -> Result<usize, Refused> {
        let end = pos + word.len();
        if self.bytes.get(pos..end) != Some(word) {
            return self.fail(pos, "expected a value");
        }
        self.verbatim(pos, end);
        Ok(end)
    }

    /// A member's key at `pos` and the colon after it; returns where its value starts.
    fn key(&mut self, pos: usize) -> Result<usize, Refused> {
        if self.bytes.get(pos) != Some(&b'"') {
            return self.fail(pos, "expected a string key");
        }
        let node = self.tape.len();
        let close = skip_unescaped(self.bytes, pos + 1);
        let end = if self.bytes.get(close) == Some(&b'"') {
            self.verbatim(pos, close + 1);
            let key = &self.text[pos + 1..close];
            let window = &self.bytes[pos + 1..];
            let member = Member::new(key, window, node, (pos + 1, close), false);
            self.members.push(member);
            close + 1
        } else {
            let from = self.arena.len();
            let end = self.escaped_string(pos, close, true)?;
            let key = &self.arena[from..];
            let span = (from, self.arena.len());
            let member = Member::new(key, key.as_bytes(), node, span, true);
            self.members.push(member);
            end
        };
        let colon = skip_whitespace(self.bytes, end);
        if self.bytes.get(colon) != Some(&b':') {
            return self.fail(colon, "expected `:`");
        }
        Ok(skip_whitespace(self.bytes, colon + 1))
    }

    /// Takes an object's members off the stack, returning its `order`.
    fn sort_members(&mut self, base: usize) -> u32 {
        let Parser {
            text,
            arena,
            members,
            orders,
            ..
        } = self;
        let key = |m: &Member| {
            let (start, end) = (m.key.0 as usize, m.key.1 as usize);
            if m.in_arena {
                &arena.as_bytes()[start..end]
            } else {
                &text.as_bytes()[start..end]
            }
        };
        let keys = |a: &Member, b: &Member| match a.rank.cmp(&b.rank) {
            // Equal ranks: the first seven bytes are equal, or both keys end sooner.
            Ordering::Equal if a.rank >= NAMED => utf16_order_from(key(a), key(b), 7),
            order => order,
        };
        let object = &mut members[base..];
        let order = if object.is_sorted_by(|a, b| keys(a, b) == Ordering::Less) {
            IN_ORDER
        } else {
            // By rank, ties in body order: JSON.parse keeps the last of repeated keys.
            if object.len() <= 16 {
                // Most objects are small: a plain insertion sort, stable.
                for i in 1..object.len() {
                    let member = object[i];
                    let mut j = i;
                    while j > 0 && member.rank < object[j - 1].rank {
                        object[j] = object[j - 1];
                        j -= 1;
                    }
                    object[j] = member;
                }
            } else {
                object.sort_unstable_by_key(|m| (m.rank, m.node));
            }
            let order = orders.len();
            orders.push(0);
            let mut i = 0;
            while i < object.len() {
                let rank = object[i].rank;
                let run = 1 + object[i + 1..]
                    .iter()
                    .take_while(|m| m.rank == rank)
                    .count();
                if run == 1 {
                    orders.push(object[i].node);
                    i += 1;
                    continue;
                }
                let tied = &mut object[i..i + run];
                if run > 8 && rank >= NAMED {
                    sort_tied(tied, key);
                } else if rank >= NAMED {
                    // A few keys sharing a prefix ("modifier", "modifiers"): compare them.
                    for k in 1..tied.len() {
                        let member = tied[k];
                        let mut j = k;
                        while j > 0 && keys(&member, &tied[j - 1]) == Ordering::Less {
                            tied[j] = tied[j - 1];
                            j -= 1;
                        }
                        tied[j] = member;
                    }
                }
                // Repeated keys are neighbours now; JSON.parse keeps the last value.
                for (j, member) in tied.iter().enumerate() {
                    match tied.get(j + 1) {
                        Some(next) if keys(member, next) == Ordering::Equal => {}
                        _ => orders.push(member.node),
                    }
                }
                i += run;
            }
            orders[order] = offset(orders.len() - order - 1);
            offset(order)
        };
        members.truncate(base);
        order
    }

    /// The string token at `pos` (its opening quote); returns the index past it.
    #[inline(always)]
    fn string(&mut self, pos: usize) -> Result<usize, Refused> {
        let end = skip_unescaped(self.bytes, pos + 1);
        if self.bytes.get(end) == Some(&b'"') {
            // Raw UTF-8 without `"`, `\` or controls: JSON.stringify prints it as is.
            self.verbatim(pos, end + 1);
            return Ok(end + 1);
        }
        self.escaped_string(pos, end, false)
    }

    /// The rest of a string token that has escapes (or is broken) at `pos`:
    /// a key is decoded into the arena (to sort it), a value is written there
    /// as `JSON.stringify` prints it.
    fn escaped_string(
        &mut self,
        start: usize,
        mut pos: usize,
        key: bool,
    ) -> Result<usize, Refused> {
        let from = self.arena.len();
        if !key {
            self.arena.push('"');
        }
        // Body bytes since the last escape, not yet copied to the arena.
        let mut pending = start + 1;
        loop {
            match self.bytes.get(pos) {
                Some(b'"') => break,
                Some(b'\\') => {
                    self.arena.push_str(&self.text[pending..pos]);
                    pos = self.escape(pos + 1, key)?;
                    pending = pos;
                }
                Some(_) => return self.fail(pos, "control character in string"),
                None => return self.fail(pos, "end of input in string"),
            }
            pos = skip_unescaped(self.bytes, pos);
        }
        self.arena.push_str(&self.text[pending..pos]);
        if !key {
            self.arena.push('"');
        }
        let (start, end) = (offset(from), offset(self.arena.len()));
        self.tape.push(if key {
            Node::Decoded { start, end }
        } else {
            Node::Text { start, end }
        });
        Ok(pos + 1)
    }

    /// The escape after a backslash at `pos - 1`, decoded (`key`) or as JS prints it.
    fn escape(&mut self, pos: usize, key: bool) -> Result<usize, Refused> {
        let c = match self.bytes.get(pos) {
            // JSON.stringify prints these as written, except `\/`.
            Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') if !key => {
                self.arena.push_str(&self.text[pos - 1..pos + 1]);
                return Ok(pos + 1);
            }
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => return self.unicode_escape(pos + 1, key),
            _ => return self.fail(pos, "invalid escape"),
        };
        self.arena.push(c);
        Ok(pos + 1)
    }

    /// `\uXXXX`, or a surrogate pair written as two of them; lone surrogates fail like serde_json.
    fn unicode_escape(&mut self, pos: usize, key: bool) -> Result<usize, Refused> {
        let unit = self.hex4(pos)?;
        let mut end = pos + 4;
        let code = if (0xD800..0xDC00).contains(&unit) {
            if self.bytes.get(end..end + 2) != Some(b"\\u") {
                return self.fail(end, "lone surrogate in escape");
            }
            let low = self.hex4(end + 2)?;
            if !(0xDC00..0xE000).contains(&low) {
                return self.fail(end, "lone surrogate in escape");
            }
            end += 6;
            0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
        } else {
            unit
        };
        // None exactly for a trailing surrogate without a leading one.
        let Some(c) = char::from_u32(code) else {
            return self.fail(pos, "lone surrogate in escape");
        };
        if key || !(c < ' ' || c == '"' || c == '\\') {
            self.arena.push(c);
        } else {
            write_escaped(&mut self.arena, c as u8);
        }
        Ok(end)
    }

    fn hex4(&mut self, pos: usize) -> Result<u32, Refused> {
        let mut unit = 0;
        for i in pos..pos + 4 {
            match self.bytes.get(i).and_then(|&d| char::from(d).to_digit(16)) {
                Some(digit) => unit = unit * 16 + digit,
                None => return self.fail(i, "invalid escape"),
            }
        }
        Ok(unit)
    }

    /// Index of the first non-digit at or after `pos`.
    fn digits(&self, mut pos: usize) -> usize {
        while let Some(b'0'..=b'9') = self.bytes.get(pos) {
            pos += 1;
        }
        pos
    }

    /// A number at `start` by JSON's grammar, which is serde_json's: no leading
    /// zeros, no bare `.` or exponent, and a value that rounds to a finite f64.
    fn number(&mut self, start: usize) -> Result<usize, Refused> {
        let bytes = self.bytes;
        let negative = bytes[start] == b'-';
        let int_start = start + usize::from(negative);
        if let Some(b'1'..=b'9') = bytes.get(int_start) {
            // Most numbers are short integers, which JS prints as written.
            let end = self.digits(int_start + 1);
            if end - int_start <= 15 && !matches!(bytes.get(end), Some(b'.' | b'e' | b'E')) {
                self.verbatim(start, end);
                return Ok(end);
            }
        }
        let int = match bytes.get(int_start) {
            Some(b'0') => {
                if let Some(b'0'..=b'9') = bytes.get(int_start + 1) {
                    return self.fail(int_start + 1, "leading zero in number");
                }
                int_start..int_start + 1
            }
            Some(b'1'..=b'9') => int_start..self.digits(int_start + 1),
            _ => return self.fail(int_start, "invalid number"),
        };
        let mut pos = int.end;
        let mut fraction = pos..pos;
        if bytes.get(pos) == Some(&b'.') {
            fraction = pos + 1..self.digits(pos + 1);
            if fraction.is_empty() {
                return self.fail(pos + 1, "no digit after decimal point");
            }
            pos = fraction.end;
        }
        let mut exponent = None;
        if let Some(b'e' | b'E') = bytes.get(pos) {
            pos += 1;
            let minus = bytes.get(pos) == Some(&b'-');
            if let Some(b'+' | b'-') = bytes.get(pos) {
                pos += 1;
            }
            let digits = pos..self.digits(pos);
            if digits.is_empty() {
                return self.fail(pos, "no digit in exponent");
            }
            pos = digits.end;
            // Saturating: anything this large is refused or zero, which the slow path decides.
            let value = bytes[digits]
                .iter()
                .fold(0i64, |e, &d| (e * 10 + i64::from(d - b'0')).min(100_000));
            exponent = Some(if minus { -value } else { value });
        }
        let end = pos;

        // The significant digits: the integer part (unless it is 0) and the
        // fraction less trailing zeros (and, after 0., less leading zeros).
        let frac = &bytes[fraction.clone()];
        let kept = frac.len() - frac.iter().rev().take_while(|&&d| d == b'0').count();
        let int_is_zero = bytes[int.start] == b'0';
        let (lead, significant) = if int_is_zero {
            let lead = frac[..kept].iter().take_while(|&&d| d == b'0').count();
            (lead, kept - lead)
        } else {
            (0, int.len() + kept)
        };
        if significant == 0 {
            // Zero, whatever its sign or exponent: the integer digit is "0".
            self.verbatim(int.start, int.start + 1);
            return Ok(end);
        }
        if significant <= 15 {
            if exponent.is_none() && lead <= 5 {
                // Fixed notation down to 1e-6, which is how it was written.
                let printed = if kept == 0 {
                    int.end
                } else {
                    fraction.start + kept
                };
                self.verbatim(start, printed);
                return Ok(end);
            }
            let (a, b) = if int_is_zero {
                (&[][..], &frac[lead..kept])
            } else if kept == 0 {
                let int = &bytes[int.clone()];
                let zeros = int.iter().rev().take_while(|&&d| d == b'0').count();
                (&int[..int.len() - zeros], &[][..])
            } else {
                (&bytes[int.clone()], &frac[..kept])
            };
            let point = if int_is_zero {
                -(lead as i64)
            } else {
                int.len() as i64
            };
            let n = point + exponent.unwrap_or(0);
            // Clear of subnormals and overflow.
            if (-300..=300).contains(&n) {
                let from = self.arena.len();
                write_short_number(&mut self.arena, negative, a, b, n);
                self.tape.push(Node::Text {
                    start: offset(from),
                    end: offset(self.arena.len()),
                });
                return Ok(end);
            }
        }
        // Correctly rounded, like JS's Number() and serde_json's float_roundtrip.
        match self.text[start..end].parse::<f64>() {
            Ok(f) if f.is_finite() => {
                let from = self.arena.len();
                self.arena.push_str(ryu_js::Buffer::new().format_finite(f));
                self.tape.push(Node::Text {
                    start: offset(from),
                    end: offset(self.arena.len()),
                });
                Ok(end)
            }
            _ => self.fail(start, "number out of range"),
        }
    }
}

/// `Number.prototype.toString` of the value 0.d × 10^n, where d (the
/// concatenation of `a` and `b`) has 1 to 15 digits, the first and last nonzero.
///
/// Such a decimal is the only one that short which reads as its f64 (15 is
/// DBL_DIG, for normal numbers), so d is the shortest round trip JS prints
/// (the spec's s, with k = d's length); only where the point or exponent goes
/// is left to work out.
fn write_short_number(out: &mut String, negative: bool, a: &[u8], b: &[u8], n: i64) {
    let push = |out: &mut String, digits: &[u8]| {
        out.extend(digits.iter().map(|&d| char::from(d)));
    };
    let zeros = |out: &mut String, count: i64| {
        out.extend((0..count).map(|_| '0'));
    };
    let k = (a.len() + b.len()) as i64;
    if negative {
        out.push('-');
    }
    if k <= n && n <= 21 {
        push(out, a);
        push(out, b);
        zeros(out, n - k);
    } else if 0 < n && n <= 21 {
        let n = n as usize;
        if n <= a.len() {
            push(out, &a[..n]);
            out.push('.');
            push(out, &a[n..]);
            push(out, b);
        } else {
            push(out, a);
            push(out, &b[..n - a.len()]);
            out.push('.');
            push(out, &b[n - a.len()..]);
        }
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        zeros(out, -n);
        push(out, a);
        push(out, b);
    } else {
        let (first, rest) = match a.split_first() {
            Some((first, rest)) => (*first, [rest, b]),
            None => (b[0], [&b[1..], &[][..]]),
        };
        out.push(char::from(first));
        if k > 1 {
            out.push('.');
            push(out, rest[0]);
            push(out, rest[1]);
        }
        out.push_str(if n > 0 { "e+" } else { "e-" });
        // At most 301 here.
        let e = (n - 1).unsigned_abs();
        let digit = |d: u64| char::from(b'0' + (d % 10) as u8);
        if e >= 100 {
            out.push(digit(e / 100));
        }
        if e >= 10 {
            out.push(digit(e / 10));
        }
        out.push(digit(e));
    }
}

/// Index of the first `"`, `\` or control byte at or after `pos`, or the end.
fn skip_unescaped(bytes: &[u8], mut pos: usize) -> usize {
    // Eight bytes at a time (the zero-byte trick): the lowest flagged byte is
    // always a real match, since borrows only spread upwards from one.
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    while let Some(chunk) = bytes.get(pos..pos + 8) {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let control = word.wrapping_sub(ONES * 0x20) & !word;
        let quote = word ^ (ONES * u64::from(b'"'));
        let quote = quote.wrapping_sub(ONES) & !quote;
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let backslash = backslash.wrapping_sub(ONES) & !backslash;
        let found = (control | quote | backslash) & HIGH;
        if found != 0 {
            return pos + (found.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    while let Some(&b) = bytes.get(pos) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        pos += 1;
    }
    pos
}

/// Second pass: prints the tape, objects in the order the parser worked out.
struct Printer<'a> {
    text: &'a str,
    arena: &'a str,
    tape: &'a [Node],
    orders: &'a [u32],
    out: String,
    /// Body bytes that are the next output, not yet copied: runs that print
    /// unchanged (compact, already ordered) cost one copy.
    run: Range<usize>,
}

/// A container the printer is inside.
#[derive(Clone, Copy)]
enum Printing {
    /// Elements, or members in body order, until tape index `end`.
    InOrder { end: usize, object: bool },
    /// Members listed in `orders[next..last]`; the object's tape ends at `end`.
    Sorted {
        next: usize,
        last: usize,
        end: usize,
    },
}

impl Printer<'_> {
    /// Copies the pending run and starts an empty one at `start`.
    #[inline(never)]
    fn restart(&mut self, start: usize) {
        self.out.push_str(&self.text[self.run.clone()]);
        self.run = start..start;
    }

    fn flush(&mut self) {
        self.restart(self.run.end);
    }

    #[inline]
    fn copy(&mut self, start: u32, end: u32) {
        let start = start as usize;
        if start != self.run.end {
            self.restart(start);
        }
        self.run.end = end as usize;
    }

    /// Prints the ASCII byte `b`, from the body when it is next there.
    #[inline]
    fn byte(&mut self, b: u8) {
        if self.text.as_bytes().get(self.run.end) == Some(&b) {
            self.run.end += 1;
        } else {
            self.push_byte(b);
        }
    }

    #[inline(never)]
    fn push_byte(&mut self, b: u8) {
        self.flush();
        self.out.push(char::from(b));
    }

    /// Prints a string node: a key, or a string value (or a whole member).
    #[inline]
    fn string(&mut self, node: Node) {
        match node {
            Node::Verbatim { start, end } | Node::Pair { start, end } => self.copy(start, end),
            Node::Decoded { start, end } => self.decoded(start, end),
            _ => unreachable!("the parser puts a string node before every member value"),
        }
    }

    #[inline(never)]
    fn decoded(&mut self, start: u32, end: u32) {
        self.flush();
        write_str(&mut self.out, &self.arena[start as usize..end as usize]);
    }

    /// Starts the member at tape index `at`: prints its key and a colon and
    /// returns where its value is, or returns `at` for a [`Node::Pair`].
    #[inline]
    fn key(&mut self, at: usize) -> usize {
        let node = self.tape[at];
        if let Node::Pair { .. } = node {
            return at;
        }
        self.string(node);
        self.byte(b':');
        at + 1
    }

    /// Prints the whole tape, with an explicit stack instead of recursion.
    fn document(&mut self) {
        let mut open: Vec<Printing> = Vec::new();
        let mut at = 0;
        loop {
            // Print the value at `at`; `after` is the tape index past it.
            let mut after = at + 1;
            match self.tape[at] {
                node @ (Node::Verbatim { .. } | Node::Pair { .. } | Node::Decoded { .. }) => {
                    self.string(node);
                }
                Node::Text { start, end } => {
                    self.flush();
                    self.out.push_str(&self.arena[start as usize..end as usize]);
                }
                Node::Array { end } => {
                    self.byte(b'[');
                    if end as usize > after {
                        open.push(Printing::InOrder {
                            end: end as usize,
                            object: false,
                        });
                        at = after;
                        continue;
                    }
                    self.byte(b']');
                }
                Node::Object { end, order } => {
                    let end = end as usize;
                    self.byte(b'{');
                    if end > after {
                        if order == IN_ORDER {
                            open.push(Printing::InOrder { end, object: true });
                            at = self.key(after);
                        } else {
                            let first = order as usize + 1;
                            let last = first + self.orders[order as usize] as usize;
                            open.push(Printing::Sorted {
                                next: first + 1,
                                last,
                                end,
                            });
                            at = self.key(self.orders[first] as usize);
                        }
                        continue;
                    }
                    self.byte(b'}');
                    after = end;
                }
            }
            // After a value: the next element or member, or close containers.
            loop {
                match open.last_mut() {
                    None => return,
                    Some(&mut Printing::InOrder { end, object }) => {
                        if after < end {
                            self.byte(b',');
                            at = if object { self.key(after) } else { after };
                            break;
                        }
                        self.byte(if object { b'}' } else { b']' });
                    }
                    Some(Printing::Sorted { next, last, end }) => {
                        if *next < *last {
                            let member = self.orders[*next] as usize;
                            *next += 1;
                            self.byte(b',');
                            at = self.key(member);
                            break;
                        }
                        after = *end;
                        self.byte(b'}');
                        open.pop();
                        continue;
                    }
                }
                open.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};
    use proptest::test_runner::TestRunner;
    use sha1::Sha1;
    use std::cell::RefCell;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

    const GOLDEN: &str = include_str!("../testdata/inline_golden.json");

    fn hmac_sha1_hex(key: &[u8], data: &[u8]) -> String {
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("any key length");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn golden_vectors_from_node() {
        let cases: Vec<Value> = serde_json::from_str(GOLDEN).expect("golden file is JSON");
        assert!(cases.len() >= 20, "golden file lost its cases");
        for case in &cases {
            let field = |k: &str| case[k].as_str().expect("golden field is a string");
            let (name, body, canonical) = (field("name"), field("body"), field("canonical"));
            let got = canonicalize(body.as_bytes())
                .unwrap_or_else(|e| panic!("{name}: canonicalize failed: {e}"));
            assert_eq!(got, canonical, "{name}: canonical form");
            let parsed: Value = serde_json::from_str(body).expect("golden body parses");
            assert_eq!(
                canonical_value(&parsed),
                canonical,
                "{name}: canonical_value"
            );
            assert_eq!(
                hmac_sha1_hex(b"inline-test-secret", got.as_bytes()),
                field("hmac_sha1_hex"),
                "{name}: signature"
            );
        }
    }

    #[test]
    fn rejects_invalid_json() {
        for body in [&b"{"[..], b"{\"a\":1,}", b"01", b"", b"{} x", b"\"\xff\""] {
            assert!(matches!(
                canonicalize(body),
                Err(CanonicalError::NotJson(_))
            ));
        }
        // JS nests far deeper than serde_json's recursion limit of 128.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(canonicalize(deep.as_bytes()).is_err());
    }

    #[test]
    fn rejects_out_of_range_number() {
        // JS would print Infinity as null; no exact mirror, so refuse.
        assert!(canonicalize(b"1e400").is_err());
        assert!(canonicalize(b"{\"a\":[-1e400]}").is_err());
    }

    #[test]
    fn rejects_lone_surrogates() {
        // JS keeps these and prints "\ud800"; a Rust String cannot hold them.
        assert!(canonicalize(br#""\ud800""#).is_err());
        assert!(canonicalize(br#"{"\udc00":1}"#).is_err());
        assert!(canonicalize(br#"["\ud83d x"]"#).is_err());
    }

    #[test]
    fn numbers_print_like_js() {
        let got = canonicalize(b"[-0, -0.0, 1.0, 1e20, 1e21, 1e-6, 1e-7, 9007199254740993]");
        assert_eq!(
            got.unwrap(),
            "[0,0,1,100000000000000000000,1e+21,0.000001,1e-7,9007199254740992]"
        );
    }

    #[test]
    fn array_index_keys() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("4294967294"), Some(u32::MAX - 1));
        let not_indexes = [
            "",
            "01",
            "-1",
            "+1",
            "1.0",
            " 1",
            "4294967295",
            "4294967296",
        ];
        for key in not_indexes {
            assert_eq!(array_index(key), None, "{key:?}");
        }
    }

    #[test]
    fn depth_limit_matches_serde_json() {
        // serde_json refuses the 128th nested container; JS would go far deeper.
        for depth in [1, 126, 127, 128, 129, 200] {
            let bodies = [
                format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
                format!("{}1{}", "[".repeat(depth), "]".repeat(depth)),
                format!("{}{{}}{}", "[".repeat(depth - 1), "]".repeat(depth - 1)),
                format!("{}0{}", "{\"a\":".repeat(depth), "}".repeat(depth)),
                format!(
                    "{}{}",
                    "[{\"k\":".repeat(depth / 2),
                    "1}]".repeat(depth / 2)
                ),
            ];
            for body in bodies {
                let dom = serde_json::from_str::<Value>(&body).map(|v| canonical_value(&v));
                assert_eq!(
                    canonicalize(body.as_bytes()).ok(),
                    dom.ok(),
                    "depth {depth}: {body}"
                );
            }
        }
        assert!(canonicalize(format!("{}{}", "[".repeat(127), "]".repeat(127)).as_bytes()).is_ok());
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        let bodies = [
            "[1,]",
            "[,1]",
            "[1,,2]",
            "{,}",
            "{\"a\":1,,\"b\":2}",
            "{\"a\"}",
            "{\"a\":}",
            "{\"a\" 1}",
            "{1:2}",
            "{a:1}",
            "[1 2]",
            "[\"a\" \"b\"]",
            "]",
            "}",
            "[",
            "[1",
            "{\"a\":1",
            "\"abc",
            "\"a\\\"",
            "-",
            "--1",
            "+1",
            ".5",
            "1.",
            "1.e5",
            "1e",
            "1e+",
            "0x10",
            "01",
            "-01",
            "1_000",
            "NaN",
            "Infinity",
            "-Infinity",
            "nul",
            "nulls",
            "True",
            "\"\\x41\"",
            "\"\\u12\"",
            "\"\\u12G4\"",
            "\"\\U0041\"",
            "\"\t\"",
            "\"\n\"",
            "\"\u{7f}\"",
            "[1]]",
            "[1]}",
            "{}}",
            "'a'",
            "/* */1",
            "1 // x",
        ];
        for body in bodies {
            let expected = serde_json::from_str::<Value>(body)
                .ok()
                .map(|v| canonical_value(&v));
            assert_eq!(canonicalize(body.as_bytes()).ok(), expected, "{body:?}");
        }
    }

    #[test]
    fn whitespace_is_json_whitespace_only() {
        assert_eq!(canonicalize(b" \t\r\n[ 1 ,\n2 ] \r\n").unwrap(), "[1,2]");
        for body in [
            &b"\xef\xbb\xbf[1]"[..],
            b"[1]\x0b",
            b"\x0c[1]",
            b"[1,\xc2\xa02]",
            b"[1]\x00",
        ] {
            assert!(canonicalize(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn members_print_as_written_only_when_compact_and_ordered() {
        let cases = [
            (
                r#"{"a":1,"b":[1,2,{"c":"d"}]}"#,
                r#"{"a":1,"b":[1,2,{"c":"d"}]}"#,
            ),
            (r#"{"b":1,"a":[1,2]}"#, r#"{"a":[1,2],"b":1}"#),
            (r#"{"a":1.50,"b":-0,"c":1e2}"#, r#"{"a":1.5,"b":0,"c":100}"#),
            (r#"[-0,1,0.0,2,"x",1.0]"#, r#"[0,1,0,2,"x",1]"#),
            (r#"{"a": 1,"b" :2}"#, r#"{"a":1,"b":2}"#),
            (r#"{"a":1,"a":2}"#, r#"{"a":2}"#),
            (r#"{"\u0061":1,"b":"\/"}"#, r#"{"a":1,"b":"/"}"#),
            (r#"[{ },[ ],{},[]]"#, r#"[{},[],{},[]]"#),
            (
                r#"{"1":0,"0":1,"a":{"10":2,"9":3}}"#,
                r#"{"0":1,"1":0,"a":{"9":3,"10":2}}"#,
            ),
        ];
        for (body, canonical) in cases {
            assert_eq!(canonicalize(body.as_bytes()).unwrap(), canonical, "{body}");
        }
    }

    #[test]
    fn keys_with_long_shared_prefixes_sort_like_dom() {
        // Groups of keys that tie on their first bytes, on the next eight, and so
        // on; in small and large objects, with repeats and escapes.
        let long = "a".repeat(40);
        let shared = ["", "a", "aaaaaaa", "aaaaaaaa", "aaaaaaaaaaaaaaaa", &long];
        let tails = [
            "",
            "b",
            "ab",
            "ac",
            "aab",
            "\\u0000",
            "\\ue000",
            "\\ud83d\\ude00",
            "\u{ffff}",
        ];
        let mut keys: Vec<String> = shared
            .iter()
            .flat_map(|s| tails.iter().map(move |t| format!("{s}{t}")))
            .collect();
        for count in [3, 9, 17, keys.len()] {
            // A fixed shuffle, and keys repeated: JSON.parse keeps the later value.
            keys.rotate_left(7);
            let picked: Vec<&String> = keys
                .iter()
                .step_by(2)
                .chain(&keys)
                .take(count * 2)
                .collect();
            let members: Vec<String> = picked
                .iter()
                .enumerate()
                .map(|(i, k)| format!("\"{k}\":{i}"))
                .collect();
            let body = format!("{{{}}}", members.join(","));
            let expected = dom(body.as_bytes()).expect("valid JSON");
            assert_eq!(canonicalize(body.as_bytes()).unwrap(), expected, "{body}");
        }
    }

    #[test]
    fn short_numbers_print_like_js() {
        let cases = [
            ("1e0", "1"),
            ("12e-1", "1.2"),
            ("1200", "1200"),
            ("1200e-3", "1.2"),
            ("0.0000012", "0.0000012"),
            ("0.00000012", "1.2e-7"),
            ("123456789012345e6", "123456789012345000000"),
            ("123456789012345e7", "1.23456789012345e+21"),
            ("-5e-324", "-5e-324"),
            ("1e300", "1e+300"),
            ("1e-300", "1e-300"),
            ("-0e5", "0"),
            ("0.5e1", "5"),
            ("1E+2", "100"),
            ("100000000000000000000", "100000000000000000000"),
            ("1000000000000000000000", "1e+21"),
        ];
        for (body, canonical) in cases {
            assert_eq!(canonicalize(body.as_bytes()).unwrap(), canonical, "{body}");
        }
    }

    #[test]
    fn utf16_order_examples() {
        let sorted = [
            "",
            "\0",
            "A",
            "a",
            "é",
            "\u{d7ff}",
            "😀",
            "\u{10ffff}",
            "\u{e000}",
            "\u{ffff}",
        ];
        for pair in sorted.windows(2) {
            assert_eq!(utf16_order(pair[0], pair[1]), Ordering::Less, "{pair:?}");
            assert_eq!(utf16_order(pair[1], pair[0]), Ordering::Greater, "{pair:?}");
        }
    }

    /// Strategies for JSON text: valid documents exercising what JS and serde_json disagree on.
    mod json_text {
        use proptest::prelude::*;
        use proptest::sample::select;

        /// Whitespace between tokens, usually none.
        pub(super) fn ws() -> impl Strategy<Value = &'static str> {
            prop_oneof![
                8 => Just(""),
                1 => select(vec![" ", "\n", "\t", "\r\n", " \t\n\r "]),
            ]
        }

        /// `c` as `\uXXXX` escapes (a surrogate pair above U+FFFF), hex in either case.
        fn unicode_escape(c: char, upper: bool) -> String {
            c.encode_utf16(&mut [0; 2])
                .iter()
                .map(|unit| {
                    if upper {
                        format!("\\u{unit:04X}")
                    } else {
                        format!("\\u{unit:04x}")
                    }
                })
                .collect()
        }

        /// A piece of a string literal's contents, raw or escaped.
        fn piece() -> impl Strategy<Value = String> {
            let raw =
                any::<char>().prop_filter("needs escaping", |&c| c != '"' && c != '\\' && c >= ' ');
            prop_oneof![
                4 => "[a-zA-Z0-9 _./-]{1,6}",
                2 => raw.prop_map(String::from),
                2 => select(vec![
                    "é", "範", "😀", "👍🏽", "\u{2028}", "\u{2029}", "\u{feff}", "\u{ffff}",
                    "\u{fffe}", "\u{e000}", "\u{f8ff}", "\u{f0000}", "\u{10ffff}", "\u{7f}",
                    "\u{80}", "\u{fffd}", "\u{d7ff}", "\u{10000}", "\u{a0}",
                ])
                .prop_map(String::from),
                2 => select(vec![
                    "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t",
                ])
                .prop_map(String::from),
                2 => (any::<char>(), any::<bool>()).prop_map(|(c, upper)| unicode_escape(c, upper)),
                1 => (0u8..0x20, any::<bool>())
                    .prop_map(|(b, upper)| unicode_escape(char::from(b), upper)),
                1 => select(vec![
                    "\\ud83d\\ude00", "\\uD83D\\uDE00", "\\udbff\\udfff", "\\ud800\\udc00",
                    "\\u2028", "\\uFEFF", "\\uffff", "\\u0000", "\\u001F", "\\u007f",
                ])
                .prop_map(String::from),
            ]
        }

        /// A string literal, quotes included.
        pub(super) fn string() -> impl Strategy<Value = String> {
            prop::collection::vec(piece(), 0..6)
                .prop_map(|pieces| format!("\"{}\"", pieces.concat()))
        }

        /// An object key: often one of a few (so repeats happen), often integer-like.
        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => select(vec![
                    "0", "1", "2", "9", "10", "01", "00", "-1", "-0", "1.0", "1e3", " 1", "+1",
                    "4294967294", "4294967295", "4294967296", "18446744073709551616",
                    "__proto__", "constructor", "toString", "", "a", "b", "B", "ab", "a\\u0000",
                    "\\u0031", "\\u0030", "\\u0031\\u0030", "\\u0061", "😀", "\\ud83d\\ude00",
                    "\u{e000}", "\u{ffff}", "\u{10000}", "é", "\u{2028}", "aaaaaaaa", "aaaaaaab",
                    "aaaaaaaa\u{e000}", "aaaaaaaa😀", "aaaaaaa\u{e000}", "aaaaaaa😀",
                ])
                .prop_map(|k| format!("\"{k}\"")),
                2 => string(),
            ]
        }

        /// Numbers: integers of every size, decimals, exponents, all within f64's range.
        pub(super) fn number() -> impl Strategy<Value = String> {
            prop_oneof![
                2 => select(vec![
                    "0", "-0", "-0.0", "0.0", "1.0", "1e21", "1e20", "1e-7", "1e-6", "0.000001",
                    "0.0000001", "5e-324", "-5e-324", "2.5e-324", "9007199254740992",
                    "9007199254740993", "-9007199254740993", "18446744073709551615",
                    "18446744073709551616", "-9223372036854775808", "-9223372036854775809",
                    "1.7976931348623157e308", "-1.7976931348623157e308", "2.2250738585072014e-308",
                    "2.2250738585072011e-308", "4.9406564584124654e-324", "1e-400", "0e999",
                    "0.1", "0.2", "0.3", "0.30000000000000004", "123456789012345678901234",
                    "1E+2", "1e+2", "1E-2", "12.5e-1", "100e-2", "0.1e1", "1.5e300",
                    "123456789012345", "1234567890123456", "999999999999999", "1000000000000000",
                    "0.000001234567890123", "25.0766335", "121.5270664", "1524181344796",
                ])
                .prop_map(String::from),
                2 => (-1000i64..1000).prop_map(|n| n.to_string()),
                1 => any::<i64>().prop_map(|n| n.to_string()),
                1 => any::<u64>().prop_map(|n| n.to_string()),
                // At most 25 integer digits and exponents below 280 stay finite.
                3 => "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,20})?([eE][+-]?(0|[1-9][0-9]?|1[0-9][0-9]|2[0-7][0-9]))?",
                1 => "-?[1-9][0-9]{0,3}(\\.[0-9]{1,4})?[eE]-(3[0-2][0-9])",
                2 => any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_flat_map(|f| select(vec![format!("{f}"), format!("{f:e}"), format!("{f:?}")])),
            ]
        }

        fn leaf() -> impl Strategy<Value = String> {
            prop_oneof![
                1 => select(vec!["null", "true", "false"]).prop_map(String::from),
                3 => number(),
                3 => string(),
            ]
        }

        /// Objects and arrays up to six deep around the given leaves.
        fn nest(leaf: impl Strategy<Value = String> + 'static) -> impl Strategy<Value = String> {
            leaf.prop_recursive(6, 96, 6, |inner| {
                prop_oneof![
                    (ws(), prop::collection::vec((inner.clone(), ws()), 0..6)).prop_map(
                        |(open, items)| {
                            let items: Vec<String> =
                                items.into_iter().map(|(v, w)| format!("{v}{w}")).collect();
                            format!("[{open}{}]", items.join(","))
                        }
                    ),
                    (
                        ws(),
                        prop::collection::vec((key(), ws(), ws(), inner, ws()), 0..6)
                    )
                        .prop_map(|(open, members)| {
                            let members: Vec<String> = members
                                .into_iter()
                                .map(|(k, a, b, v, c)| format!("{k}{a}:{b}{v}{c}"))
                                .collect();
                            format!("{{{open}{}}}", members.join(&format!(",{open}")))
                        }),
                ]
            })
        }

        /// A whole JSON document that both JS and serde_json accept.
        pub(super) fn document() -> impl Strategy<Value = String> {
            (ws(), nest(leaf()), ws()).prop_map(|(a, v, b)| format!("{a}{v}{b}"))
        }

        /// Leaves JS accepts but serde_json refuses (documented refusals), among valid ones.
        fn refused_leaf() -> impl Strategy<Value = String> {
            prop_oneof![
                6 => leaf(),
                1 => select(vec![
                    "\"\\ud800\"", "\"\\udc00\"", "\"\\ud83d x\"", "\"\\ud83d\\u0041\"",
                    "\"\\ud83d\\ud83d\"", "\"\\uDFFF\\uD800\"", "\"a\\ud800\"",
                    "1e400", "-1e309", "1.8e308", "1e99999999999", "-123456789e999",
                    "17976931348623158e292", "0.00001e99999999999", "0e99999999999",
                    "1e-99999999999",
                ])
                .prop_map(String::from),
            ]
        }

        /// Like [`document`], sometimes with something serde_json refuses inside.
        pub(super) fn document_or_refused() -> impl Strategy<Value = String> {
            (ws(), nest(refused_leaf()), ws()).prop_map(|(a, v, b)| format!("{a}{v}{b}"))
        }

        /// One edit to a body's bytes.
        #[derive(Debug, Clone)]
        pub(super) enum Edit {
            Set(prop::sample::Index, u8),
            Insert(prop::sample::Index, &'static str),
            Remove(prop::sample::Index),
            Truncate(prop::sample::Index),
        }

        fn interesting_byte() -> impl Strategy<Value = u8> {
            prop_oneof![
                3 => select(b"{}[],:\"\\/0123456789.eE-+ \t\n\r\x0b\x0ctrufalsn\x00\x1f\x7f".to_vec()),
                1 => any::<u8>(),
            ]
        }

        /// Text that breaks JSON, or nearly does, where it lands.
        fn snippet() -> impl Strategy<Value = &'static str> {
            select(vec![
                ",",
                ",]",
                ",}",
                "]",
                "}",
                "[",
                "{",
                "\"",
                ":",
                "\\",
                "\\u",
                "\\ud800",
                "\\udc00",
                "\\u12",
                "-",
                "0",
                "00",
                "e",
                "e+",
                ".",
                "1e400",
                "\x0c",
                "\u{a0}",
                "\u{feff}",
                "\u{2028}",
                "\x7f",
                "\x01",
                "\"\":",
                "nul",
                "truee",
                "\u{1f600}",
            ])
        }

        pub(super) fn edits() -> impl Strategy<Value = Vec<Edit>> {
            let edit = prop_oneof![
                (any::<prop::sample::Index>(), interesting_byte())
                    .prop_map(|(i, b)| Edit::Set(i, b)),
                (any::<prop::sample::Index>(), snippet()).prop_map(|(i, t)| Edit::Insert(i, t)),
                any::<prop::sample::Index>().prop_map(Edit::Remove),
                any::<prop::sample::Index>().prop_map(Edit::Truncate),
            ];
            prop::collection::vec(edit, 1..4)
        }

        pub(super) fn apply(body: &str, edits: &[Edit]) -> Vec<u8> {
            let mut bytes = body.as_bytes().to_vec();
            for edit in edits {
                let len = bytes.len();
                match *edit {
                    Edit::Set(i, b) if len > 0 => bytes[i.index(len)] = b,
                    Edit::Insert(i, text) => {
                        let at = i.index(len + 1);
                        bytes.splice(at..at, text.bytes());
                    }
                    Edit::Remove(i) if len > 0 => {
                        bytes.remove(i.index(len));
                    }
                    Edit::Truncate(i) => bytes.truncate(i.index(len + 1)),
                    _ => {}
                }
            }
            bytes
        }
    }

    /// What the old method (serde_json's DOM, then `canonical_value`) makes of `body`.
    fn dom(body: &[u8]) -> Option<String> {
        serde_json::from_slice::<Value>(body)
            .ok()
            .map(|value| canonical_value(&value))
    }

    /// PROPTEST_CASES if set, else `default`.
    fn config(default: u32) -> proptest::test_runner::Config {
        let mut config = proptest::test_runner::Config::default();
        if std::env::var_os("PROPTEST_CASES").is_none() {
            config.cases = default;
        }
        config
    }

    proptest::proptest! {
        #![proptest_config(config(1024))]

        #[test]
        fn random_documents_match_dom(body in json_text::document_or_refused()) {
            proptest::prop_assert_eq!(canonicalize(body.as_bytes()).ok(), dom(body.as_bytes()));
        }

        #[test]
        fn random_numbers_match_dom(number in json_text::number(), exponent in -400i32..400) {
            for body in [number.clone(), format!("{number}e{exponent}"), format!("[{number},-{number}]")] {
                proptest::prop_assert_eq!(canonicalize(body.as_bytes()).ok(), dom(body.as_bytes()), "{}", body);
            }
        }

        #[test]
        fn random_keys_sort_like_dom(
            keys in proptest::collection::vec(
                proptest::strategy::Strategy::prop_map(
                    (
                        proptest::sample::select(vec!["", "a", "aaaaaa", "aaaaaaa", "aaaaaaaa", "aaaaaab"]),
                        "[a-c0\u{0}\u{7f}é\u{e000}\u{ffff}😀]{0,3}",
                    ),
                    |(a, b)| a.to_owned() + &b,
                ),
                0..24,
            ),
            escape in proptest::collection::vec(proptest::bool::ANY, 24),
        ) {
            // Keys that share long prefixes, tie on their first bytes, or differ
            // just where UTF-8 and UTF-16 order part; some written with escapes.
            let members: Vec<String> = keys
                .iter()
                .zip(&escape)
                .enumerate()
                .map(|(i, (key, &escape))| {
                    let key = if escape {
                        key.encode_utf16().map(|u| format!("\\u{u:04x}")).collect()
                    } else {
                        key.replace('\0', "\\u0000")
                    };
                    format!("\"{key}\":{i}")
                })
                .collect();
            let body = format!("{{{}}}", members.join(","));
            proptest::prop_assert_eq!(canonicalize(body.as_bytes()).ok(), dom(body.as_bytes()), "{}", body);
        }

        #[test]
        fn utf16_order_matches_code_units(a in "\\PC{0,6}", b in "\\PC{0,6}", common in "\\PC{0,9}") {
            let (a, b) = (format!("{common}{a}"), format!("{common}{b}"));
            proptest::prop_assert_eq!(utf16_order(&a, &b), a.encode_utf16().cmp(b.encode_utf16()));
        }
    }

    proptest::proptest! {
        // Most edits land where they change nothing serde_json cares about.
        #![proptest_config(config(2048))]

        #[test]
        fn edited_documents_are_refused_like_serde_json(
            body in json_text::document(),
            edits in json_text::edits(),
        ) {
            let body = json_text::apply(&body, &edits);
            proptest::prop_assert_eq!(canonicalize(&body).ok(), dom(&body));
        }
    }

    /// The provider's own JavaScript in one node process, one document per line.
    struct Node {
        child: Child,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
    }

    impl Node {
        /// Reads JSON-encoded documents, one per line; answers each with its
        /// JSON-encoded canonical form, or null where JSON.parse throws.
        const SCRIPT: &str = r#"
            const sortDeep = v => Array.isArray(v) ? v.map(sortDeep)
              : v !== null && typeof v === 'object'
                ? Object.fromEntries(Object.keys(v).sort().map(k => [k, sortDeep(v[k])])) : v;
            const lines = require('readline').createInterface({ input: process.stdin });
            lines.on('line', line => {
              let out = null;
              try { out = JSON.stringify(sortDeep(JSON.parse(JSON.parse(line)))); } catch (e) {}
              process.stdout.write(JSON.stringify(out) + '\n');
            });
        "#;

        /// Starts node; without it the test fails, unless HOOKLINE_SKIP_NODE=1 (then None).
        fn start() -> Option<Node> {
            let spawned = Command::new("node")
                .args(["-e", Self::SCRIPT])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn();
            let mut child = match spawned {
                Ok(child) => child,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if std::env::var("HOOKLINE_SKIP_NODE").as_deref() == Ok("1") {
                        // Straight to stderr: libtest would swallow eprintln! from a passing test.
                        let _ = writeln!(
                            std::io::stderr(),
                            "SKIPPED: node not installed (HOOKLINE_SKIP_NODE=1): \
                             inline's canonical JSON was NOT checked against JavaScript"
                        );
                        return None;
                    }
                    panic!(
                        "node is not on PATH, so inline's canonical JSON cannot be checked \
                         against JavaScript: install Node.js, or set HOOKLINE_SKIP_NODE=1 to skip"
                    );
                }
                Err(e) => panic!("failed to start node: {e}"),
            };
            let stdin = child.stdin.take().expect("piped stdin");
            let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
            Some(Node {
                child,
                stdin,
                stdout,
            })
        }

        /// What node prints for `body`, or None where JSON.parse throws.
        fn canonicalize(&mut self, body: &str) -> Option<String> {
            // Only ASCII on the line: nothing node's line splitting could misread.
            let mut line = String::from("\"");
            for c in body.chars() {
                match c {
                    '"' => line.push_str("\\\""),
                    '\\' => line.push_str("\\\\"),
                    ' '..='~' => line.push(c),
                    _ => {
                        for unit in c.encode_utf16(&mut [0; 2]) {
                            line.push_str(&format!("\\u{unit:04x}"));
                        }
                    }
                }
            }
            line.push_str("\"\n");
            self.stdin
                .write_all(line.as_bytes())
                .expect("write to node");
            self.stdin.flush().expect("flush to node");
            let mut answer = String::new();
            self.stdout.read_line(&mut answer).expect("read from node");
            assert!(answer.ends_with('\n'), "node stopped answering: {answer:?}");
            serde_json::from_str(&answer).expect("node answers JSON")
        }
    }

    impl Drop for Node {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn random_documents_match_node() {
        let Some(node) = Node::start() else {
            return;
        };
        let node = RefCell::new(node);
        let config = config(512);
        let cases = config.cases;
        let started = std::time::Instant::now();
        let mut runner = TestRunner::new(proptest::test_runner::Config {
            source_file: Some(file!()),
            ..config
        });
        let result = runner.run(&json_text::document(), |body| {
            let want = node.borrow_mut().canonicalize(&body);
            let want = want.unwrap_or_else(|| panic!("node refused {body:?}"));
            let got = canonicalize(body.as_bytes()).ok();
            proptest::prop_assert_eq!(got, Some(want), "body {:?}", body);
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        let _ = writeln!(
            std::io::stderr(),
            "random_documents_match_node: {cases} documents agreed with node in {:.1?}",
            started.elapsed()
        );
    }
}
