//! Timeline chunks (see `sql/compaction.sql`): each message's document,
//! rendered once by the renderer (src/render.rs) when the chunk is written,
//! so that a history page is an index probe, a decompression and a
//! concatenation — no rows to decode and no JSON to build at read time.
//!
//! Encrypted messages are stored sealed: their entry holds the document
//! without the body, where the body goes, and the stored (plaintext
//! remainder, envelope) pair; the page opens them at read time. So nothing
//! in a chunk is plaintext of an encrypted body.
//!
//! Format: `pdc2`, the chunk's first and last seq (i64 LE each), then a zstd
//! frame of the entries in seq order. An entry is
//! `seq i64 | flags u8 | doc_len u32 | doc` and, when sealed,
//! `body_at u32 | version i32 | id_len u32 | id | [plain_len u32 | plain] | env_len u32 | env`.
//! Chunks are derived data (never dumped; compaction rebuilds them): a chunk
//! this code cannot read is treated as "not chunked", and the page is read
//! from the messages table.

use std::cell::RefCell;

use pgrx::prelude::*;

use crate::crypto;
use crate::render::{write_head, write_message, write_page, write_tail, Message};

const MAGIC: &[u8; 4] = b"pdc2";
const HEADER: usize = 4 + 8 + 8;
/// zstd level: chunks are written once in the background and read often.
const LEVEL: i32 = 6;
/// An unpacked chunk is a few dozen kB; refuse to allocate absurd sizes.
const MAX_UNPACKED: usize = 64 << 20;

const DELETED: u8 = 1;
const SEALED: u8 = 2;
const HAS_PLAIN: u8 = 4;

/// A sealed message's stored parts, opened at read time.
#[derive(Debug, PartialEq)]
pub struct Sealed<'a> {
    pub body_at: usize,
    pub id: &'a str,
    pub version: i32,
    pub plain: Option<&'a str>,
    pub envelope: &'a str,
}

/// One message of a chunk.
#[derive(Debug, PartialEq)]
pub struct Entry<'a> {
    pub seq: i64,
    pub deleted: bool,
    /// The whole document; for a sealed message, the document without its body.
    pub doc: &'a str,
    pub sealed: Option<Sealed<'a>>,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

pub fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + e.doc.len());
    out.extend_from_slice(&e.seq.to_le_bytes());
    let mut flags = if e.deleted { DELETED } else { 0 };
    if let Some(s) = &e.sealed {
        flags |= SEALED | if s.plain.is_some() { HAS_PLAIN } else { 0 };
    }
    out.push(flags);
    put_bytes(&mut out, e.doc.as_bytes());
    if let Some(s) = &e.sealed {
        out.extend_from_slice(&(s.body_at as u32).to_le_bytes());
        out.extend_from_slice(&s.version.to_le_bytes());
        put_bytes(&mut out, s.id.as_bytes());
        if let Some(p) = s.plain {
            put_bytes(&mut out, p.as_bytes());
        }
        put_bytes(&mut out, s.envelope.as_bytes());
    }
    out
}

/// Reads entries back; None on anything malformed.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn text(&mut self) -> Option<&'a str> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).ok()
    }
    fn entry(&mut self) -> Option<Entry<'a>> {
        let seq = self.i64()?;
        let flags = *self.take(1)?.first()?;
        let doc = self.text()?;
        let sealed = if flags & SEALED != 0 {
            let body_at = self.u32()? as usize;
            let version = i32::from_le_bytes(self.take(4)?.try_into().ok()?);
            let id = self.text()?;
            let plain = if flags & HAS_PLAIN != 0 {
                Some(self.text()?)
            } else {
                None
            };
            let envelope = self.text()?;
            if !doc.is_char_boundary(body_at) {
                return None;
            }
            Some(Sealed {
                body_at,
                id,
                version,
                plain,
                envelope,
            })
        } else {
            None
        };
        Some(Entry {
            seq,
            deleted: flags & DELETED != 0,
            doc,
            sealed,
        })
    }
}

/// All entries of an unpacked chunk body, or None when malformed.
pub fn decode_entries(body: &[u8]) -> Option<Vec<Entry<'_>>> {
    let mut r = Reader { buf: body };
    let mut out = Vec::new();
    while !r.buf.is_empty() {
        out.push(r.entry()?);
    }
    Some(out)
}

// A backend keeps one zstd context of each kind: creating one per call
// (~100 kB to ~1 MB of tables) cost more than decompressing a page's chunks,
// and the memory churn went to the kernel (mmap, page faults). Likewise the
// buffer chunks are decompressed into is kept, up to KEEP_BUFFER bytes.
thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}
const KEEP_BUFFER: usize = 1 << 20;

fn compress(body: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(zstd::bulk::Compressor::new(LEVEL)?);
        }
        c.as_mut().expect("just set").compress(body)
    })
}

/// The packed chunk of encoded entries (in seq order).
pub fn pack(entries: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    let seq_of = |e: &[u8]| {
        e.get(..8)
            .map_or(0, |b| i64::from_le_bytes(b.try_into().unwrap()))
    };
    let first = entries.first().map_or(0, |e| seq_of(e));
    let last = entries.last().map_or(0, |e| seq_of(e));
    let body = entries.concat();
    let mut out = Vec::with_capacity(HEADER + body.len() / 3);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    out.extend_from_slice(&compress(&body)?);
    Ok(out)
}

/// A chunk's first and last seq, from its header (no decompression).
pub fn chunk_range(packed: &[u8]) -> Option<(i64, i64)> {
    let rest = packed.strip_prefix(MAGIC)?;
    if rest.len() < 16 {
        return None;
    }
    let first = i64::from_le_bytes(rest[..8].try_into().ok()?);
    let last = i64::from_le_bytes(rest[8..16].try_into().ok()?);
    Some((first, last))
}

/// Unpacks a chunk's entries into `buf` (replacing its contents); returns
/// the chunk's first and last seq, or None if it is not a chunk.
pub fn unpack_into(packed: &[u8], buf: &mut Vec<u8>) -> Option<(i64, i64)> {
    let (first, last) = chunk_range(packed)?;
    let frame = &packed[HEADER..];
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if (n as usize) <= MAX_UNPACKED => n as usize,
        _ => return None,
    };
    buf.clear();
    buf.reserve(size);
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().ok()?);
        }
        d.as_mut()?.decompress_to_buffer(frame, buf).ok()
    })?;
    (buf.len() == size).then_some((first, last))
}

/// (first seq, last seq, entries' bytes) of a packed chunk; None if not one.
pub fn unpack(packed: &[u8]) -> Option<(i64, i64, Vec<u8>)> {
    let mut body = Vec::new();
    let (first, last) = unpack_into(packed, &mut body)?;
    Some((first, last, body))
}

/// Opens a sealed body: (thread, sealed parts) → the body's JSON text.
pub type Opener<'o> = &'o dyn Fn(&str, &Sealed) -> String;

/// The real opener (the thread's data key, src/crypto).
pub fn open_sealed(thread: &str, s: &Sealed) -> String {
    crypto::open_body_text(thread, s.id, s.version, s.plain, s.envelope)
}

/// The document of an entry as readers get it: a sealed body is opened.
pub fn entry_doc(thread: &str, e: &Entry, open: Opener, out: &mut String) {
    match &e.sealed {
        None => out.push_str(e.doc),
        Some(s) => {
            let body = open(thread, s);
            out.push_str(&e.doc[..s.body_at]);
            out.push_str(&body);
            out.push_str(&e.doc[s.body_at..]);
        }
    }
}

/// A chunk entry of a stored row (`_chunk_entry` passes the row's columns).
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe, name = "_message_entry")]
fn message_entry(
    seq: i64,
    id: &str,
    thread: &str,
    author: &str,
    role: &str,
    ts: i64,
    body: Option<&str>,
    body_enc: Option<&str>,
    version: i32,
    updated_ts: i64,
    reply_to: Option<&str>,
    deleted_ts: Option<i64>,
    reactions: Option<&str>,
) -> Vec<u8> {
    let m = Message {
        id,
        thread,
        author,
        role,
        ts,
        version,
        updated_ts,
        reply_to,
        deleted_ts,
        reactions,
    };
    let mut doc = String::with_capacity(160 + body.map_or(0, str::len));
    let sealed = match body_enc {
        None => {
            write_message(&mut doc, &m, body.unwrap_or("null"));
            None
        }
        Some(envelope) => {
            write_head(&mut doc, &m);
            let body_at = doc.len();
            write_tail(&mut doc, &m);
            Some(Sealed {
                body_at,
                id,
                version,
                plain: body,
                envelope,
            })
        }
    };
    encode_entry(&Entry {
        seq,
        deleted: deleted_ts.is_some(),
        doc: &doc,
        sealed,
    })
}

/// Packs chunk entries (`_chunk_entry`, in seq order) into a chunk.
#[pg_extern(immutable, parallel_safe, strict, name = "_pack_chunk")]
fn pack_chunk(entries: Array<&[u8]>) -> Vec<u8> {
    let parts: Vec<&[u8]> = entries.iter().flatten().collect();
    pack(&parts).unwrap_or_else(|e| error!("progressdb: cannot compress a timeline chunk: {e}"))
}

/// What a chunk holds, as stored (sealed bodies stay sealed): for
/// inspection and tests. Nothing for a chunk this code cannot read.
#[allow(clippy::type_complexity)]
#[pg_extern(immutable, parallel_safe, strict, name = "_unpack_chunk")]
fn unpack_chunk(
    packed: &[u8],
) -> TableIterator<
    'static,
    (
        name!(seq, i64),
        name!(deleted, bool),
        name!(doc, String),
        name!(plain, Option<String>),
        name!(envelope, Option<String>),
    ),
> {
    let rows: Vec<_> = unpack(packed)
        .and_then(|(_, _, body)| {
            decode_entries(&body).map(|es| {
                es.iter()
                    .map(|e| {
                        (
                            e.seq,
                            e.deleted,
                            e.doc.to_string(),
                            e.sealed.as_ref().and_then(|s| s.plain.map(str::to_string)),
                            e.sealed.as_ref().map(|s| s.envelope.to_string()),
                        )
                    })
                    .collect()
            })
        })
        .unwrap_or_default();
    TableIterator::new(rows)
}

/// The outcome of reading a page from chunks.
#[derive(Debug, Default, PartialEq)]
pub struct ChunkPage {
    /// The page's documents, oldest first, joined by commas.
    pub docs: String,
    pub n: i32,
    pub lo: Option<i64>,
    pub hi: Option<i64>,
    /// Visible messages older than the page exist.
    pub has_before: bool,
    /// A visible message at or after `before` was seen (None: not known).
    pub newer_seen: Option<bool>,
    /// The page is complete; else see `contiguous`.
    pub complete: bool,
    /// The chunks tile the timeline down from `before` without a gap (more
    /// chunks further down may complete the page); false: read the table.
    pub contiguous: bool,
}

/// Up to `lim` visible messages just older than seq `before`, from chunks
/// given newest first. Visible: seq above `vis` (history 'joined') and not
/// deleted unless `include_deleted`. Reads one message past the page, so
/// `has_before` needs no extra probe.
pub fn chunk_page(
    thread: &str,
    before: i64,
    lim: usize,
    include_deleted: bool,
    vis: i64,
    chunks: impl Iterator<Item = Option<Vec<u8>>>,
    open: Opener,
) -> ChunkPage {
    let mut buf = BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let page = chunk_page_with(
        thread,
        before,
        lim,
        include_deleted,
        vis,
        chunks,
        open,
        &mut buf,
    );
    if buf.capacity() <= KEEP_BUFFER {
        BUFFER.with(|b| *b.borrow_mut() = buf);
    }
    page
}

#[allow(clippy::too_many_arguments)]
fn chunk_page_with(
    thread: &str,
    before: i64,
    lim: usize,
    include_deleted: bool,
    vis: i64,
    chunks: impl Iterator<Item = Option<Vec<u8>>>,
    open: Opener,
    buf: &mut Vec<u8>,
) -> ChunkPage {
    let mut page = ChunkPage::default();
    // Documents newest first, one after another in `stack`; the first `lim`
    // go on the page.
    let mut stack = String::new();
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(lim.min(1024));
    let mut found = 0usize;
    let mut want = before - 1;
    let mut done = want < 1 || want <= vis;
    for packed in chunks {
        if done {
            break;
        }
        // A gap (the table has it) is seen in the header, before decompressing.
        match packed.as_deref().and_then(chunk_range) {
            Some((first, last)) if first >= before || (last >= want && first <= want) => {}
            _ => return page,
        }
        let Some((first, last)) = packed.as_deref().and_then(|p| unpack_into(p, buf)) else {
            return page; // unreadable: like a gap
        };
        if first >= before {
            // Wholly newer than the page: only tells whether anything newer shows.
            if let Some(entries) = decode_entries(buf) {
                if entries.iter().any(|e| include_deleted || !e.deleted) {
                    page.newer_seen = Some(true);
                }
            }
            continue;
        }
        if last < want || first > want {
            return page; // a gap: the table has it
        }
        let Some(entries) = decode_entries(buf) else {
            return page;
        };
        for e in entries.iter().rev() {
            let shown = include_deleted || !e.deleted;
            if e.seq >= before {
                if shown {
                    page.newer_seen = Some(true);
                }
                continue;
            }
            if e.seq <= vis {
                done = true;
                break;
            }
            if !shown {
                continue;
            }
            found += 1;
            if found > lim {
                done = true;
                break;
            }
            let start = stack.len();
            entry_doc(thread, e, open, &mut stack);
            spans.push((start, stack.len()));
            page.lo = Some(e.seq);
            page.hi.get_or_insert(e.seq);
        }
        want = first - 1;
        done |= want < 1 || want <= vis;
    }
    page.contiguous = true;
    if !done {
        return page;
    }
    page.complete = true;
    page.has_before = found > lim;
    page.n = spans.len() as i32;
    let mut out = String::with_capacity(stack.len() + spans.len());
    for (k, &(a, b)) in spans.iter().rev().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str(&stack[a..b]);
    }
    page.docs = out;
    page
}

/// SQL face of [`chunk_page`] (`chunks`: newest first).
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_safe, name = "_chunk_page")]
fn chunk_page_sql(
    thread: &str,
    before: i64,
    lim: i32,
    include_deleted: bool,
    vis: i64,
    chunks: Array<&[u8]>,
) -> TableIterator<
    'static,
    (
        name!(docs, Option<String>),
        name!(n, i32),
        name!(lo, Option<i64>),
        name!(hi, Option<i64>),
        name!(has_before, bool),
        name!(newer_seen, Option<bool>),
        name!(complete, bool),
        name!(contiguous, bool),
    ),
> {
    let p = chunk_page(
        thread,
        before,
        lim.max(0) as usize,
        include_deleted,
        vis,
        chunks.iter().map(|c| c.map(<[u8]>::to_vec)),
        &open_sealed,
    );
    TableIterator::once((
        p.complete.then_some(p.docs),
        p.n,
        p.lo,
        p.hi,
        p.has_before,
        p.newer_seen,
        p.complete,
        p.contiguous,
    ))
}

/// The whole `list_messages` page document of a newest page (`newest`) or a
/// history page, straight from chunks given newest first (they may start
/// with the chunk holding `before`, which tells whether anything newer
/// shows). NULL when the chunks cannot answer it all — not compacted that
/// far, a gap, deleted messages thinning the page beyond them, or a history
/// page whose newer side is unknown — and the caller reads the table.
#[pg_extern(stable, parallel_safe, name = "_chunk_page_doc")]
fn chunk_page_doc(
    thread: &str,
    before: i64,
    lim: i32,
    include_deleted: bool,
    vis: i64,
    newest: bool,
    chunks: Array<&[u8]>,
) -> Option<String> {
    let p = chunk_page(
        thread,
        before,
        lim.max(0) as usize,
        include_deleted,
        vis,
        chunks.iter().map(|c| c.map(<[u8]>::to_vec)),
        &open_sealed,
    );
    let has_after = if newest { false } else { p.newer_seen? };
    if !p.complete {
        return None;
    }
    let mut out = String::with_capacity(p.docs.len() + 200);
    write_page(
        &mut out,
        thread,
        &p.docs,
        p.has_before,
        has_after,
        p.lo.zip(p.hi),
    );
    Some(out)
}

#[cfg(test)]
mod unit {
    use super::*;

    fn plain(seq: i64, deleted: bool) -> Vec<u8> {
        let doc = format!("{{\"n\":{seq}}}");
        encode_entry(&Entry {
            seq,
            deleted,
            doc: &doc,
            sealed: None,
        })
    }

    fn chunk(seqs: std::ops::RangeInclusive<i64>, deleted: &[i64]) -> Vec<u8> {
        let es: Vec<Vec<u8>> = seqs.map(|s| plain(s, deleted.contains(&s))).collect();
        pack(&es.iter().map(Vec::as_slice).collect::<Vec<_>>()).unwrap()
    }

    fn no_keys(_: &str, _: &Sealed) -> String {
        unreachable!("no sealed entries here")
    }

    #[test]
    fn entries_round_trip_plain_and_sealed() {
        let sealed = Entry {
            seq: 7,
            deleted: true,
            doc: "{\"body\":,\"v\":1}",
            sealed: Some(Sealed {
                body_at: 8,
                id: "msg-x",
                version: 3,
                plain: Some("{\"a\": 1}"),
                envelope: "pdb1:1:abc",
            }),
        };
        let bytes = [encode_entry(&sealed), plain(8, false)].concat();
        let back = decode_entries(&bytes).unwrap();
        assert_eq!(back[0], sealed);
        assert_eq!(back[1].doc, "{\"n\":8}");
        assert!(decode_entries(&bytes[..bytes.len() - 1]).is_none());
        let packed = pack(&[&bytes[..]]).unwrap();
        let (first, last, body) = unpack(&packed).unwrap();
        assert_eq!((first, last), (7, 7), "first and last of the entries given");
        assert_eq!(body, bytes);
        assert!(unpack(b"pdc1junk").is_none());
    }

    #[test]
    fn a_page_comes_from_contiguous_chunks_newest_first() {
        let chunks = [chunk(11..=20, &[]), chunk(1..=10, &[])];
        let p = chunk_page(
            "t",
            16,
            8,
            false,
            0,
            chunks.iter().cloned().map(Some),
            &no_keys,
        );
        assert!(p.complete && p.has_before);
        assert_eq!(p.newer_seen, Some(true));
        let v: serde_json::Value = serde_json::from_str(&format!("[{}]", p.docs)).unwrap();
        let seqs: Vec<i64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["n"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, (8..=15).collect::<Vec<_>>());
        assert_eq!((p.lo, p.hi, p.n), (Some(8), Some(15), 8));
        // The whole rest: no more before it.
        let p = chunk_page(
            "t",
            16,
            50,
            false,
            0,
            chunks.iter().cloned().map(Some),
            &no_keys,
        );
        assert!(p.complete && !p.has_before);
        assert_eq!(p.n, 15);
    }

    #[test]
    fn deleted_and_hidden_messages_are_skipped_and_gaps_refused() {
        let chunks = [chunk(11..=20, &[18, 19]), chunk(1..=10, &[])];
        let p = chunk_page(
            "t",
            21,
            3,
            false,
            0,
            chunks.iter().cloned().map(Some),
            &no_keys,
        );
        assert_eq!((p.lo, p.hi, p.n), (Some(16), Some(20), 3));
        let p = chunk_page(
            "t",
            21,
            3,
            true,
            0,
            chunks.iter().cloned().map(Some),
            &no_keys,
        );
        assert_eq!((p.lo, p.hi), (Some(18), Some(20)));
        // History 'joined' from seq 12 on: nothing older shows or counts.
        let p = chunk_page(
            "t",
            21,
            50,
            false,
            12,
            chunks.iter().cloned().map(Some),
            &no_keys,
        );
        assert!(p.complete && !p.has_before);
        assert_eq!((p.lo, p.n), (Some(13), 6));
        // Not enough in the chunks given: ask for more.
        let p = chunk_page(
            "t",
            21,
            15,
            false,
            0,
            chunks[..1].iter().cloned().map(Some),
            &no_keys,
        );
        assert!(!p.complete && p.contiguous);
        // A gap (chunk 1..=9 under 11..=20), an uncovered top, junk: read the table.
        for set in [
            vec![chunk(11..=20, &[]), chunk(1..=9, &[])],
            vec![chunk(1..=10, &[])],
            vec![b"junk".to_vec()],
        ] {
            let p = chunk_page("t", 21, 15, false, 0, set.into_iter().map(Some), &no_keys);
            assert!(!p.complete && !p.contiguous);
        }
    }

    #[test]
    fn a_chunk_starting_at_the_cursor_tells_what_is_newer() {
        let chunks = [chunk(21..=30, &[]), chunk(11..=20, &[]), chunk(1..=10, &[])];
        let p = chunk_page(
            "t",
            21,
            5,
            false,
            0,
            chunks.iter().cloned().map(Some),
            &no_keys,
        );
        assert!(p.complete && p.has_before);
        assert_eq!((p.lo, p.hi, p.newer_seen), (Some(16), Some(20), Some(true)));
        // Everything newer deleted: not known from these chunks.
        let chunks = [chunk(21..=22, &[21, 22]), chunk(11..=20, &[])];
        let p = chunk_page(
            "t",
            21,
            5,
            false,
            0,
            chunks.iter().cloned().map(Some),
            &no_keys,
        );
        assert!(p.complete);
        assert_eq!(p.newer_seen, None);
    }

    #[test]
    fn sealed_bodies_are_opened_into_their_place() {
        let e = encode_entry(&Entry {
            seq: 1,
            deleted: false,
            doc: "{\"id\":\"m\",\"body\":,\"version\":1}",
            sealed: Some(Sealed {
                body_at: 17,
                id: "m",
                version: 1,
                plain: None,
                envelope: "pdb1:1:xyz",
            }),
        });
        let packed = pack(&[&e[..]]).unwrap();
        let open = |_: &str, s: &Sealed| format!("{{\"opened\":\"{}\"}}", s.envelope);
        let p = chunk_page("t", 2, 5, false, 0, std::iter::once(Some(packed)), &open);
        let v: serde_json::Value = serde_json::from_str(&p.docs).unwrap();
        assert_eq!(v["body"]["opened"], "pdb1:1:xyz");
        assert_eq!(v["version"], 1);
    }
}
