//! `bridge serve` (the default): serves the page and its wasm from inside the binary, tunnels the
//! page's peer connections (`/peer`) and performs its tracker announces (`/announce`), behind the
//! guards of `guard`.

mod announce;
mod assets;
mod demo;
pub(crate) mod guard;
mod incoming;
mod tunnel;
mod tunnel_mse;

use crate::UsageError;
use anyhow::{Context, Result};
use axum::routing::get;
use axum::Router;
use guard::{Access, Destinations, Limits};
use std::future::IntoFuture;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Announces in flight at once, all pages together (each may take up to the tracker timeout).
const MAX_ANNOUNCES: usize = 32;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to serve the page on (port 0 = any free port).
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Another origin whose pages may use the bridge, e.g. http://192.168.1.5:8080 (repeatable).
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,
    /// Let tunnels and trackers reach loopback, private, link-local and multicast addresses.
    #[arg(long)]
    pub allow_private: bool,
    /// Seed a generated sample on loopback and print a page URL that downloads it.
    #[arg(long)]
    pub demo: bool,
    /// Open tunnels allowed from one client address.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_tunnels_per_client: usize,
    /// Open tunnels allowed in total.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub max_tunnels: usize,
    /// A tunnel that moves no byte either way for this long is closed.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub idle_timeout: u64,
    /// The TCP port peers dial to reach the tab's torrents (0 = any free port; another one is
    /// taken when this one is busy).
    #[arg(long, value_name = "N", default_value_t = 6881)]
    pub peer_port: u16,
}

/// What every request handler sees.
pub struct Shared {
    access: Access,
    destinations: Destinations,
    limits: Limits,
    idle_timeout: Duration,
    announces: Arc<Semaphore>,
    incoming: Arc<incoming::Hub>,
}

/// `http://origin` as a browser sends it in `Origin`, or a usage error.
impl Shared {
    /// The answer to a WebSocket upgrade from a page the bridge does not serve (wrong Origin or
    /// Host), logged with the endpoint; `None` lets it through.
    fn refuse_websocket(
        &self,
        headers: &axum::http::HeaderMap,
        client: SocketAddr,
        endpoint: &str,
    ) -> Option<axum::response::Response> {
        use axum::response::IntoResponse;
        let why = self.access.check_websocket(headers).err()?;
        tracing::warn!("refused {endpoint} from {client}: {why}");
        Some((axum::http::StatusCode::FORBIDDEN, format!("{why}\n")).into_response())
    }
}

fn normalise_origin(o: &str) -> Result<String, UsageError> {
    let u = url::Url::parse(o)
        .map_err(|e| UsageError(format!("--allow-origin {o:?} is not an origin: {e}")))?;
    let origin = u.origin();
    if !origin.is_tuple() {
        return Err(UsageError(format!(
            "--allow-origin {o:?} is not an origin like http://host:port"
        )));
    }
    Ok(origin.ascii_serialization())
}

/// The URL a browser on this machine opens: loopback for a wildcard bind.
fn page_url(local: SocketAddr) -> String {
    let ip = match local.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/", SocketAddr::new(ip, local.port()))
}

pub async fn run(args: ServeArgs) -> Result<()> {
    let allowed = args
        .allow_origins
        .iter()
        .map(|o| normalise_origin(o))
        .collect::<Result<Vec<_>, _>>()?;
    if args.max_tunnels == 0 || args.max_tunnels_per_client == 0 || args.idle_timeout == 0 {
        return Err(
            UsageError("tunnel limits and the idle timeout must be positive".into()).into(),
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let local = listener.local_addr().context("listener has no address")?;
    if !local.ip().is_loopback() {
        tracing::warn!(
            "serving on {local}, reachable from other machines; pages need --allow-origin"
        );
    }

    let mut destinations = Destinations {
        allow_private: args.allow_private,
        extra: Vec::new(),
    };
    let demo = match args.demo {
        true => Some(demo::start().await?),
        false => None,
    };
    if let Some(d) = &demo {
        destinations.extra.push(d.addr);
    }

    let shared = Arc::new(Shared {
        access: Access::new(local, &allowed),
        destinations,
        limits: Limits::new(args.max_tunnels_per_client, args.max_tunnels),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        announces: Arc::new(Semaphore::new(MAX_ANNOUNCES)),
        incoming: incoming::start(args.peer_port).await?,
    });
    let app = Router::new()
        .route("/peer", get(tunnel::handler))
        .route("/announce", get(announce::handler))
        .route("/listen", get(incoming::listen_handler))
        .route("/accept", get(incoming::accept_handler))
        .fallback(assets::handler)
        .with_state(shared);

    let page = page_url(local);
    println!("page: {page}");
    tracing::info!("serving the page on {page}");
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .into_future();

    match demo {
        Some(d) => {
            println!("demo: {page}#{}", d.magnet);
            // The seeding session is not `Send`: it runs here, beside the server.
            tokio::select! {
                r = server => r.context("HTTP server failed"),
                r = d.session.run() => r,
            }
        }
        None => tokio::select! {
            r = server => r.context("HTTP server failed"),
            _ = tokio::signal::ctrl_c() => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised() {
        assert_eq!(
            normalise_origin("http://192.168.1.5:8080/").unwrap(),
            "http://192.168.1.5:8080"
        );
        assert_eq!(
            normalise_origin("HTTPS://App.Example:443").unwrap(),
            "https://app.example"
        );
        assert!(normalise_origin("nonsense").is_err());
        assert!(normalise_origin("file:///x").is_err());
    }

    #[test]
    fn page_urls_use_loopback_for_wildcards() {
        assert_eq!(
            page_url("0.0.0.0:80".parse().unwrap()),
            "http://127.0.0.1:80/"
        );
        assert_eq!(page_url("[::]:81".parse().unwrap()), "http://[::1]:81/");
        assert_eq!(
            page_url("127.0.0.1:9".parse().unwrap()),
            "http://127.0.0.1:9/"
        );
    }
}
