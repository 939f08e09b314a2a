//! `orca server`: wires the config, containerd, the store, the local agent
//! and the control plane together, serves the API and the cluster port
//! (agents dial it, over TLS with the cluster's own CA), and stops on
//! SIGTERM or SIGINT (containers keep running: orca is not their parent).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::control::{ControlPlane, Settings};
use crate::ha::switch::Role;
use crate::metrics::Metrics;

/// `join`: the servers to join and the server join token (see
/// [`crate::ha::join`]).
pub async fn run(
    config_path: Option<&Path>,
    join: Option<(&str, Option<&str>)>,
) -> anyhow::Result<()> {
    // One crypto provider for every TLS client and server in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::load(config_path)?;
    let data = &config.cluster.data_dir;
    let fence = crate::store::Fence::default();
    let repo = crate::node::open_data(&config, Some(&fence))?;
    let shared = config.store.backend == crate::store::settings::Backend::Etcd;
    let ingress_port = config.proxy.port()?;
    let node_id = config.node_id();
    let local = if config.node.workloads.unwrap_or(true) {
        if shared {
            tracing::info!("[store] is shared: this server's own replicas are driven only while it leads (give several servers [node] workloads = false)");
        }
        Some(local_node(&config, &repo, ingress_port).await?)
    } else {
        tracing::info!("[node] workloads = false: this server runs no replicas");
        None
    };
    let key_path = data.join("secrets.key");
    if let Some((servers, token)) = join {
        let token = token
            .context("--join-server needs --token (from `orca cluster join-token --server`)")?;
        crate::ha::join::join(servers, token, &node_id, &key_path)
            .await
            .context("join the control plane")?;
    }
    let secrets =
        Arc::new(crate::secrets::SecretBox::open(&key_path).context("open the secrets key")?);
    let secrets_key = Arc::new(zeroize::Zeroizing::new(
        std::fs::read(&key_path).context("read the secrets key")?,
    ));
    let me = crate::ha::ServerInfo {
        id: node_id.clone(),
        api: advertised(&config.cluster.api_listen, &config),
        cluster: advertised(&config.cluster.grpc_listen, &config),
    };
    let election = if shared {
        Some(crate::ha::election::Election::start(
            &config.store,
            me.clone(),
            fence.clone(),
        )?)
    } else {
        None
    };
    let ca = match &election {
        Some(e) => Arc::new(shared_ca(&repo, &secrets, &config, e.standing()).await?),
        None => Arc::new(
            crate::cluster::pki::Ca::load_or_create(&data.join("cluster"), &config.cluster.name)
                .context("load the cluster CA")?,
        ),
    };
    let tokens = config
        .tokens
        .iter()
        .map(|t| api::auth::TokenEntry {
            name: t.name.clone(),
            role: t.role,
            hash: api::auth::token_hash(&t.value),
            project: t.project.clone(),
        })
        .collect::<Vec<_>>();
    let servers = match &election {
        Some(e) => e.servers(),
        None => {
            tokio::sync::watch::channel(vec![api::status::ServerStatus {
                id: me.id.clone(),
                address: me.api.clone(),
                leader: true,
                healthy: true,
            }])
            .1
        }
    };
    let settings = Settings {
        cluster_name: config.cluster.name.clone(),
        api_address: config.cluster.api_listen.clone(),
        node_labels: config.node.labels.clone(),
        tokens,
        secrets: Some(secrets),
        metrics_token: config.cluster.metrics_token,
        reserved_names: config.network.reserved_names.clone(),
        cert_dir: config.proxy.cert_dir.clone(),
        host_paths: config.volumes.host_paths.clone(),
        devices: config.volumes.devices.clone(),
        own_ports: own_ports(&config),
        heartbeat_grace: std::time::Duration::from_secs(config.cluster.heartbeat_grace_secs),
        reschedule_after: std::time::Duration::from_secs(config.cluster.reschedule_after_secs),
        schedule_catchup: std::time::Duration::from_secs(config.cluster.schedule_catchup_secs),
        ca_sha256: Some(ca.sha256().to_string()),
        subnet: config.network.subnet.clone(),
        node_address: node_address(&config),
        overlay: Some(config.network.backend.describe(config.network.vxlan_port)),
        acme: Some(crate::control::acme::AcmeSettings {
            directory: config.acme.directory.clone(),
            email: config.acme.email.clone(),
            ca_bundle: config.acme.ca_bundle.clone(),
        }),
        https: config.proxy.https_listen.is_some(),
        servers: Some(servers),
    };
    let metrics = Metrics::new()?;
    let routes = Arc::new(network::proxy::Routes::default());
    let parts = crate::ha::lead::Parts {
        repo: repo.clone(),
        local: local
            .as_ref()
            .map(|l| l.agent.clone() as Arc<dyn crate::agent::NodeAgent>),
        settings: settings.clone(),
        metrics: metrics.clone(),
        routes: Some(routes.clone()),
        dns: local.as_ref().map(|l| l.dns.clone()),
        data_dir: data.clone(),
    };
    // A server without an election leads from the start, in term 0.
    let first = match &election {
        None => Role::Leading(crate::ha::lead::take_term(&parts, 0).await?),
        Some(_) => Role::Following(None),
    };
    // What this server answers reads with while it does not lead: on a
    // shared store a control plane never started (its writes are fenced
    // off); alone, its own, which is all it answers with until it stops
    // (a second registry must not write the same records unfenced).
    let view = match &first {
        Role::Leading(l) => l.control.clone(),
        Role::Following(_) => ControlPlane::new(repo, None, settings, metrics, None, None)?,
    };
    let (role_tx, role) = tokio::sync::watch::channel(first);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let terms = election.as_ref().map(|e| {
        tokio::spawn(crate::ha::lead::follow(
            e.standing(),
            e.changes(),
            role_tx.clone(),
            view.clone(),
            parts,
            until_stopped(stopped.clone()),
        ))
    });
    // Ready once it leads or knows who does: never on a state not read.
    settled(role.clone()).await;
    let listener = tokio::net::TcpListener::bind(&config.cluster.api_listen)
        .await
        .with_context(|| format!("listen on {}", config.cluster.api_listen))?;
    let address = listener.local_addr()?;
    let proxy = config.proxy.start_ingress(routes)?;
    let grpc = tokio::net::TcpListener::bind(&config.cluster.grpc_listen)
        .await
        .with_context(|| {
            format!(
                "listen on {} (cluster.grpc_listen)",
                config.cluster.grpc_listen
            )
        })?;
    let grpc_address = grpc.local_addr()?;
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let cluster = tokio::spawn(crate::cluster::service::serve(
        grpc,
        role.clone(),
        ca,
        secrets_key,
        until_stopped(stopped.clone()),
    ));
    tracing::info!(
        node = %node_id,
        api = %format!("http://{address}"),
        cluster_port = %grpc_address,
        "orca server ready"
    );
    let switch = crate::ha::switch::Switch {
        role: role.clone(),
        view,
        me: me.id.clone(),
    };
    api::server::serve(listener, Arc::new(switch), until_stopped(stopped)).await?;
    let _ = cluster.await;
    match terms {
        Some(terms) => {
            let _ = terms.await;
        }
        None => {
            let last = role_tx.send_replace(Role::Following(None));
            if let Role::Leading(l) = last {
                l.control.shutdown().await;
            }
        }
    }
    if let Some(e) = election {
        e.resign().await;
    }
    proxy.stop().await;
    if let Some(local) = local {
        let _ = local.imports_stop.send(());
        let _ = local.importer.await;
    }
    tracing::info!("orca server stopped (containers keep running)");
    Ok(())
}

/// The cluster CA of a shared store: the store's, or (for the cluster's
/// first leader) the one it makes; a follower waits for it.
async fn shared_ca(
    repo: &crate::store::Repo,
    secrets: &Arc<crate::secrets::SecretBox>,
    config: &Config,
    mut standing: tokio::sync::watch::Receiver<crate::ha::Standing>,
) -> anyhow::Result<crate::cluster::pki::Ca> {
    let mut said = false;
    loop {
        let (r, s) = (repo.clone(), secrets.clone());
        let found = tokio::task::spawn_blocking(move || crate::ha::ca::load(&r, &s)).await??;
        if let Some(ca) = found {
            return Ok(ca);
        }
        if matches!(*standing.borrow(), crate::ha::Standing::Leading { .. }) {
            let (r, s) = (repo.clone(), secrets.clone());
            let (name, dir) = (
                config.cluster.name.clone(),
                config.cluster.data_dir.join("cluster"),
            );
            return tokio::task::spawn_blocking(move || crate::ha::ca::create(&r, &s, &name, &dir))
                .await?;
        }
        if !said {
            tracing::info!("waiting for the cluster CA: the first leader puts it in the store");
            said = true;
        }
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(500), standing.changed()).await;
    }
}

/// Waits until this server leads or knows the leader, saying so meanwhile.
async fn settled(mut role: tokio::sync::watch::Receiver<Role>) {
    let mut waited = 0u32;
    loop {
        if !matches!(*role.borrow_and_update(), Role::Following(None)) {
            return;
        }
        if waited % 10 == 9 {
            tracing::info!("waiting for the election: no server leads yet");
        }
        waited += 1;
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), role.changed()).await;
    }
}

/// `listen` as the other servers reach it: its own address, or the node's
/// when it listens on every address.
fn advertised(listen: &str, config: &Config) -> String {
    match listen.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => match node_address(config) {
            Some(ip) => format!("{ip}:{}", a.port()),
            None => listen.to_string(),
        },
        _ => listen.to_string(),
    }
}

/// The server's own node's address toward the others: the advertised one,
/// else the cluster port's own address when it names one, else (as k3s
/// picks a node's IP) the address of the default route's link.
fn node_address(config: &Config) -> Option<String> {
    config.agent.advertise_address.clone().or_else(|| {
        config
            .cluster
            .grpc_listen
            .parse::<std::net::SocketAddr>()
            .ok()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .or_else(|| {
                // A documentation address (TEST-NET-1): only the route to
                // it is looked up.
                let anywhere = std::net::SocketAddr::from(([192, 0, 2, 1], 9));
                crate::node::source_toward(anywhere).map(std::net::IpAddr::V4)
            })
            .map(|ip| ip.to_string())
    })
}

/// The server's own node: containerd, the bridge, DNS for its replicas,
/// and the air-gap import directory.
struct LocalNode {
    agent: Arc<crate::agent::local::LocalAgent>,
    dns: Arc<network::dns::DnsTable>,
    imports_stop: tokio::sync::oneshot::Sender<()>,
    importer: tokio::task::JoinHandle<()>,
}

async fn local_node(
    config: &Config,
    repo: &crate::store::Repo,
    ingress_port: u16,
) -> anyhow::Result<LocalNode> {
    let crate::node::NodeRuntime {
        cri,
        network,
        agent,
    } = crate::node::start(
        config,
        repo,
        (&config.network.subnet, 0),
        node_address(config).and_then(|a| a.parse().ok()),
        vec![ingress_port],
        true,
    )
    .await?;
    let dns = crate::node::serve_dns(&network).await?;
    let import_dir = config
        .registry
        .import_dir
        .clone()
        .unwrap_or_else(|| config.cluster.data_dir.join("images"));
    std::fs::create_dir_all(&import_dir)
        .with_context(|| format!("create {} (registry.import_dir)", import_dir.display()))?;
    let (imports_stop, imports_stopped) = tokio::sync::oneshot::channel::<()>();
    let importer = tokio::spawn(crate::imports::run(
        import_dir,
        cri,
        repo.clone(),
        async move {
            let _ = imports_stopped.await;
        },
    ));
    Ok(LocalNode {
        agent,
        dns,
        imports_stop,
        importer,
    })
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers, run until killed.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// orca's own listeners on a node: no service may publish these.
fn own_ports(config: &crate::config::Config) -> Vec<crate::control::ports::claims::Own> {
    use api::spec::Protocol::{Tcp, Udp};
    let port = |listen: &str| {
        listen
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
    };
    let mut out = vec![(53, Udp, "DNS"), (53, Tcp, "DNS")];
    let listeners = [
        (Some(config.cluster.api_listen.as_str()), "API"),
        (
            Some(config.cluster.grpc_listen.as_str()),
            "gRPC listener for agents",
        ),
        (Some(config.proxy.http_listen.as_str()), "ingress (HTTP)"),
        (config.proxy.https_listen.as_deref(), "ingress (HTTPS)"),
    ];
    for (listen, what) in listeners {
        if let Some(p) = listen.and_then(port) {
            out.push((p, Tcp, what));
        }
    }
    out
}
