//! The volume the stateful benches move, back up and restore.

use std::io::Write;
use std::path::Path;

/// 1 GiB of mixed files under `dir`: 600 MiB of random data in 1 MiB
/// files, 300 MiB of text in 4 MiB files, 120 MiB in 30,000 small files.
pub fn fill(dir: &Path) {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |buf: &mut [u8]| {
        for chunk in buf.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    std::fs::create_dir_all(dir.join("random")).unwrap();
    for i in 0..600 {
        random(&mut buf);
        std::fs::write(dir.join(format!("random/{i}")), &buf).unwrap();
    }
    std::fs::create_dir_all(dir.join("text")).unwrap();
    let line = b"2026-12-07T05:00:00Z INFO a log line such as a database or a broker writes, over and over\n";
    for i in 0..75 {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(dir.join(format!("text/{i}.log"))).unwrap(),
        );
        for _ in 0..(4 << 20) / line.len() {
            f.write_all(line).unwrap();
        }
    }
    for d in 0..30 {
        let sub = dir.join(format!("small/{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..1000 {
            random(&mut buf[..4096]);
            std::fs::write(sub.join(i.to_string()), &buf[..4096]).unwrap();
        }
    }
}
