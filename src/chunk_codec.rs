//! Packing of timeline chunks (see `sql/compaction.sql`).
//!
//! A chunk is an array of message rows. PostgreSQL's own compression of a
//! value (lz4 or pglz) reaches ~2x on chat text; zstd reaches ~3.5x, which
//! puts about 60% more messages on each heap page a history page reads. So a
//! chunk is stored as zstd over the array's in-memory form: unpacking is a
//! decompression and a copy, with no parsing of rows or JSON.
//!
//! That form names the row type by OID, which is local to one database.
//! Chunks are derived data that is never dumped (compaction rebuilds it), and
//! unpacking checks the element type: a chunk of another type reads as NULL,
//! which the page reader treats as "not chunked" and reads the messages table.

use pgrx::prelude::*;
use pgrx::AnyArray;

/// Format tag in front of the zstd frame, so that a future format can be told apart.
const MAGIC: &[u8; 4] = b"pdc1";
/// zstd level: chunks are written once in the background and read often.
const LEVEL: i32 = 6;
/// An unpacked chunk is a few dozen kB; refuse to allocate absurd sizes.
const MAX_UNPACKED: usize = 64 << 20;

/// The array as its flat varlena bytes (header included).
fn flat_bytes(msgs: &AnyArray) -> &[u8] {
    // SAFETY: pg_detoast_datum returns a plain, 4-byte-header varlena (a copy
    // when the value was compressed, external, short-header or expanded),
    // valid for the rest of this call.
    unsafe {
        let flat = pg_sys::pg_detoast_datum(msgs.datum().cast_mut_ptr());
        let len = pgrx::varlena::varsize_any(flat);
        std::slice::from_raw_parts(flat as *const u8, len)
    }
}

/// Packs an array of message rows into a chunk.
#[pg_extern(immutable, parallel_safe, strict, name = "_pack_chunk")]
fn pack_chunk(msgs: AnyArray) -> Vec<u8> {
    let flat = flat_bytes(&msgs);
    let mut out = MAGIC.to_vec();
    match zstd::bulk::compress(flat, LEVEL) {
        Ok(z) => out.extend_from_slice(&z),
        Err(e) => error!("progressdb: cannot compress a timeline chunk: {e}"),
    }
    out
}

/// Unpacks a chunk into an array of the type of `like` (an empty array of
/// the row type, e.g. `'{}'::progressdb.messages[]`), or NULL when the chunk
/// is not such an array.
#[pg_extern(stable, parallel_safe, strict, name = "_unpack_chunk")]
fn unpack_chunk(packed: &[u8], like: AnyArray) -> Option<AnyArray> {
    let frame = packed.strip_prefix(MAGIC)?;
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if (n as usize) <= MAX_UNPACKED => n as usize,
        _ => return None,
    };
    let flat = zstd::bulk::decompress(frame, size).ok()?;
    if !is_array_of(&flat, like.oid()) {
        return None;
    }
    // SAFETY: palloc'd in the current memory context, as a returned datum
    // must be; the bytes are a complete varlena of `flat.len()` bytes.
    unsafe {
        let ptr = pg_sys::palloc(flat.len()) as *mut u8;
        std::ptr::copy_nonoverlapping(flat.as_ptr(), ptr, flat.len());
        AnyArray::from_polymorphic_datum(pg_sys::Datum::from(ptr), false, like.oid())
    }
}

// Unpacking trusts the bytes past the header checks below (element offsets,
// row layouts), as PostgreSQL trusts its own pages: only chunk rows written
// by compaction may be fed to it, so it is not for PUBLIC. Table owners and
// superusers (the only roles that can read the extension's tables unless
// granted) keep it; a role granted access to the tables needs it granted too.
extension_sql!(
    "REVOKE EXECUTE ON FUNCTION progressdb._unpack_chunk(bytea, anyarray) FROM PUBLIC;",
    name = "unpack_chunk_not_public",
    requires = [unpack_chunk]
);

/// Whether `flat` is a one-dimensional array varlena of exactly its length
/// whose elements have the element type of `array_type`.
fn is_array_of(flat: &[u8], array_type: pg_sys::Oid) -> bool {
    const HEADER: usize = std::mem::size_of::<pg_sys::ArrayType>();
    if flat.len() < HEADER {
        return false;
    }
    let word = |at: usize| u32::from_ne_bytes(flat[at..at + 4].try_into().unwrap());
    // 4-byte varlena header: the length sits in the upper 30 bits on
    // little-endian builds (the only ones this extension is built for).
    let varsize = (word(0) >> 2) as usize;
    let ndim = word(4);
    let elemtype = pg_sys::Oid::from(word(12));
    // SAFETY: a plain catalog lookup.
    let expected = unsafe { pg_sys::get_element_type(array_type) };
    varsize == flat.len() && ndim == 1 && elemtype == expected && expected != pg_sys::InvalidOid
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::testing::run;
    use pgrx::prelude::*;

    #[pg_test]
    fn a_chunk_unpacks_to_the_same_rows_and_is_smaller() {
        run("SELECT progressdb.post_message('t', 'alice', jsonb_build_object('text', repeat('lorem ipsum ', 80 + i)))
               FROM generate_series(1, 20) i");
        let same = Spi::get_one::<bool>(
            "WITH a AS (SELECT array_agg(m ORDER BY seq) AS msgs FROM progressdb.messages m)
             SELECT progressdb._unpack_chunk(progressdb._pack_chunk(msgs), '{}'::progressdb.messages[])::text
                    = msgs::text
                AND octet_length(progressdb._pack_chunk(msgs)) * 3 < pg_column_size(msgs)
               FROM a",
        );
        assert_eq!(same, Ok(Some(true)));
    }

    #[pg_test]
    fn only_owners_may_unpack() {
        let public_may = Spi::get_one::<bool>(
            "SELECT proacl IS NULL OR aclcontains(proacl, makeaclitem(0, proowner, 'EXECUTE', false))
               FROM pg_proc WHERE oid = 'progressdb._unpack_chunk(bytea, anyarray)'::regprocedure",
        );
        assert_eq!(public_may, Ok(Some(false)));
    }

    #[pg_test]
    fn anything_but_a_chunk_of_that_type_unpacks_to_null() {
        for q in [
            "SELECT progressdb._unpack_chunk('\\x00'::bytea, '{}'::progressdb.messages[]) IS NULL",
            "SELECT progressdb._unpack_chunk('pdc1garbage'::bytea, '{}'::progressdb.messages[]) IS NULL",
            "SELECT progressdb._unpack_chunk(progressdb._pack_chunk('{1,2}'::int[]), '{}'::progressdb.messages[]) IS NULL",
            "SELECT progressdb._unpack_chunk(progressdb._pack_chunk('{1,2}'::int[]), '{}'::int[]) = '{1,2}'",
        ] {
            assert_eq!(Spi::get_one::<bool>(q), Ok(Some(true)), "{q}");
        }
    }
}
