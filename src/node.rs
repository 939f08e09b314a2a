//! What every node runs, the server's and each agent's: its data dir,
//! containerd, the node network and the local agent. And `orca agent`,
//! which is that and a connection to the server.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::agent::local::LocalAgent;
use crate::agent::NodeAgent;
use crate::config::Config;
use crate::store::settings::Backend;
use crate::store::{EtcdStore, Repo, SledStore, Store};
use network::{NetworkSettings, NodeNetwork};

/// A node's runtime.
pub struct NodeRuntime {
    pub cri: cri::Cri,
    pub network: Arc<NodeNetwork>,
    pub agent: Arc<LocalAgent>,
}

/// Makes `data_dir/logs` (0700) and opens the store: `[store]`'s for a
/// server (`server`: the fence its writes hold on etcd), sled in the data
/// directory for an agent, whose state is its node's alone.
pub fn open_data(config: &Config, server: Option<&crate::store::Fence>) -> anyhow::Result<Repo> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let data = &config.cluster.data_dir;
    let logs = data.join("logs");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&logs)
        .with_context(|| format!("create {}", logs.display()))?;
    // Replica logs are for the operators alone, also in a dir made before.
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", logs.display()))?;
    let store: Arc<dyn Store> = match config.store.backend {
        Backend::Etcd if server.is_some() => Arc::new(
            EtcdStore::open(&config.store, server.cloned()).with_context(|| {
                format!(
                    "open the store on etcd at {}",
                    config.store.endpoints.join(", ")
                )
            })?,
        ),
        _ => Arc::new(
            SledStore::open(&data.join("db"))
                .with_context(|| format!("open the store in {}", data.display()))?,
        ),
    };
    Ok(Repo::new(store))
}

/// Connects containerd, sets up the bridge (replicas may reach the node
/// only on `open_ports`) and the local agent; `dns`: replicas resolve
/// through the node's DNS server on the bridge address.
/// `subnet`: the cluster subnet and this node's /24 of it; `underlay`: the
/// node's address toward the other nodes, if known.
pub async fn start(
    config: &Config,
    repo: &Repo,
    subnet: (&str, u32),
    underlay: Option<std::net::Ipv4Addr>,
    open_ports: Vec<u16>,
    dns: bool,
) -> anyhow::Result<NodeRuntime> {
    let mut options =
        cri::ConnectOptions::new(&config.containerd.socket, &config.containerd.namespace);
    options.registry = config.registry.clone();
    let cri = cri::Cri::connect(options).await?;
    let shim =
        std::env::current_exe().context("find the orca binary (it serves as the log shim)")?;
    let run_dir = PathBuf::from("/run/orca").join(format!(
        "{}-{}",
        config.cluster.name, config.containerd.namespace
    ));
    let netns_dir = run_dir.join("netns");
    let network = NodeNetwork::setup(
        NetworkSettings {
            bridge: config.network.bridge.clone(),
            subnet: subnet.0.to_string(),
            node_index: subnet.1,
            netns_dir,
            open_ports,
            backend: config.network.backend,
            vxlan_port: config.network.vxlan_port,
            underlay,
        },
        Arc::new(repo.clone()),
    )
    .await
    .context("set up the node network")?;
    let network = Arc::new(network);
    let mut agent = LocalAgent::new(
        cri.clone(),
        config.node_id(),
        &config.cluster.data_dir,
        shim,
        Some(network.clone()),
    )
    .with_host(
        &config.cluster.data_dir,
        &run_dir,
        config.volumes.host_paths.clone(),
        config.volumes.devices.clone(),
    );
    if dns {
        agent = agent.with_dns();
    }
    let agent = Arc::new(agent);
    agent
        .sweep()
        .await
        .context("clean up leftovers of removed replicas")?;
    Ok(NodeRuntime {
        cri,
        network,
        agent,
    })
}

/// This node's own IPv4 address toward `server` (`host:port`).
async fn address_toward(server: &str) -> Option<std::net::Ipv4Addr> {
    let target = tokio::net::lookup_host(server)
        .await
        .ok()?
        .find(|a| a.is_ipv4())?;
    source_toward(target)
}

/// The source address the kernel picks for `target`: a UDP socket is
/// connected to it, and nothing is sent.
pub fn source_toward(target: std::net::SocketAddr) -> Option<std::net::Ipv4Addr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect(target).ok()?;
    match socket.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// `orca agent`: see [`crate::cluster::agent`].
pub async fn run_agent(
    config_path: Option<&std::path::Path>,
    join: Option<String>,
    token: Option<String>,
) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    let node_id = config.node_id();
    let server = join.or_else(|| config.agent.join.clone());
    let setup = crate::cluster::agent::AgentSetup {
        server: server.clone(),
        token: token.or_else(|| config.agent.token.clone()),
        node_id: node_id.clone(),
        dir: config.cluster.data_dir.join("cluster"),
    };
    let identity = crate::cluster::agent::identity(&setup).await?;
    let repo = open_data(&config, None)?;
    let ingress_port = config.proxy.port()?;
    let underlay = match config.agent.advertise_address.as_deref() {
        Some(a) => a.parse().ok(),
        None => match &server {
            Some(s) => address_toward(s).await,
            None => None,
        },
    };
    let runtime = start(
        &config,
        &repo,
        identity.subnet(),
        underlay,
        vec![ingress_port],
        true,
    )
    .await?;
    let served = Arc::new(crate::cluster::agent::Served {
        dns: serve_dns(&runtime.network).await?,
        routes: Arc::new(network::proxy::Routes::default()),
    });
    let proxy = config.proxy.start_ingress(served.routes.clone())?;
    let agent: Arc<dyn NodeAgent> = runtime.agent.clone();
    let hello = crate::nodes::Hello {
        node_id,
        address: config.agent.advertise_address.clone().unwrap_or_default(),
        labels: config.node.labels.clone(),
        capacity: agent.capacity(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        overlay: Some(config.network.backend.describe(config.network.vxlan_port)),
        https: config.proxy.https_listen.is_some(),
        access: config.volumes.access(),
    };
    let outcome = crate::cluster::agent::run(
        identity,
        server,
        hello,
        agent,
        served,
        crate::server::shutdown_signal(),
    )
    .await;
    proxy.stop().await;
    outcome?;
    tracing::info!("orca agent stopped (containers keep running)");
    Ok(())
}

/// The node's DNS server on its bridge address, for its own replicas; the
/// names it answers come from the server (`dns.replace`).
pub async fn serve_dns(network: &NodeNetwork) -> anyhow::Result<Arc<network::dns::DnsTable>> {
    let dns = Arc::new(network::dns::DnsTable::default());
    let socket = tokio::net::UdpSocket::bind((network.gateway(), 53))
        .await
        .with_context(|| format!("serve DNS on {}:53", network.gateway()))?;
    let upstreams = network::dns::host_resolvers(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    );
    tokio::spawn(network::dns::serve(
        socket,
        dns.clone(),
        upstreams,
        network.subnet(),
    ));
    Ok(dns)
}
