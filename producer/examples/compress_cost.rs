//! Times compressing rendered pages per algorithm, level and setting, to choose what the
//! precompressed variants use: `cargo run --release --example compress_cost -- FILE...`
//! (a sample of a site's pages: `find out -name '*.html' | shuf -n 2000`). Prints the mean
//! time per file and the total compressed size of each setting.
//! gzip runs on the backend `Cargo.toml` gives flate2 (zlib-rs); to compare with another,
//! change the feature and run it again.
use std::io::Write;
use std::time::Instant;

fn brotli_with(data: &[u8], quality: i32, lgwin: i32, hint: bool) -> usize {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality,
        lgwin,
        size_hint: if hint { data.len() } else { 0 },
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
    out.len()
}

/// The smallest window (10 to 20 bits, brotli's and our limits) that holds all of `data`.
fn fitted_window(data: &[u8]) -> i32 {
    (usize::BITS - data.len().max(1).leading_zeros()).clamp(10, 20) as i32
}

fn time(name: &str, files: &[Vec<u8>], mut f: impl FnMut(&[u8]) -> usize) {
    let t = Instant::now();
    let mut total = 0;
    for data in files {
        total += f(data);
    }
    println!(
        "{name:28} {:8.1} µs/file {:10} bytes",
        t.elapsed().as_secs_f64() * 1e6 / files.len() as f64,
        total
    );
}

fn main() {
    let files: Vec<Vec<u8>> = std::env::args()
        .skip(1)
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(!files.is_empty(), "give the files to compress");
    let raw: usize = files.iter().map(Vec::len).sum();
    println!("{} files, {raw} bytes", files.len());
    for q in [4, 5, 6] {
        time(&format!("br q{q} lgwin 20"), &files, |d| {
            brotli_with(d, q, 20, false)
        });
        time(&format!("br q{q} lgwin 20 hint"), &files, |d| {
            brotli_with(d, q, 20, true)
        });
        time(&format!("br q{q} lgwin fitted"), &files, |d| {
            brotli_with(d, q, fitted_window(d), true)
        });
        for w in [16, 18] {
            time(&format!("br q{q} lgwin {w}"), &files, |d| {
                brotli_with(d, q, w, false)
            });
        }
    }
    for l in [1, 3] {
        time(&format!("zstd {l}"), &files, |d| {
            zstd::bulk::compress(d, l).unwrap().len()
        });
        let mut c = zstd::bulk::Compressor::new(l).unwrap();
        time(&format!("zstd {l} reused"), &files, |d| {
            c.compress(d).unwrap().len()
        });
    }
    for l in [4u32, 5, 6] {
        time(&format!("gzip {l}"), &files, |d| {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(l));
            gz.write_all(d).unwrap();
            gz.finish().unwrap().len()
        });
    }
}
