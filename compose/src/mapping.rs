//! One compose value into its orca form: ports, volumes, health checks,
//! durations, memory sizes, argv and environment. Each returns the orca
//! value or why it cannot.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use api::spec::{
    PortMode, PortSpec, Probe, Protocol, PublishedPort, VolumeObject, VolumeSpec, VolumeType,
};
use serde_yaml_ng::Value;

/// A scalar as text (numbers and booleans too).
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A string (split as a shell would) or a list: an argv.
pub fn argv(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => shell_words::split(s).map_err(|e| format!("cannot split {s:?}: {e}")),
        Value::Sequence(items) => items
            .iter()
            .map(|i| text(i).ok_or_else(|| "a list of strings is needed".to_string()))
            .collect(),
        _ => Err("a string or a list of strings is needed".into()),
    }
}

/// `labels`: a list of `KEY=VALUE` or a mapping; a label without a value
/// (`KEY`, `KEY=`, `KEY: null`) is left out with a note, as containerd
/// keeps no label with an empty value.
pub fn labels(v: &Value) -> Result<(BTreeMap<String, String>, Vec<String>), String> {
    let mut pairs = Vec::new();
    match v {
        Value::Sequence(items) => {
            for item in items {
                let s = text(item).ok_or("a list of KEY=VALUE")?;
                let (k, v) = s.split_once('=').unwrap_or((s.as_str(), ""));
                pairs.push((k.to_string(), v.to_string()));
            }
        }
        Value::Mapping(m) => {
            for (k, v) in m {
                let k = text(k).ok_or("a string key")?;
                let v = match v {
                    Value::Null => String::new(),
                    other => text(other).ok_or("a scalar value")?,
                };
                pairs.push((k, v));
            }
        }
        _ => return Err("a list or a mapping".into()),
    }
    let (kept, empty): (Vec<_>, Vec<_>) = pairs.into_iter().partition(|(_, v)| !v.is_empty());
    let notes = empty
        .into_iter()
        .map(|(k, _)| {
            format!("label {k} ignored: it has no value, and containerd keeps no empty label")
        })
        .collect();
    Ok((kept.into_iter().collect(), notes))
}

/// Compose durations (`1m30s`, `10s`, `500ms`, `1h`) in whole seconds,
/// rounded up.
pub fn seconds(v: &Value) -> Result<u64, String> {
    let s = text(v).ok_or("a duration is needed")?;
    let mut total_ms: u64 = 0;
    let mut number = String::new();
    let mut chars = s.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let n: f64 = number.parse().map_err(|_| format!("bad duration {s:?}"))?;
        number.clear();
        let ms = match unit.as_str() {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            "h" => n * 3_600_000.0,
            _ => return Err(format!("bad duration {s:?}")),
        };
        total_ms += ms.ceil() as u64;
    }
    if !number.is_empty() {
        // A bare number: seconds.
        let n: f64 = number.parse().map_err(|_| format!("bad duration {s:?}"))?;
        total_ms += (n * 1000.0).ceil() as u64;
    }
    Ok(total_ms.div_ceil(1000))
}

/// Compose memory (`512m`, `1g`, `1024k`, `1073741824`; binary units) as
/// an orca quantity.
pub fn memory(v: &Value) -> Result<String, String> {
    let s = text(v).ok_or("a size is needed")?.trim().to_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (number, shift) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 10),
        Some('m') => (&s[..s.len() - 1], 20),
        Some('g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: f64 = number.parse().map_err(|_| format!("bad size {s:?}"))?;
    let bytes = (n * (1u64 << shift) as f64) as u64;
    Ok(match bytes {
        b if b % (1 << 30) == 0 && b > 0 => format!("{}Gi", b >> 30),
        b if b % (1 << 20) == 0 && b > 0 => format!("{}Mi", b >> 20),
        b if b % (1 << 10) == 0 && b > 0 => format!("{}Ki", b >> 10),
        b => b.to_string(),
    })
}

/// `ports` entries: the short syntax (ranges expanded) or the long form.
pub fn ports(v: &Value) -> Result<(Vec<PortSpec>, Vec<String>), String> {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for item in v.as_sequence().ok_or("ports must be a list")? {
        match item {
            Value::Mapping(m) => {
                let target = m
                    .get("target")
                    .and_then(text)
                    .and_then(|t| t.parse::<u16>().ok())
                    .ok_or("ports: target is needed")?;
                let published = match m.get("published").and_then(text) {
                    Some(p) => p
                        .parse::<u16>()
                        .map_err(|_| format!("ports: published {p:?}"))?,
                    None => {
                        notes.push(format!(
                            "port {target} has no published port: published on {target}"
                        ));
                        target
                    }
                };
                let protocol = match m.get("protocol").and_then(Value::as_str) {
                    None | Some("tcp") => Protocol::Tcp,
                    Some("udp") => Protocol::Udp,
                    Some(other) => return Err(format!("ports: protocol {other}")),
                };
                let mode = match m.get("mode").and_then(Value::as_str) {
                    None | Some("ingress") => PortMode::Mesh,
                    Some("host") => PortMode::Host,
                    Some(other) => return Err(format!("ports: mode {other}")),
                };
                let host_ip = match m.get("host_ip").and_then(Value::as_str) {
                    None | Some("0.0.0.0") => None,
                    Some(ip) => Some(
                        ip.parse()
                            .map_err(|_| format!("ports: host_ip {ip} (IPv4 only)"))?,
                    ),
                };
                out.push(PortSpec::Long(PublishedPort {
                    published,
                    target,
                    protocol,
                    mode,
                    host_ip,
                }));
            }
            other => {
                let s = text(other).ok_or("ports: a string or a mapping")?;
                out.extend(short_port(&s, &mut notes)?);
            }
        }
    }
    Ok((out, notes))
}

/// `[ip:][published[-end]:]target[-end][/proto]`.
fn short_port(s: &str, notes: &mut Vec<String>) -> Result<Vec<PortSpec>, String> {
    let (ports, proto) = s.rsplit_once('/').map_or((s, "tcp"), |(p, q)| (p, q));
    let parts: Vec<&str> = ports.rsplitn(3, ':').collect();
    let (target, published, ip) = match parts.as_slice() {
        [t] => (*t, None, None),
        [t, p] => (*t, Some(*p), None),
        [t, p, ip] => (*t, Some(*p), Some(*ip)),
        _ => return Err(format!("ports: {s:?}")),
    };
    let range = |r: &str| -> Result<(u16, u16), String> {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let a: u16 = a.parse().map_err(|_| format!("ports: {s:?}"))?;
        let b: u16 = b.parse().map_err(|_| format!("ports: {s:?}"))?;
        (a <= b && b - a < 64)
            .then_some((a, b))
            .ok_or(format!("ports: range in {s:?}"))
    };
    let (t0, t1) = range(target)?;
    let (p0, p1) = match published.filter(|p| !p.is_empty()) {
        Some(p) => range(p)?,
        None => {
            notes.push(format!(
                "port {s} has no published port: published on {target}"
            ));
            (t0, t1)
        }
    };
    if p1 - p0 != t1 - t0 {
        return Err(format!("ports: {s:?} maps ranges of different lengths"));
    }
    let ip = ip.filter(|i| !i.is_empty() && *i != "0.0.0.0");
    (0..=(t1 - t0))
        .map(|i| {
            let short = match ip {
                Some(ip) => format!("{ip}:{}:{}/{proto}", p0 + i, t0 + i),
                None => format!("{}:{}/{proto}", p0 + i, t0 + i),
            };
            let spec = PortSpec::Short(short);
            spec.parse().map(|_| spec)
        })
        .collect()
}

/// `..` and `.` resolved without touching the disk.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A volume's source and target, as orca takes them: named volumes by
/// their orca name (through `names`, the top-level volumes), bind mounts
/// with an absolute host path (relative to `dir`).
pub struct Volumes<'a> {
    pub dir: &'a Path,
    pub service: &'a str,
    /// Top-level volume key to its orca name.
    pub names: &'a BTreeMap<String, String>,
}

impl Volumes<'_> {
    /// One `volumes` entry of a service.
    pub fn entry(&self, v: &Value, notes: &mut Vec<String>) -> Result<VolumeSpec, String> {
        let mut o = self.entry_raw(v, notes)?;
        if o.target.len() > 1 {
            o.target = o.target.trim_end_matches('/').to_string();
        }
        Ok(VolumeSpec::Long(o))
    }

    fn entry_raw(&self, v: &Value, notes: &mut Vec<String>) -> Result<VolumeObject, String> {
        let mut o = VolumeObject::default();
        match v {
            Value::Mapping(m) => {
                let kind = m.get("type").and_then(Value::as_str).unwrap_or("volume");
                o.target = m
                    .get("target")
                    .and_then(text)
                    .ok_or("volumes: target is needed")?;
                o.read_only = m.get("read_only").and_then(Value::as_bool).unwrap_or(false);
                let source = m.get("source").and_then(text);
                match kind {
                    "tmpfs" => {
                        o.kind = Some(VolumeType::Tmpfs);
                        if let Some(size) = m.get("tmpfs").and_then(|t| t.get("size")) {
                            o.size = Some(memory(size)?);
                        }
                    }
                    "bind" => self.bind(&mut o, &source.ok_or("volumes: a bind needs a source")?),
                    "volume" => {
                        o.nocopy = m
                            .get("volume")
                            .and_then(|x| x.get("nocopy"))
                            .and_then(Value::as_bool)
                            .unwrap_or(false);
                        self.named(&mut o, source, notes)?;
                    }
                    other => return Err(format!("volumes: type {other}")),
                }
            }
            other => {
                let s = text(other).ok_or("volumes: a string or a mapping")?;
                let parts: Vec<&str> = s.split(':').collect();
                let (source, target, mode) = match parts.as_slice() {
                    [t] => (None, *t, ""),
                    [s, t] => (Some(*s), *t, ""),
                    [s, t, m] => (Some(*s), *t, *m),
                    _ => return Err(format!("volumes: {s:?}")),
                };
                o.target = target.to_string();
                o.read_only = mode.split(',').any(|m| m == "ro");
                match source {
                    Some(src)
                        if src.starts_with('/') || src.starts_with('.') || src.starts_with('~') =>
                    {
                        self.bind(&mut o, src)
                    }
                    src => self.named(&mut o, src.map(str::to_string), notes)?,
                }
            }
        }
        if o.source.as_deref() == Some("") {
            return Err(format!("volumes: {}: the source is empty", o.target));
        }
        Ok(o)
    }

    fn bind(&self, o: &mut VolumeObject, source: &str) {
        o.kind = Some(VolumeType::Bind);
        let path = Path::new(source);
        let abs = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir.join(path)
        };
        o.source = Some(normalize(&abs).display().to_string());
    }

    fn named(
        &self,
        o: &mut VolumeObject,
        source: Option<String>,
        notes: &mut Vec<String>,
    ) -> Result<(), String> {
        o.kind = Some(VolumeType::Volume);
        let name = match source {
            Some(s) => self
                .names
                .get(&s)
                .cloned()
                .ok_or_else(|| format!("volumes: {s} is not in the top-level volumes"))?,
            None => {
                let anon = crate::orca_name(&format!("{}-{}", self.service, o.target));
                notes.push(format!(
                    "{}: the anonymous volume at {} is the named volume {anon}",
                    self.service, o.target
                ));
                anon
            }
        };
        o.source = Some(name);
        Ok(())
    }
}

/// A `healthcheck` as a readiness probe (None: disabled).
pub fn healthcheck(v: &Value) -> Result<Option<Probe>, String> {
    if v.get("disable").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    let exec = match v.get("test") {
        None => {
            return Err(
                "healthcheck without test (the image's own check is not known to orca)".into(),
            )
        }
        Some(Value::String(s)) => vec!["sh".into(), "-c".into(), s.clone()],
        Some(t) => {
            let list = argv(t)?;
            match list.split_first() {
                Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
                Some((kind, [cmd])) if kind == "CMD-SHELL" => {
                    vec!["sh".into(), "-c".into(), cmd.clone()]
                }
                Some((kind, _)) if kind == "NONE" => return Ok(None),
                _ => return Err(format!("healthcheck test {list:?}: CMD, CMD-SHELL or NONE")),
            }
        }
    };
    let secs = |key: &str| v.get(key).map(seconds).transpose();
    Ok(Some(Probe {
        exec: Some(exec),
        interval_secs: secs("interval")?.map(|s| s.max(1)),
        timeout_secs: secs("timeout")?.map(|s| s.max(1)),
        failure_threshold: v
            .get("retries")
            .and_then(Value::as_u64)
            .map(|r| r.clamp(1, 100) as u32),
        initial_delay_secs: secs("start_period")?,
        ..Probe::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(seconds(&yaml("1m30s")).unwrap(), 90);
        assert_eq!(seconds(&yaml("500ms")).unwrap(), 1);
        assert_eq!(seconds(&yaml("10")).unwrap(), 10);
        assert_eq!(memory(&yaml("512m")).unwrap(), "512Mi");
        assert_eq!(memory(&yaml("1G")).unwrap(), "1Gi");
        assert_eq!(memory(&yaml("50M")).unwrap(), "50Mi");
    }

    #[test]
    fn labels_as_list_or_mapping() {
        let want: BTreeMap<String, String> = [("a.b", "1"), ("c", "x=y")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for text in ["[a.b=1, bare, c=x=y]", "{a.b: 1, bare: null, c: x=y}"] {
            let (labels, notes) = labels(&yaml(text)).unwrap();
            assert_eq!(labels, want);
            assert_eq!(notes.len(), 1, "{notes:?}");
            assert!(notes[0].starts_with("label bare ignored"), "{notes:?}");
        }
        assert!(labels(&yaml("just text")).is_err());
    }

    #[test]
    fn ports_short_long_and_ranges() {
        let (p, notes) = ports(&yaml(
            r#"["8000:8000", "5353:53/udp", "127.0.0.1:8080:80", "3000", "9000-9001:9000-9001"]"#,
        ))
        .unwrap();
        let keys: Vec<String> = p.iter().map(|p| p.parse().unwrap().key()).collect();
        assert_eq!(
            keys,
            ["8000/tcp", "5353/udp", "8080/tcp", "3000/tcp", "9000/tcp", "9001/tcp"]
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        let (p, _) = ports(&yaml(
            "[{target: 53, published: 53, protocol: udp, mode: host}]",
        ))
        .unwrap();
        let p = p[0].parse().unwrap();
        assert_eq!((p.protocol, p.mode), (Protocol::Udp, PortMode::Host));
    }

    #[test]
    fn health_checks_become_exec_probes() {
        let p = healthcheck(&yaml(
            r#"{test: ["CMD-SHELL", "pg_isready"], interval: 5s, retries: 3, start_period: 30s}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(p.exec.unwrap(), ["sh", "-c", "pg_isready"]);
        assert_eq!(
            (p.interval_secs, p.failure_threshold, p.initial_delay_secs),
            (Some(5), Some(3), Some(30))
        );
        let p = healthcheck(&yaml(
            r#"{test: ["CMD", "curl", "-f", "http://localhost"]}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(p.exec.unwrap(), ["curl", "-f", "http://localhost"]);
        assert!(healthcheck(&yaml("{disable: true}")).unwrap().is_none());
    }
}
