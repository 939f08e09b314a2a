//! Generates the cluster's gRPC service (agents dial the server) from a
//! description in Rust: its messages are serde types sent as JSON, so
//! no .proto file and no protoc are needed.

fn main() {
    use tonic_build::manual::{Builder, Method, Service};
    let codec = "crate::cluster::codec::JsonCodec";
    let service = Service::builder()
        .name("Cluster")
        .package("orca.cluster")
        .method(
            Method::builder()
                .name("join")
                .route_name("Join")
                .input_type("crate::cluster::wire::JoinRequest")
                .output_type("crate::cluster::wire::JoinReply")
                .codec_path(codec)
                .build(),
        )
        .method(
            Method::builder()
                .name("join_server")
                .route_name("JoinServer")
                .input_type("crate::cluster::wire::ServerJoinRequest")
                .output_type("crate::cluster::wire::ServerJoinReply")
                .codec_path(codec)
                .build(),
        )
        .method(
            Method::builder()
                .name("connect")
                .route_name("Connect")
                .input_type("crate::cluster::wire::Up")
                .output_type("crate::cluster::wire::Down")
                .codec_path(codec)
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .build();
    Builder::new().build_transport(false).compile(&[service]);
    println!("cargo:rerun-if-changed=build.rs");
}
