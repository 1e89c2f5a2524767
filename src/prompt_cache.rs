//! The prompt cache: the K/V of a prompt prefix (a kiosk's system prompt, say) saved to a file
//! and restored on the next start, so the prefix is not processed again. Only producer layers
//! are stored, so an LCKV plan's file is as small as its cache.
//!
//! File layout (little-endian): magic `LCKVPC01`, then a header of model identity (a hash of the
//! GGUF's metadata and tensor table plus its size), the plan's `layer_types`, the KV type, the
//! KV geometry and the token ids; then each producer layer's K and V rows for those positions;
//! last a CRC-32 of everything before it. `load` reports any mismatch or damage (`Rejected`)
//! instead of trusting the file, and the caller rebuilds it (`lckv run` saves a fresh one).
//! Written through `fs_atomic`, so never half-written.

use std::path::Path;

use lckv_kernels::formats::Q8_0_BYTES;
use lckv_kernels::{GgmlType, KvLayout};

use crate::fs_atomic::write_atomic;
use crate::memory::kv_cache::KvCache;
use crate::model::Model;
use crate::session::Session;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"LCKVPC01";

/// A stable identity for a model file: its metadata, tensor table and size, hashed.
pub fn model_identity(model: &Model) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let f = &model.file;
    h.update(&f.file_size().to_le_bytes());
    h.update(&f.as_bytes()[..(f.data_offset() as usize).min(f.as_bytes().len())]);
    h.finalize()
}

struct Header {
    identity: u32,
    layer_types: String,
    kv_type: u32,
    n_kv_head: u32,
    head_dim: u32,
    tokens: Vec<u32>,
}

fn header_of(model: &Model, layout: &KvLayout, tokens: &[u32]) -> Header {
    Header {
        identity: model_identity(model),
        layer_types: model.cfg.plan.layer_types(),
        kv_type: layout.ty.id(),
        n_kv_head: layout.n_kv_head as u32,
        head_dim: layout.head_dim as u32,
        tokens: tokens.to_vec(),
    }
}

/// Saves the K/V of the first `tokens.len()` positions of `session` (they must be in its cache).
pub fn save(path: &Path, session: &mut Session, tokens: &[u32]) -> Result<usize> {
    let n = tokens.len();
    if n == 0 || n > session.n_past() {
        return Err(Error::Usage(format!(
            "cannot save {n} tokens of a session holding {}",
            session.n_past()
        )));
    }
    save_cache(path, session.model(), session.cache(), tokens)
}

/// Saves the K/V of the first `tokens.len()` positions of `cache`, which holds those tokens
/// under `model`'s plan. Returns the file's size.
pub fn save_cache(path: &Path, model: &Model, cache: &KvCache, tokens: &[u32]) -> Result<usize> {
    let n = tokens.len();
    if n == 0 || n > cache.n_ctx() {
        return Err(Error::Usage(format!(
            "cannot save {n} tokens of a cache of {} positions",
            cache.n_ctx()
        )));
    }
    check_replaceable(path)?;
    let h = header_of(model, cache.layout(), tokens);
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    for v in [h.identity, h.layer_types.len() as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(h.layer_types.as_bytes());
    for v in [h.kv_type, h.n_kv_head, h.head_dim, n as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for t in &h.tokens {
        out.extend_from_slice(&t.to_le_bytes());
    }
    let per = 2 * n * cache.layout().pos_bytes();
    let mut buf = vec![0u8; per];
    for p in model.cfg.plan.producers() {
        cache.copy_out(p, 0..n, &mut buf);
        out.extend_from_slice(&buf);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    write_atomic(path, &out)?;
    Ok(out.len())
}

/// Refuses to replace anything at `path` but a prompt cache: a model given by mistake, a
/// symbolic link or a device (`/dev/null`) stays as it is. Front ends call it before loading
/// the model, and every save calls it again.
pub fn check_replaceable(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("looking at {}", path.display()), e)),
    };
    let refuse = |what: &str| {
        Err(Error::Usage(format!(
            "--prompt-cache {}: {what}, not a prompt cache; lckv replaces only its own prompt caches. Give a new file name",
            path.display()
        )))
    };
    if meta.file_type().is_symlink() {
        return refuse("it is a symbolic link");
    }
    if !meta.is_file() {
        return refuse("it is not a regular file");
    }
    let mut magic = [0u8; 8];
    let head = std::fs::File::open(path).and_then(|mut f| {
        use std::io::Read;
        f.read(&mut magic)
    });
    match head {
        // An empty file (made by `touch`, or a save cut short before the rename) holds nothing.
        Ok(0) => Ok(()),
        Ok(n) if n == MAGIC.len() && &magic == MAGIC => Ok(()),
        Ok(_) => refuse("it holds something else"),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// Why a prompt cache could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    Missing,
    Damaged(String),
    Mismatch(String),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Missing => write!(f, "no prompt cache yet"),
            Rejected::Damaged(w) => write!(f, "prompt cache is damaged ({w}); rebuilding it"),
            Rejected::Mismatch(w) => write!(f, "prompt cache is for {w}; rebuilding it"),
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Rejected> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| Rejected::Damaged("truncated".into()))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> std::result::Result<u32, Rejected> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// Restores a saved prefix into `session` if the file matches its model, plan and KV type.
/// Returns the restored tokens; the session then holds them as its first positions.
pub fn load(path: &Path, session: &mut Session) -> std::result::Result<Vec<u32>, Rejected> {
    let model = session.model();
    let tokens = load_cache(path, model, session.cache_mut())?;
    session
        .set_n_past(tokens.len())
        .map_err(|e| Rejected::Mismatch(e.to_string()))?;
    Ok(tokens)
}

/// Restores a saved prefix into the first positions of `cache` if the file matches `model`,
/// its plan and the cache's KV type and fits its context. Returns the restored tokens.
pub fn load_cache(
    path: &Path,
    model: &Model,
    cache: &mut KvCache,
) -> std::result::Result<Vec<u32>, Rejected> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Rejected::Missing),
        Err(e) => return Err(Rejected::Damaged(format!("cannot read it: {e}"))),
    };
    if bytes.len() < MAGIC.len() + 4 || &bytes[..8] != MAGIC {
        return Err(Rejected::Damaged("not an lckv prompt cache".into()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(Rejected::Damaged("checksum mismatch".into()));
    }
    let mut r = Reader { b: body, at: 8 };
    let identity = r.u32()?;
    let lt_len = r.u32()? as usize;
    let layer_types = String::from_utf8(r.take(lt_len)?.to_vec())
        .map_err(|_| Rejected::Damaged("bad plan text".into()))?;
    let (kv_type, n_kv_head, head_dim, n) = (r.u32()?, r.u32()?, r.u32()?, r.u32()? as usize);
    let want = header_of(model, cache.layout(), &[]);
    if identity != want.identity {
        return Err(Rejected::Mismatch("another model file".into()));
    }
    if layer_types != want.layer_types {
        return Err(Rejected::Mismatch(format!(
            "KV plan {layer_types}, not {}",
            want.layer_types
        )));
    }
    if kv_type != want.kv_type || n_kv_head != want.n_kv_head || head_dim != want.head_dim {
        return Err(Rejected::Mismatch("another KV cache type".into()));
    }
    if n == 0 {
        return Err(Rejected::Damaged("it holds no tokens".into()));
    }
    if n > cache.n_ctx() {
        return Err(Rejected::Mismatch(format!(
            "{n} tokens, more than the context of {}",
            cache.n_ctx()
        )));
    }
    let tokens: Vec<u32> = r
        .take(4 * n)?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let producers = model.cfg.plan.producers();
    let per = 2 * n * cache.layout().pos_bytes();
    if r.b.len() - r.at != per * producers.len() {
        return Err(Rejected::Damaged("K/V section has the wrong size".into()));
    }
    let ty = cache.layout().ty;
    if tokens.iter().any(|&t| t as usize >= model.cfg.n_vocab) {
        return Err(Rejected::Damaged(
            "a token id outside the vocabulary".into(),
        ));
    }
    for &p in &producers {
        let data = r.take(per)?;
        if !all_finite(ty, data) {
            return Err(Rejected::Damaged(format!(
                "layer {p}'s K/V hold NaN or infinite values"
            )));
        }
        cache.copy_in(p, 0..n, data);
    }
    Ok(tokens)
}

/// Whether every value (or block scale) of K/V rows of type `ty` is finite: a checksum vouches
/// for the bytes, not for what wrote them.
fn all_finite(ty: GgmlType, data: &[u8]) -> bool {
    let f16_ok = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).is_finite();
    match ty {
        GgmlType::F32 => data
            .chunks_exact(4)
            .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
        GgmlType::F16 => data.chunks_exact(2).all(f16_ok),
        // Q8_0 blocks: an f16 scale, then 32 signed bytes (always finite).
        GgmlType::Q8_0 => data.chunks_exact(Q8_0_BYTES).all(|b| f16_ok(&b[..2])),
        _ => true,
    }
}
