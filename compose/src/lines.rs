//! Where a key sits in the compose file's text, for refusals that name
//! their line. The YAML parser's values carry no positions, so this reads
//! the block-style layout compose files are written in: a key at its
//! mapping's indentation, inside its parent's block. Anything else (flow
//! style, anchors merged in, keys written twice) gives no line rather
//! than a wrong one.

/// The 1-based line of the key at `path` (`["services", "web",
/// "privileged"]`) in `text`, when the layout shows it plainly.
pub fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let (mut from, mut to, mut parent_indent) = (0, lines.len(), None::<usize>);
    let mut found = None;
    for key in path {
        let mut indent = None;
        let mut hits = Vec::new();
        let mut end = to;
        for (n, line) in lines.iter().enumerate().take(to).skip(from) {
            let Some((i, content)) = content(line) else {
                continue;
            };
            if parent_indent.is_some_and(|p| i <= p) {
                end = n;
                break;
            }
            let at = *indent.get_or_insert(i);
            if i == at && names(content, key) {
                hits.push(n);
            }
        }
        let [n] = hits[..] else {
            return None;
        };
        let i = indent?;
        found = Some(n + 1);
        (from, to, parent_indent) = (n + 1, end, Some(i));
    }
    found
}

/// A line's indentation and content, or None for a blank or comment line.
fn content(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start_matches(' ');
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    Some((line.len() - trimmed.len(), trimmed))
}

/// True if `content` starts the mapping entry `key` (bare or quoted).
fn names(content: &str, key: &str) -> bool {
    [key.to_string(), format!("\"{key}\""), format!("'{key}'")]
        .iter()
        .any(|k| {
            content
                .strip_prefix(k.as_str())
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
version: '3'
# a comment
services:
  web:
    image: nginx
    privileged: true
    environment:
      privileged: 'not this one'
  'db':

    image: postgres
    network_mode: host
x-other:
  services:
    web:
      privileged: true
";

    #[test]
    fn keys_are_found_in_their_blocks() {
        assert_eq!(line_of(FILE, &["version"]), Some(1));
        assert_eq!(line_of(FILE, &["services", "web"]), Some(4));
        assert_eq!(line_of(FILE, &["services", "web", "privileged"]), Some(6));
        assert_eq!(line_of(FILE, &["services", "db", "network_mode"]), Some(12));
        assert_eq!(line_of(FILE, &["x-other"]), Some(13));
        // Not there, or not plainly: no line.
        assert_eq!(line_of(FILE, &["services", "db", "privileged"]), None);
        assert_eq!(line_of(FILE, &["services", "nope", "image"]), None);
        assert_eq!(
            line_of("services: {web: {pid: host}}", &["services", "web"]),
            None
        );
        assert_eq!(line_of("a: 1\na: 2\n", &["a"]), None);
    }
}
