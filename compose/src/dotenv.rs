//! `.env` and `env_file` files as compose reads them: `KEY=VALUE` lines,
//! `export ` allowed, `#` comments, values in single quotes taken as they
//! are, in double quotes with `\n`, `\"` and `\\` unescaped, unquoted ones
//! trimmed and cut at ` #`.

/// The variables of `text`, in order; a line that is no assignment is an
/// error naming its number.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: {line:?} is not KEY=VALUE", n + 1));
        };
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        {
            return Err(format!("line {}: {key:?} is not a variable name", n + 1));
        }
        let value = value.trim();
        let value = if let Some(v) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            v.to_string()
        } else if let Some(v) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            v.replace("\\n", "\n")
                .replace("\\\"", "\"")
                .replace("\\\\", "\\")
        } else {
            value
                .split(" #")
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        out.push((key.to_string(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_quotes_and_comments() {
        let vars =
            parse("# comment\nA=1\nexport B = two words # note\nC='$raw'\nD=\"a\\nb\"\n\nE=\n")
                .unwrap();
        assert_eq!(
            vars,
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "$raw"),
                ("D", "a\nb"),
                ("E", "")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(parse("just words").unwrap_err().contains("line 1"));
    }
}
