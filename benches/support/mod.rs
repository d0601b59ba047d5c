//! What the in-process benches share: the echo handler and a hyper server over a duplex pipe.

use std::convert::Infallible;
use std::future::ready;

use futures::{SinkExt, StreamExt};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use webchan::{Config, Event};

/// The echo of `benches/compare` and `examples/autobahn.rs`: the Sink half forwards the
/// Stream half's messages.
pub(crate) async fn echo(channel: webchan::Channel) {
    let (mut tx, rx) = channel.split();
    let mut messages = rx.filter_map(|e| {
        ready(match e {
            Event::Message(m) => Some(Ok(m.into())),
            _ => None,
        })
    });
    let _ = tx.send_all(&mut messages).await;
}

/// Serves one connection on `io` with hyper; every request becomes a channel handled by `run`.
pub(crate) fn serve<F, Fut>(io: DuplexStream, run: F)
where
    F: Fn(webchan::Channel) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    serve_with(io, Config::default(), run);
}

/// [`serve`], the channels made with `config`.
pub(crate) fn serve_with<F, Fut>(io: DuplexStream, config: Config, run: F)
where
    F: Fn(webchan::Channel) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let service = service_fn(move |req| {
            let config = config.clone();
            async move {
                Ok::<_, Infallible>(match webchan::as_channel(req, config) {
                    Ok((reply, channel)) => {
                        tokio::spawn(run(channel));
                        reply.await
                    }
                    Err(rejection) => rejection.into_response(),
                })
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades()
            .await;
    });
}
