//! The cluster for people: nodes, drain and undrain, node removal, and
//! join tokens.

use api::client::ApiClient;
use api::status::ClusterInfo;
use serde_json::Value;

use clap::Subcommand;

use super::commands::print_json;
use super::out::{self, outln};
use super::table;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Print a new join token (admin).
    JoinToken {
        /// How long it may be used (default 1h).
        #[arg(long, value_parser = super::parse_duration)]
        ttl: Option<std::time::Duration>,
        /// For another server of the control plane (`orca server
        /// --join-server`), not an agent.
        #[arg(long)]
        server: bool,
    },
    /// Revoke a join token by its id.
    RevokeToken { id: String },
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Remove a node: its certificate is revoked and its replicas are
    /// placed elsewhere.
    Rm { id: String },
}

/// Drains (`Some(deadline)`) or undrains (`None`) a node.
pub async fn drain(
    client: &ApiClient,
    id: &str,
    drain: Option<Option<std::time::Duration>>,
    move_volumes: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut path = match drain {
        Some(Some(d)) => format!(
            "/api/v1/cluster/nodes/{id}/drain?deadline_secs={}",
            d.as_secs().max(1)
        ),
        Some(None) => format!("/api/v1/cluster/nodes/{id}/drain"),
        None => format!("/api/v1/cluster/nodes/{id}/undrain"),
    };
    if move_volumes {
        path.push_str(if path.contains('?') { "&" } else { "?" });
        path.push_str("move_volumes=true");
    }
    let v: Value = client.post(&path, &serde_json::json!({})).await?;
    if json {
        return print_json(&v);
    }
    if let Some(moves) = v["moving_volumes"].as_array() {
        for m in moves {
            outln!(
                "moving volume {} to {}",
                m["volume"].as_str().unwrap_or_default(),
                m["to"].as_str().unwrap_or_default()
            )?;
        }
    }
    match (drain, v["deadline"].as_str()) {
        (Some(_), Some(deadline)) => outln!(
            "{id} drained: its replicas move to other nodes; what has not moved by {deadline} is stopped"
        ),
        (Some(_), None) => outln!("{id} drained: no new replicas are placed there"),
        (None, _) => outln!("{id} undrained: it takes new replicas again"),
    }
}

pub async fn cluster(
    client: &ApiClient,
    command: ClusterCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        ClusterCommand::JoinToken { ttl, server } => {
            let body = serde_json::json!({ "ttl_secs": ttl.map(|d| d.as_secs().max(1)), "server": server });
            let v: Value = client.post("/api/v1/cluster/join-tokens", &body).await?;
            if json {
                return print_json(&v);
            }
            outln!("{}", v["token"].as_str().unwrap_or_default())?;
            out::warn(&format!(
                "join token {} expires at {}: run `orca agent --join <this server>:6881 --token <token>` on the new node",
                v["id"].as_str().unwrap_or_default(),
                v["expires_at"].as_str().unwrap_or_default()
            ));
            Ok(())
        }
        ClusterCommand::RevokeToken { id } => {
            let v: Value = client
                .delete(&format!("/api/v1/cluster/join-tokens/{id}"))
                .await?;
            if json {
                return print_json(&v);
            }
            outln!("join token {id} revoked")
        }
    }
}

pub async fn remove_node(client: &ApiClient, id: &str, json: bool) -> anyhow::Result<()> {
    let v: Value = client
        .delete(&format!("/api/v1/cluster/nodes/{id}"))
        .await?;
    if json {
        return print_json(&v);
    }
    outln!(
        "{id} removed: its certificate no longer connects, and its replicas are placed elsewhere"
    )
}

pub async fn nodes(client: &ApiClient, json: bool) -> anyhow::Result<()> {
    let info: ClusterInfo = client.get("/api/v1/cluster/info").await?;
    if json {
        return print_json(&info);
    }
    let rows: Vec<Vec<String>> = info
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.id.clone(),
                n.state.clone(),
                match (&n.drain, n.drained) {
                    (Some(d), _) => format!("draining ({} left)", d.remaining),
                    (None, true) => "yes".to_string(),
                    (None, false) => "no".to_string(),
                },
                n.instances.to_string(),
                format!("{:.1}/{:.0}", n.reserved.cpu, n.resources.cpu),
                format!("{:.1}", n.cpu_limits),
                format!(
                    "{}/{}",
                    table::bytes(n.reserved.memory_bytes),
                    table::bytes(n.resources.memory_bytes)
                ),
                n.address.clone(),
                n.last_heartbeat.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out::write(&table::render(
        &[
            "ID",
            "STATE",
            "DRAINED",
            "REPLICAS",
            "CPU RESERVED",
            "CPU LIMITS",
            "MEMORY RESERVED",
            "ADDRESS",
            "HEARTBEAT",
        ],
        &rows,
    ))
}
