//! The distributor's network limits, each at the limit and one past it: concurrent stream
//! connections (`--max-connections`) and the time an unauthenticated connection may take
//! (`--hello-timeout-secs`). Frame sizes are in `hostile.rs`, next to the other bad frames.

use futures_util::{SinkExt, StreamExt};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;
use tamizdat_protocol::*;
use tamizdat_tests::*;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(addr: SocketAddr) -> Result<Client, String> {
    match tokio::time::timeout(
        TIMEOUT,
        tokio_tungstenite::connect_async(format!("ws://{addr}")),
    )
    .await
    {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => panic!("connecting to {addr} hung"),
    }
}

fn hello(token: &str) -> Ws {
    let t = JoinToken::decode(token).unwrap();
    Ws::Binary(
        encode(&Message::Hello(Hello {
            site: None,
            mirror: t.name,
            secret: t.secret,
            last_seq: 0,
            link: GENESIS,
            agent: "limits-test".into(),
        }))
        .into(),
    )
}

/// The first protocol message the distributor sends, or `None` when it closes first.
async fn first_message(ws: &mut Client) -> Option<Message> {
    loop {
        match tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("an answer")
        {
            Some(Ok(Ws::Binary(b))) => return Some(decode(&b, MAX_FRAME_SIZE).unwrap()),
            Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Connects as an enrolled mirror and expects its Welcome.
async fn join(addr: SocketAddr, token: &str) -> Client {
    let mut ws = connect(addr).await.expect("connection accepted");
    ws.send(hello(token)).await.unwrap();
    let m = first_message(&mut ws).await;
    assert!(matches!(m, Some(Message::Welcome(_))), "{m:?}");
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_n_and_refuses_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"front page");
    let (d, tokens) = tokio::task::block_in_place(|| {
        let d = Distributor::start(tmp.path(), &src, &["--max-connections", "2"]);
        let tokens: Vec<String> = ["m1", "m2", "m3"].map(|n| d.add_mirror(n)).into();
        (d, tokens)
    });

    // At the limit: two connections, both welcomed and held.
    let first = join(d.stream, &tokens[0]).await;
    let _second = join(d.stream, &tokens[1]).await;
    // Past it: the third is closed before its WebSocket handshake.
    let third = connect(d.stream).await;
    assert!(third.is_err(), "a third connection was accepted");
    tokio::task::block_in_place(|| {
        assert_eq!(d.metric("connections_refused_total"), 1);
        for name in ["m1", "m2"] {
            assert_eq!(d.mirror_status(name)["connected"], true, "{name}");
        }
    });

    // A freed slot is taken again.
    drop(first);
    let end = Instant::now() + TIMEOUT;
    loop {
        if let Ok(mut ws) = connect(d.stream).await {
            ws.send(hello(&tokens[2])).await.unwrap();
            if let Some(Message::Welcome(_)) = first_message(&mut ws).await {
                break;
            }
        }
        assert!(
            Instant::now() < end,
            "the slot of a closed connection was never freed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(!d.proc.log_text().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_timeout_drops_the_silent_and_welcomes_the_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("site");
    write_atomic(&src.join("index.html"), b"front page");
    let (d, token) = tokio::task::block_in_place(|| {
        let d = Distributor::start(tmp.path(), &src, &["--hello-timeout-secs", "1"]);
        let token = d.add_mirror("m1");
        (d, token)
    });

    // TCP open, nothing said; and a WebSocket handshake begun but never finished.
    tokio::task::block_in_place(|| {
        let mut silent = std::net::TcpStream::connect(d.stream).unwrap();
        let mut half = std::net::TcpStream::connect(d.stream).unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
        assert!(dropped(&mut silent), "a silent TCP connection was kept");
        assert!(
            dropped(&mut half),
            "a half-finished WebSocket handshake was kept"
        );
    });

    // A WebSocket that never says hello: told why, then closed.
    let mut quiet = connect(d.stream).await.expect("handshake");
    let m = first_message(&mut quiet).await;
    assert!(
        matches!(&m, Some(Message::Error { code: ErrorCode::Protocol, message }) if message.contains("no hello")),
        "{m:?}"
    );

    // Hello in time: welcomed.
    let _ws = join(d.stream, &token).await;
    assert!(!d.proc.log_text().contains("panicked"));
}
