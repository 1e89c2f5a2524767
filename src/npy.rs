//! Minimal `.npy` for little-endian float32 arrays: `lckv logits` writes 2-D ones (format 1.0,
//! through `fs_atomic`, so never half-written), and the tests read them and the fixtures (any
//! shape, formats 1 to 3).

use std::path::Path;

use crate::fs_atomic::write_atomic_with;
use crate::{Error, Result};

/// Writes `data` (rows x cols, row-major) to `path` atomically.
pub fn write_f32(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<()> {
    if data.len() != rows * cols {
        return Err(Error::Usage(format!(
            "npy: {} values do not form {rows} x {cols}",
            data.len()
        )));
    }
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.div_ceil(64) * 64 - unpadded));
    header.push('\n');
    // Streamed in blocks: a whole prompt's logits can be gigabytes (positions x vocabulary).
    write_atomic_with(path, |w| {
        w.write_all(b"\x93NUMPY\x01\x00")?;
        w.write_all(&(header.len() as u16).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        let mut block = Vec::with_capacity(4 << 16);
        for values in data.chunks(1 << 16) {
            block.clear();
            for v in values {
                block.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&block)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Reads a float32 `.npy` of any shape: (shape, values).
pub fn read_f32(path: &Path) -> Result<(Vec<usize>, Vec<f32>)> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let bad = |why: &str| {
        Error::Usage(format!(
            "{}: not a float32 .npy file ({why})",
            path.display()
        ))
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("wrong magic"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unknown version")),
    };
    let header = bytes
        .get(start..start + hlen)
        .ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    if !header.contains("'<f4'") || header.contains("'fortran_order': True") {
        return Err(bad("only little-endian float32 in C order is read"));
    }
    let shape_txt = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .map(|s| s.trim().trim_start_matches('('))
        .ok_or_else(|| bad("no shape"))?;
    let shape: Vec<usize> = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    let n: usize = shape.iter().product();
    let body = &bytes[start + hlen..];
    if body.len() != n * 4 {
        return Err(bad("data length does not match the shape"));
    }
    Ok((
        shape,
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("lckv-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        let data: Vec<f32> = (0..6).map(|i| i as f32 * 0.5).collect();
        write_f32(&p, 2, 3, &data).unwrap();
        let (shape, back) = read_f32(&p).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(back, data);
        let raw = std::fs::read(&p).unwrap();
        assert_eq!((raw.len() - 24) % 64, 0, "header padded to 64 bytes");
        std::fs::write(&p, &raw[..raw.len() - 1]).unwrap();
        assert!(read_f32(&p)
            .unwrap_err()
            .to_string()
            .contains("does not match"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
