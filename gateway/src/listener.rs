//! The HTTP listener and how it stops.
//!
//! A plain graceful shutdown drops the listening socket at once, and the
//! kernel resets every connection it had already accepted for us (the
//! backlog); hyper also closes, unread, the connections accepted a moment
//! earlier whose request had not been parsed yet. A client sees a reset
//! after its connection was established and its request sent, and cannot
//! tell whether the request was applied. So on shutdown [`Draining`] takes
//! every connection the kernel already holds, then closes the socket (from
//! then on a new connection is refused at connect: clearly not accepted, safe
//! to retry), and the server keeps serving for `--shutdown-grace` (500 ms by
//! default) before it tells each connection to finish: a request that was on
//! its way is served, with `Connection: close`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP listener that, once told to stop, hands out what the kernel has
/// already accepted and then closes.
pub struct Draining {
    listener: Option<TcpListener>,
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
    backlog: VecDeque<(TcpStream, SocketAddr)>,
    /// The stop sender was dropped (treated as a stop).
    gone: bool,
}

impl Draining {
    pub fn new(listener: TcpListener, stop: watch::Receiver<bool>) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        Ok(Draining {
            listener: Some(listener),
            addr,
            stop,
            backlog: VecDeque::new(),
            gone: false,
        })
    }

    /// Takes every connection waiting in the backlog, then closes the socket.
    fn drain(&mut self) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let std = match listener.into_std() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("cannot drain the listen backlog: {e}");
                return;
            }
        };
        // into_std leaves the socket non-blocking: accept until it would block.
        loop {
            match std.accept() {
                Ok((s, a)) => match s
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(s))
                {
                    Ok(s) => self.backlog.push_back((s, a)),
                    Err(e) => tracing::warn!("dropping a connection from the backlog: {e}"),
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::warn!("draining the listen backlog: {e}");
                    break;
                }
            }
        }
        if !self.backlog.is_empty() {
            tracing::info!(
                "shutting down: serving {} connection(s) from the listen backlog",
                self.backlog.len()
            );
        }
        drop(std); // closed: new connections are refused from here on
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

impl axum::serve::Listener for Draining {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            if let Some(c) = self.backlog.pop_front() {
                return c;
            }
            let stopping = self.gone || *self.stop.borrow();
            if stopping {
                self.drain();
                if self.backlog.is_empty() {
                    // Closed and drained: nothing more will come.
                    std::future::pending::<()>().await;
                }
                continue;
            }
            let Self {
                listener,
                stop,
                gone,
                ..
            } = self;
            let Some(l) = listener.as_ref() else {
                std::future::pending::<()>().await;
                continue;
            };
            tokio::select! {
                r = l.accept() => match r {
                    Ok(c) => return c,
                    Err(e) if is_connection_error(&e) => {}
                    Err(e) => {
                        // e.g. out of file descriptors: wait for some to close.
                        tracing::error!("accept error: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                r = stop.changed() => {
                    if r.is_err() {
                        // The sender is gone: the server is going away.
                        *gone = true;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// Once shutdown has begun, answers carry `Connection: close`, so a client
/// does not send another request on a connection about to be closed.
pub async fn close_when_stopping(
    axum::extract::State(stopping): axum::extract::State<Arc<AtomicBool>>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = next.run(req).await;
    if stopping.load(Ordering::Relaxed) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Connections the kernel accepted before the stop are handed out after
    /// it; connections after it are refused.
    #[tokio::test]
    async fn stop_hands_out_the_backlog_then_refuses() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = watch::channel(false);
        let mut d = Draining::new(l, rx).unwrap();
        // Three clients connect; nobody has called accept yet.
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        tx.send(true).unwrap();
        for c in clients.iter_mut() {
            let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), d.accept())
                .await
                .expect("a backlog connection is handed out after the stop");
            c.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
        }
        // Nothing more, and the socket is closed.
        assert!(tokio::time::timeout(Duration::from_millis(200), d.accept())
            .await
            .is_err());
        let err = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(d.local_addr().unwrap(), addr);
    }
}
