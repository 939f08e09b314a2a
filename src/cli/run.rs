//! `orca run NAME`: starts a run of a job now; with `--wait`, follows it
//! to its end and fails when it failed.

use std::time::{Duration, Instant};

use api::client::ApiClient;
use api::status::StatusResponse;
use serde_json::Value;

use super::out::outln;

/// How often status is read while waiting.
const POLL: Duration = Duration::from_millis(250);

pub async fn run(
    client: &ApiClient,
    name: &str,
    wait: bool,
    timeout: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let v: Value = client
        .post(
            &format!("/api/v1/services/{name}/run"),
            &serde_json::json!({}),
        )
        .await?;
    let run = v["run"].as_u64().unwrap_or(0);
    if !wait {
        if json {
            return super::commands::print_json(&v);
        }
        return outln!("{name}: run {run} started");
    }
    let deadline = Instant::now() + timeout;
    loop {
        let status: StatusResponse = client.get("/api/v1/status").await?;
        let job = status
            .services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.job.clone())
            .ok_or_else(|| anyhow::anyhow!("{name}: the job is gone"))?;
        if job.run > run {
            anyhow::bail!("{name}: run {run} was followed by run {}", job.run);
        }
        if !job.active {
            let codes: Vec<String> = job.exit_codes.iter().map(u32::to_string).collect();
            if json {
                super::commands::print_json(&serde_json::to_value(&job)?)?;
            } else {
                outln!("{name}: run {run} ended: exit codes [{}]", codes.join(", "))?;
            }
            if job.last_exit_code != Some(0) {
                anyhow::bail!("{name}: run {run} failed");
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("{name}: run {run} still going after {}s", timeout.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}
