//! Variables in a compose file's values, as compose substitutes them:
//! `$VAR` and `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}`
//! (unset), `${VAR:?error}` and `${VAR?error}` (refused when unset, or
//! empty with `:`), `${VAR:+alt}` and `${VAR+alt}`, and `$$` for a `$`.
//! A default may hold variables itself. An unset variable without a
//! default becomes empty, with a warning, as compose does.

use std::collections::BTreeMap;

/// What substituting one string found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `${VAR:?message}`: refused.
    Required { var: String, message: String },
    /// `${` without its `}`, or a name that is no name.
    Syntax(String),
}

/// Substitutes `text` from `env`; notes unset variables in `unset`.
pub fn substitute(
    text: &str,
    env: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<String, Problem> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end =
                closing(r).ok_or_else(|| Problem::Syntax(format!("unclosed ${{ in {text:?}")))?;
            out.push_str(&braced(&r[..end], env, unset)?);
            rest = &r[end + 1..];
        } else {
            let len = rest
                .char_indices()
                .find(|(i, c)| {
                    !(c.is_ascii_alphanumeric() || *c == '_') || (*i == 0 && c.is_ascii_digit())
                })
                .map_or(rest.len(), |(i, _)| i);
            if len == 0 {
                // A lone `$` stays.
                out.push('$');
                continue;
            }
            out.push_str(&lookup(&rest[..len], env, unset));
            rest = &rest[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Where the `}` closing a `${` is, counting nested `${`.
fn closing(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn lookup(name: &str, env: &BTreeMap<String, String>, unset: &mut Vec<String>) -> String {
    match env.get(name) {
        Some(v) => v.clone(),
        None => {
            if !unset.iter().any(|u| u == name) {
                unset.push(name.to_string());
            }
            String::new()
        }
    }
}

/// The inside of `${...}`.
fn braced(
    inner: &str,
    env: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<String, Problem> {
    let name_len = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, op) = inner.split_at(name_len);
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Err(Problem::Syntax(format!(
            "${{{inner}}}: not a variable name"
        )));
    }
    let value = env.get(name);
    let empty = value.is_none_or(|v| v.is_empty());
    let (modifier, word) = if let Some(w) = op.strip_prefix(":-") {
        (":-", w)
    } else if let Some(w) = op.strip_prefix(":?") {
        (":?", w)
    } else if let Some(w) = op.strip_prefix(":+") {
        (":+", w)
    } else if let Some(w) = op.strip_prefix('-') {
        ("-", w)
    } else if let Some(w) = op.strip_prefix('?') {
        ("?", w)
    } else if let Some(w) = op.strip_prefix('+') {
        ("+", w)
    } else if op.is_empty() {
        ("", "")
    } else {
        return Err(Problem::Syntax(format!("${{{inner}}}: unknown form")));
    };
    let word = |unset: &mut Vec<String>| substitute(word, env, unset);
    Ok(match modifier {
        "" => lookup(name, env, unset),
        ":-" if empty => word(unset)?,
        "-" if value.is_none() => word(unset)?,
        ":?" if empty => {
            return Err(Problem::Required {
                var: name.into(),
                message: word(unset)?,
            })
        }
        "?" if value.is_none() => {
            return Err(Problem::Required {
                var: name.into(),
                message: word(unset)?,
            })
        }
        ":+" if !empty => word(unset)?,
        "+" if value.is_some() => word(unset)?,
        ":+" | "+" => String::new(),
        _ => value.cloned().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("SET", "yes"), ("EMPTY", ""), ("PORT", "8080")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sub(s: &str) -> Result<String, Problem> {
        substitute(s, &env(), &mut Vec::new())
    }

    #[test]
    fn every_form_as_compose_has_it() {
        assert_eq!(sub("$SET ${SET} x$PORT/y").unwrap(), "yes yes x8080/y");
        assert_eq!(sub("${EMPTY:-d} ${EMPTY-d} ${UNSET-d}").unwrap(), "d  d");
        assert_eq!(
            sub("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}").unwrap(),
            "alt||alt"
        );
        assert_eq!(sub("$$SET costs $$5 and $").unwrap(), "$SET costs $5 and $");
        assert_eq!(sub("${UNSET:-${PORT}}").unwrap(), "8080");
        assert_eq!(
            sub("${EMPTY:?give a password}"),
            Err(Problem::Required {
                var: "EMPTY".into(),
                message: "give a password".into()
            })
        );
        assert_eq!(sub("${EMPTY?set}").unwrap(), "");
        assert!(matches!(sub("${SET"), Err(Problem::Syntax(_))));
        assert!(matches!(sub("${1A}"), Err(Problem::Syntax(_))));
        let mut unset = Vec::new();
        assert_eq!(
            substitute("a${NOPE}b$NOPE", &env(), &mut unset).unwrap(),
            "ab"
        );
        assert_eq!(unset, ["NOPE"]);
    }
}
