//! A keep-alive HTTP/1.1 client that does only what a load generator needs: write a
//! request and read the answer's status, skipping its body by `Content-Length` or
//! chunked framing. Headers are parsed in place (`httparse`) and never copied into a
//! header map, and each connection is driven by the one task that uses it.
//!
//! This is how wrk measures. The generator shares the machine's two cores with the
//! server it loads, so whatever it spends per answer is taken from the server. With
//! hyper's client (a connection task per connection and a header map per answer), the
//! generator set the pace of light servers: a bare handler making one actor call
//! measured as fast as one without, though it costs the server about 50 % more CPU per
//! request (see BENCHMARKS.md).

use std::io;
use std::net::SocketAddr;

use axum::body::Bytes;
use bytes::{Buf, BytesMut};
use hyper::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most an answer's head (status line and headers) may take.
const MAX_HEAD: usize = 64 * 1024;
/// The most headers an answer may have.
const MAX_HEADERS: usize = 64;

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

/// One connection.
pub struct Connection {
    stream: TcpStream,
    input: BytesMut,
    output: Vec<u8>,
    /// The server said `Connection: close` (or ended the body by closing).
    closed: bool,
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Connection {
    /// Opens a connection (`TCP_NODELAY`, as any HTTP client).
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            input: BytesMut::with_capacity(16 * 1024),
            output: Vec::with_capacity(2 * 1024),
            closed: false,
        })
    }

    /// Whether the connection can carry another request.
    pub fn reusable(&self) -> bool {
        !self.closed
    }

    /// Sends `request` and returns the answer's status once its body has been read.
    pub async fn exchange(&mut self, request: &Request<Bytes>) -> io::Result<u16> {
        encode(request, &mut self.output);
        self.stream.write_all(&self.output).await?;
        loop {
            let status = self.read_answer().await?;
            // An interim answer (100 Continue) is followed by the real one.
            if !(100..200).contains(&status) || status == 101 {
                return Ok(status);
            }
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        self.input.reserve(16 * 1024);
        if self.stream.read_buf(&mut self.input).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    async fn read_answer(&mut self) -> io::Result<u16> {
        let (status, head, framing, close) = loop {
            let parsed = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut answer = httparse::Response::new(&mut headers);
                match answer.parse(&self.input).map_err(invalid)? {
                    httparse::Status::Complete(head) => {
                        let status = answer.code.unwrap_or(0);
                        let (framing, close) = framing(status, answer.headers)?;
                        Some((status, head, framing, close))
                    }
                    httparse::Status::Partial => None,
                }
            };
            match parsed {
                Some(parsed) => break parsed,
                None if self.input.len() > MAX_HEAD => {
                    return Err(invalid("the answer's head is larger than 64 KiB"));
                }
                None => self.fill().await?,
            }
        };
        self.input.advance(head);
        match framing {
            Framing::Length(n) => self.skip(n).await?,
            Framing::Chunked => self.skip_chunked().await?,
            Framing::UntilClose => {
                self.input.clear();
                while self.fill().await.is_ok() {
                    self.input.clear();
                }
                self.closed = true;
            }
        }
        self.closed |= close;
        Ok(status)
    }

    /// Consumes `n` body bytes.
    async fn skip(&mut self, mut n: u64) -> io::Result<()> {
        loop {
            let here = (self.input.len() as u64).min(n);
            self.input.advance(here as usize);
            n -= here;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Consumes a chunked body, trailers included.
    async fn skip_chunked(&mut self) -> io::Result<()> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.input).map_err(|_| invalid("a malformed chunk size"))? {
                    httparse::Status::Complete((line, size)) => {
                        self.input.advance(line);
                        break size;
                    }
                    httparse::Status::Partial if self.input.len() > MAX_HEAD => {
                        return Err(invalid("a chunk size line longer than 64 KiB"));
                    }
                    httparse::Status::Partial => self.fill().await?,
                }
            };
            if size == 0 {
                // Trailer lines, then an empty line.
                loop {
                    match self.input.windows(2).position(|w| w == b"\r\n") {
                        Some(0) => {
                            self.input.advance(2);
                            return Ok(());
                        }
                        Some(end) => self.input.advance(end + 2),
                        None if self.input.len() > MAX_HEAD => return Err(invalid("trailers longer than 64 KiB")),
                        None => self.fill().await?,
                    }
                }
            }
            // The chunk and the CRLF after it.
            self.skip(size + 2).await?;
        }
    }
}

/// How the body of an answer with `status` and `headers` is framed (RFC 9112 §6.3),
/// and whether the server closes the connection after it.
fn framing(status: u16, headers: &[httparse::Header<'_>]) -> io::Result<(Framing, bool)> {
    let mut framing = Framing::UntilClose;
    let mut close = false;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if !chunked {
                return Err(invalid("a transfer coding other than chunked"));
            }
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| invalid("a malformed Content-Length"))?;
            framing = Framing::Length(n);
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
    }
    if (100..200).contains(&status) || status == 204 || status == 304 {
        framing = Framing::Length(0);
    }
    Ok((framing, close))
}

/// Writes `request` as HTTP/1.1 bytes into `out` (cleared first), adding
/// `Content-Length` when the body is not empty and the request has none.
fn encode(request: &Request<Bytes>, out: &mut Vec<u8>) {
    use std::io::Write as _;
    out.clear();
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let _ = write!(out, "{} {target} HTTP/1.1\r\n", request.method());
    for (name, value) in request.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let body = request.body();
    if !body.is_empty() && !request.headers().contains_key(hyper::header::CONTENT_LENGTH) {
        let _ = write!(out, "content-length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that reads each request head and answers with the next canned bytes,
    /// written in pieces of `piece` bytes so that answers arrive split; it records
    /// what it was sent.
    async fn canned(answers: Vec<&'static [u8]>, piece: usize) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            for answer in answers {
                let mut buf = [0u8; 4096];
                while !received.ends_with(b"\r\n\r\n") && !received.ends_with(b"grant_type=client_credentials") {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return received;
                    }
                    received.extend_from_slice(&buf[..n]);
                }
                received.extend_from_slice(b"|");
                for part in answer.chunks(piece) {
                    socket.write_all(part).await.unwrap();
                    socket.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            }
            received
        });
        (addr, server)
    }

    fn get() -> Request<Bytes> {
        Request::get("/v1/check/items?x=1")
            .header("host", "127.0.0.1")
            .header("authorization", "Bearer abc")
            .body(Bytes::new())
            .unwrap()
    }

    #[tokio::test]
    async fn answers_framed_every_way_are_read_to_their_end_on_one_connection() {
        let answers: Vec<&[u8]> = vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-ratelimit-remaining: 9\r\n\r\nhello",
            b"HTTP/1.1 429 Too Many Requests\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n3; ext=1\r\nefg\r\n0\r\nx-trailer: 1\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n",
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: keep-alive, close\r\ncontent-length: 2\r\n\r\nno",
        ];
        for piece in [1, 7, 4096] {
            let (addr, server) = canned(answers.clone(), piece).await;
            let mut conn = Connection::connect(addr).await.unwrap();
            let mut statuses = Vec::new();
            for _ in 0..answers.len() {
                assert!(conn.reusable());
                let request = get();
                let answer = tokio::time::timeout(std::time::Duration::from_secs(5), conn.exchange(&request))
                    .await
                    .expect("an answer was not recognised as complete");
                statuses.push(answer.unwrap());
                assert!(
                    conn.input.is_empty(),
                    "an answer was not read to its end (pieces of {piece})"
                );
            }
            assert_eq!(statuses, [200, 429, 204, 401, 503], "pieces of {piece}");
            assert!(!conn.reusable(), "`Connection: close` must end the connection");
            let sent = String::from_utf8(server.await.unwrap()).unwrap();
            assert!(sent.starts_with(
                "GET /v1/check/items?x=1 HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer abc\r\n\r\n|"
            ));
        }
    }

    #[tokio::test]
    async fn a_body_without_length_ends_with_the_connection() {
        let (addr, _server) = canned(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"], 4).await;
        let mut conn = Connection::connect(addr).await.unwrap();
        assert_eq!(conn.exchange(&get()).await.unwrap(), 200);
        assert!(!conn.reusable());
    }

    #[tokio::test]
    async fn a_form_is_sent_with_its_length() {
        let (addr, server) = canned(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"], 4096).await;
        let mut conn = Connection::connect(addr).await.unwrap();
        let form = Request::post("/oauth/token")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Bytes::from_static(b"grant_type=client_credentials"))
            .unwrap();
        assert_eq!(conn.exchange(&form).await.unwrap(), 200);
        let sent = String::from_utf8(server.await.unwrap()).unwrap();
        assert_eq!(
            sent,
            "POST /oauth/token HTTP/1.1\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 29\r\n\r\ngrant_type=client_credentials|"
        );
    }

    #[tokio::test]
    async fn broken_answers_are_errors_not_statuses() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: ten\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"not http at all\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        ] {
            let (addr, server) = canned(vec![answer], 4096).await;
            let mut conn = Connection::connect(addr).await.unwrap();
            // The short body ends with the server closing the connection.
            let request = get();
            let result = tokio::time::timeout(std::time::Duration::from_secs(5), conn.exchange(&request))
                .await
                .expect("a broken answer must not hang");
            drop(server);
            assert!(result.is_err(), "{:?} was accepted", String::from_utf8_lossy(answer));
        }
    }
}
