//! `depends_on` across a deploy: every name a service of the batch depends
//! on is in the batch or deployed in the same project, a `completed`
//! condition names a job, and no cycle runs through the batch and what is
//! deployed. A service that fails is left out of the deploy with a 400.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use api::spec::{dependency_cycle, Condition, ServiceSpec};

use crate::store::ServiceRecord;

/// Checks `batch` against `records`; returns the errors and keeps in
/// `batch` only the specs that pass.
pub(crate) fn check(
    batch: &mut Vec<ServiceSpec>,
    records: &HashMap<String, ServiceRecord>,
) -> Vec<String> {
    let mut errors = Vec::new();
    // What each name will be once the batch is in: the batch's spec, else
    // the deployed one.
    let mut known: BTreeMap<&str, &ServiceSpec> =
        records.iter().map(|(n, r)| (n.as_str(), &r.spec)).collect();
    for s in batch.iter() {
        known.insert(s.name.as_str(), s);
    }
    let mut refused: BTreeSet<String> = BTreeSet::new();
    for spec in batch.iter() {
        for (dep, condition) in spec.depends_on.iter().flat_map(|d| d.conditions()) {
            let problem = match known.get(dep.as_str()) {
                None => Some(format!("depends_on {dep}: no such service")),
                // Another project's service is not named to this one.
                Some(other) if other.project != spec.project => Some(format!(
                    "depends_on {dep}: no such service in project {}",
                    spec.project
                )),
                Some(other) if condition == Condition::Completed && !other.is_job() => {
                    Some(format!(
                        "depends_on {dep}: completed needs a job (restart = \"on-failure\" or \"never\"); {dep} restarts always"
                    ))
                }
                Some(_) => None,
            };
            if let Some(p) = problem {
                errors.push(format!("{}: {p}", spec.name));
                refused.insert(spec.name.clone());
                break;
            }
        }
    }
    let graph: BTreeMap<String, BTreeSet<String>> = known
        .iter()
        .map(|(name, spec)| {
            let deps = spec
                .depends_on
                .iter()
                .flat_map(|d| d.conditions().into_keys())
                .collect();
            (name.to_string(), deps)
        })
        .collect();
    if let Some(cycle) = dependency_cycle(&graph) {
        for spec in batch.iter() {
            let on_cycle = cycle.split(" -> ").any(|n| n == spec.name);
            if on_cycle && refused.insert(spec.name.clone()) {
                errors.push(format!("{}: depends_on makes a cycle: {cycle}", spec.name));
            }
        }
    }
    // What depends on a refused service that is not deployed goes too.
    loop {
        let more: Vec<(String, String)> = batch
            .iter()
            .filter(|s| !refused.contains(&s.name))
            .filter_map(|s| {
                let deps = s.depends_on.as_ref()?.conditions();
                let gone = deps
                    .into_keys()
                    .find(|d| refused.contains(d) && !records.contains_key(d))?;
                Some((s.name.clone(), gone))
            })
            .collect();
        if more.is_empty() {
            break;
        }
        for (name, gone) in more {
            errors.push(format!(
                "{name}: depends_on {gone}, which this deploy refused"
            ));
            refused.insert(name);
        }
    }
    batch.retain(|s| !refused.contains(&s.name));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> ServiceSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn unknown_names_cycles_and_non_jobs_are_refused() {
        let mut batch = vec![
            spec(r#"{"name":"db","image":"x"}"#),
            spec(
                r#"{"name":"migrate","image":"x","restart":"on-failure","depends_on":{"db":"healthy"}}"#,
            ),
            spec(
                r#"{"name":"web","image":"x","depends_on":{"db":"healthy","migrate":"completed"}}"#,
            ),
            spec(r#"{"name":"bad","image":"x","depends_on":["nothere"]}"#),
            spec(r#"{"name":"wait","image":"x","depends_on":{"db":"completed"}}"#),
        ];
        let errors = check(&mut batch, &HashMap::new());
        let names: Vec<&str> = batch.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "migrate", "web"], "{errors:?}");
        assert!(errors[0].contains("nothere: no such service"), "{errors:?}");
        assert!(errors[1].contains("completed needs a job"), "{errors:?}");

        let mut cyclic = vec![
            spec(r#"{"name":"a","image":"x","depends_on":["b"]}"#),
            spec(r#"{"name":"b","image":"x","depends_on":["a"]}"#),
            spec(r#"{"name":"c","image":"x","depends_on":["a"]}"#),
        ];
        let errors = check(&mut cyclic, &HashMap::new());
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("cycle: a -> b -> a"), "{errors:?}");
        // c is not on the cycle, but what it waits for will not be there.
        assert!(
            errors[2].contains("c: depends_on a, which this deploy refused"),
            "{errors:?}"
        );
        assert!(cyclic.is_empty());
    }
}
