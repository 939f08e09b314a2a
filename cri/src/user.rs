//! Resolving a container's `User` (`name`, `uid`, `name:group`,
//! `uid:gid`...) against the image's own `/etc/passwd` and `/etc/group`, the
//! way runc's user lookup does (the files are read by [`crate::rootfs`]).

use crate::error::{CriError, Result};

/// The ids a process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserIds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (groups that list the user by name).
    pub additional_gids: Vec<u32>,
}

/// The image's account files, when it has them.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    pub passwd: Option<String>,
    pub group: Option<String>,
}

impl UserDb {
    /// The account files of the image in `layers` (see
    /// [`crate::rootfs::read_file`]). Blocking.
    pub fn read(layers: &[std::path::PathBuf]) -> Result<UserDb> {
        Ok(UserDb {
            passwd: crate::rootfs::read_file(layers, "/etc/passwd")?,
            group: crate::rootfs::read_file(layers, "/etc/group")?,
        })
    }
}

/// True if resolving `user` needs the account files (some part is a name).
pub fn needs_lookup(user: &str) -> bool {
    let (u, g) = user.split_once(':').unwrap_or((user, ""));
    let named = |s: &str| !s.is_empty() && s.parse::<u32>().is_err();
    named(u) || named(g)
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?,
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
            })
        })
}

/// (name, gid, members) of each group line.
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default();
            Some((*f.first()?, f.get(2)?.parse().ok()?, members))
        })
}

/// Resolves `user` (empty means root).
pub fn resolve(user: &str, db: &UserDb) -> Result<UserIds> {
    let bad = |reason: String| CriError::InvalidConfig {
        field: "user",
        reason,
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = db.passwd.as_deref().unwrap_or("");
    let (uid, mut gid, name) = if u.is_empty() {
        (0, 0, Some("root"))
    } else if let Ok(uid) = u.parse::<u32>() {
        // A known uid brings its primary group; an unknown one runs as gid 0.
        match passwd_entries(passwd).find(|e| e.uid == uid) {
            Some(e) => (uid, e.gid, Some(e.name)),
            None => (uid, 0, None),
        }
    } else {
        match passwd_entries(passwd).find(|e| e.name == u) {
            Some(e) => (e.uid, e.gid, Some(e.name)),
            None if u == "root" => (0, 0, Some("root")),
            None => return Err(bad(format!("no user {u:?} in the image's /etc/passwd"))),
        }
    };
    let groups = db.group.as_deref().unwrap_or("");
    match g {
        None | Some("") => {}
        Some(g) => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => match group_entries(groups).find(|(n, _, _)| *n == g) {
                    Some((_, n, _)) => n,
                    None if g == "root" => 0,
                    None => return Err(bad(format!("no group {g:?} in the image's /etc/group"))),
                },
            };
        }
    }
    let mut additional_gids: Vec<u32> = match (name, g) {
        (Some(name), None) => group_entries(groups)
            .filter(|(_, n, members)| *n != gid && members.contains(&name))
            .map(|(_, n, _)| n)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(UserIds {
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> UserDb {
        UserDb {
            passwd: Some("root:x:0:0:root:/root:/bin/sh\nnginx:x:101:101:nginx:/:/sbin/nologin\nnobody:x:65534:65534::/:/bin/false\n".into()),
            group: Some("root:x:0:\nnginx:x:101:\nwww:x:33:nginx,other\nnogroup:x:65534:\n".into()),
        }
    }

    #[test]
    fn names_and_numbers() {
        let d = db();
        assert_eq!(
            resolve("", &d).unwrap(),
            UserIds {
                uid: 0,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(resolve("root", &UserDb::default()).unwrap().uid, 0);
        assert_eq!(
            resolve("nginx", &d).unwrap(),
            UserIds {
                uid: 101,
                gid: 101,
                additional_gids: vec![33]
            }
        );
        assert_eq!(
            resolve("101", &d).unwrap(),
            UserIds {
                uid: 101,
                gid: 101,
                additional_gids: vec![33]
            }
        );
        assert_eq!(
            resolve("nginx:www", &d).unwrap(),
            UserIds {
                uid: 101,
                gid: 33,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            resolve("1000", &d).unwrap(),
            UserIds {
                uid: 1000,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            resolve("1000:50", &UserDb::default()).unwrap(),
            UserIds {
                uid: 1000,
                gid: 50,
                additional_gids: vec![]
            }
        );
        assert_eq!(resolve("nobody:nogroup", &d).unwrap().gid, 65534);
    }

    #[test]
    fn unknown_names_are_errors() {
        let e = resolve("ghost", &db()).unwrap_err().to_string();
        assert!(e.contains("no user \"ghost\""), "{e}");
        assert!(resolve("nginx:nogrp", &db()).is_err());
        assert!(resolve("nginx", &UserDb::default()).is_err());
        assert!(
            needs_lookup("nginx")
                && needs_lookup("1:www")
                && !needs_lookup("1:2")
                && !needs_lookup("")
        );
    }
}
