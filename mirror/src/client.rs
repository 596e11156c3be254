//! The connection to upstream: connect out (works behind NAT), say hello with the last applied
//! sequence, feed frames to the engine, send what it answers; on any failure reconnect with
//! exponential backoff and jitter, forever.

use crate::apply::{Input, Output, INPUT_BYTES};
use crate::status::Status;
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tamizdat_protocol::{decode, encode, ErrorCode, Hello, JoinToken, Message};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as Ws;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub max_frame: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// No frame from upstream for this long: the connection is dead (upstream pings every
    /// 5 s by default, so this is three missed pings).
    pub silence: Duration,
    /// Whom a wss:// upstream's certificate must chain to.
    pub tls: crate::tls::Tls,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            max_frame: tamizdat_protocol::MAX_FRAME_SIZE,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            silence: Duration::from_secs(15),
            tls: crate::tls::Tls::default(),
        }
    }
}

pub async fn run(
    token: JoinToken,
    upstream: String,
    opts: ClientOptions,
    status: Arc<Status>,
    engine: mpsc::Sender<Input>,
    mut out: mpsc::UnboundedReceiver<Output>,
) {
    let mut backoff = opts.backoff_min;
    let credit = Arc::new(Semaphore::new(INPUT_BYTES));
    loop {
        let started = Instant::now();
        let r = session(
            &token, &upstream, &opts, &status, &engine, &credit, &mut out,
        )
        .await;
        status.connected.store(false, Relaxed);
        let (tx, rx) = oneshot::channel();
        if engine.send(Input::Disconnected(tx)).await.is_err() {
            return;
        }
        let _ = rx.await;
        while out.try_recv().is_ok() {}
        match r {
            Ok(()) => info!("upstream closed the connection"),
            Err(e) => warn!(upstream = %upstream, cause = %e, "disconnected from upstream"),
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = opts.backoff_min;
        }
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        tokio::time::sleep(backoff.mul_f64(jitter)).await;
        backoff = (backoff * 2).min(opts.backoff_max);
    }
}

async fn session(
    token: &JoinToken,
    upstream: &str,
    opts: &ClientOptions,
    status: &Status,
    engine: &mpsc::Sender<Input>,
    credit: &Arc<Semaphore>,
    out: &mut mpsc::UnboundedReceiver<Output>,
) -> anyhow::Result<()> {
    let config = WebSocketConfig::default()
        .max_message_size(Some(opts.max_frame))
        .max_frame_size(Some(opts.max_frame));
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(15),
        crate::tls::connect(upstream, config, &opts.tls),
    )
    .await
    .map_err(|_| anyhow::anyhow!("connecting to {upstream} timed out"))??;
    let (mut sink, mut stream) = ws.split();
    let hello = Message::Hello(Hello {
        site: *status.site.lock().unwrap(),
        mirror: token.name.clone(),
        secret: token.secret.clone(),
        last_seq: status.applied(),
        link: *status.link.lock().unwrap(),
        agent: concat!("tamizdat-mirror/", env!("CARGO_PKG_VERSION")).into(),
    });
    sink.send(Ws::Binary(encode(&hello).into())).await?;
    let mut welcomed = false;
    loop {
        tokio::select! {
            o = out.recv() => match o {
                Some(Output::Send(m)) => sink.send(Ws::Binary(encode(&m).into())).await?,
                Some(Output::Close(code, message)) => {
                    let f = encode(&Message::Error { code, message: message.clone() });
                    let _ = sink.send(Ws::Binary(f.into())).await;
                    let _ = sink.close().await;
                    anyhow::bail!("{message}");
                }
                None => return Ok(()),
            },
            f = tokio::time::timeout(opts.silence, stream.next()) => {
                let Ok(f) = f else { anyhow::bail!("upstream silent for {:?}", opts.silence) };
                let Some(f) = f else { return Ok(()) };
                let f = match f {
                    Ok(f) => f,
                    Err(tokio_tungstenite::tungstenite::Error::Capacity(e)) => {
                        return refuse(&mut sink, ErrorCode::TooLarge, &format!("frame refused: {e}")).await;
                    }
                    Err(e) => return Err(e.into()),
                };
                let bytes = match f {
                    Ws::Binary(b) => {
                        status.metrics.bytes_received.inc_by(b.len() as u64);
                        b
                    }
                    Ws::Close(_) => return Ok(()),
                    Ws::Text(_) => return refuse(&mut sink, ErrorCode::Malformed, "text frames are not spoken here").await,
                    _ => continue,
                };
                let wire = bytes.len();
                let msg = match decode(&bytes, opts.max_frame) {
                    Ok(m) => m,
                    Err(e) => return refuse(&mut sink, e.code(), &e.to_string()).await,
                };
                match msg {
                    Message::Welcome(w) if !welcomed => {
                        welcomed = true;
                        info!(upstream = %upstream, head = w.head_seq, mode = ?w.mode, "connected");
                        if token.site != w.site {
                            return refuse(&mut sink, ErrorCode::Protocol,
                                "upstream serves another site than the join token names").await;
                        }
                        status.connected.store(true, Relaxed);
                        engine.send(Input::Connected(w)).await?;
                    }
                    Message::Ping { nonce, head_seq } if welcomed => {
                        status.observe_head(head_seq);
                        sink.send(Ws::Binary(encode(&Message::Pong { nonce }).into())).await?;
                    }
                    Message::Error { code, message } => {
                        anyhow::bail!("upstream refused us ({code:?}): {message}");
                    }
                    m @ (Message::Changeset(_) | Message::Blob(_) | Message::Chunk(_) | Message::Gone { .. }) if welcomed => {
                        // Frames wait for the engine by their bytes, not their number.
                        let n = wire.clamp(1, INPUT_BYTES) as u32;
                        let held = credit.clone().acquire_many_owned(n).await?;
                        engine.send(Input::Frame(m, held)).await?;
                    }
                    other => {
                        let what = format!("unexpected frame: {other:?}");
                        let what: String = what.chars().take(200).collect();
                        return refuse(&mut sink, ErrorCode::Protocol, &what).await;
                    }
                }
            }
        }
    }
}

async fn refuse<S>(sink: &mut S, code: ErrorCode, message: &str) -> anyhow::Result<()>
where
    S: futures_util::Sink<Ws> + Unpin,
{
    warn!(?code, %message, "refusing upstream");
    let f = encode(&Message::Error {
        code,
        message: message.to_owned(),
    });
    let _ = sink.send(Ws::Binary(f.into())).await;
    let _ = sink.close().await;
    anyhow::bail!("{message}")
}
