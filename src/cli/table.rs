//! Plain-text tables for people.

/// Rows under a header, columns padded to their widest cell.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// Bytes as MiB or GiB.
pub fn bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1}Gi", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{}Mi", n >> 20)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns() {
        let t = super::render(
            &["NAME", "STATUS"],
            &[
                vec!["web".into(), "running".into()],
                vec!["api-long".into(), "x".into()],
            ],
        );
        assert_eq!(t, "NAME      STATUS\nweb       running\napi-long  x\n");
        assert_eq!(super::bytes(64 << 20), "64Mi");
        assert_eq!(super::bytes(3 << 30), "3.0Gi");
    }
}
