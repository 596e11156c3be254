//! Times one compression of a rendered page per algorithm and level, to choose the levels
//! used for precompressed variants: `cargo run --release --example compress_cost -- FILE`.
use std::io::Write;
use std::time::Instant;

fn main() {
    let path = std::env::args().nth(1).expect("a file to compress");
    let data = std::fs::read(path).unwrap();
    let n = 20;
    for q in [4u32, 5, 6, 9, 11] {
        let t = Instant::now();
        let mut len = 0;
        for _ in 0..n {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams {
                quality: q as i32,
                lgwin: 20,
                ..Default::default()
            };
            brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
            len = out.len();
        }
        println!(
            "br q{q}: {:.3} ms, {len} bytes",
            t.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    }
    for l in [3, 9, 12, 19] {
        let t = Instant::now();
        let mut len = 0;
        for _ in 0..n {
            len = zstd::bulk::compress(&data, l).unwrap().len();
        }
        println!(
            "zstd {l}: {:.3} ms, {len} bytes",
            t.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    }
    for l in [6u32, 9] {
        let t = Instant::now();
        let mut len = 0;
        for _ in 0..n {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(l));
            gz.write_all(&data).unwrap();
            len = gz.finish().unwrap().len();
        }
        println!(
            "gzip {l}: {:.3} ms, {len} bytes",
            t.elapsed().as_secs_f64() * 1000.0 / n as f64
        );
    }
}
