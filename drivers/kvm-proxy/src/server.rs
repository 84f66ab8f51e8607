//! The helper's side of the protocol: answers calls read from `input` with a [`Driver`], each
//! call in its own task, answers written to `output` one line at a time.

use std::sync::Arc;

use timonel_driver::{Driver, Reporter};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::protocol::{Answer, Call, Event, Reply, Request, PROTOCOL};
use crate::wire_error::WireError;

/// The version the helper reports in its greeting.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Serves calls until `input` ends (timonel closed the pipe, or exited). Calls still running
/// then are abandoned, as they would be if timonel had been stopped.
pub async fn serve<R, W>(driver: Arc<dyn Driver>, input: R, output: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_answers(rx, output));
    let mut lines = BufReader::new(input).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Call>(&line) {
            Ok(Call { id, request }) => {
                let (driver, tx) = (driver.clone(), tx.clone());
                tokio::spawn(async move {
                    let report = Forward { id, tx: tx.clone() };
                    let event = Event::Done(answer(driver.as_ref(), request, &report).await);
                    let _ = tx.send(Answer { id, event });
                });
            }
            Err(e) => refuse(&line, &e, &tx),
        }
    }
    Ok(())
}

/// A line that is not a call: an error answer when it has an id, else a note on stderr.
fn refuse(line: &str, error: &serde_json::Error, tx: &mpsc::UnboundedSender<Answer>) {
    let id = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("id")?.as_u64());
    match id {
        Some(id) => {
            let _ = tx.send(Answer {
                id,
                event: Event::Done(Err(WireError::Parse {
                    what: "a call to the kvm helper".to_string(),
                    message: error.to_string(),
                })),
            });
        }
        None => eprintln!("timonel-kvm: ignored a line that is not a call: {error}"),
    }
}

async fn answer(
    driver: &dyn Driver,
    request: Request,
    report: &dyn Reporter,
) -> Result<Reply, WireError> {
    let result = match request {
        Request::Hello => Ok(Reply::Hello {
            protocol: PROTOCOL,
            version: VERSION.to_string(),
        }),
        Request::Probe => Ok(Reply::Availability(driver.probe().await)),
        Request::Create { spec } => driver.create(&spec, report).await.map(|()| Reply::Done),
        Request::Start { name } => driver.start(&name).await.map(|()| Reply::Done),
        Request::Stop { name, how } => driver.stop(&name, how).await.map(|()| Reply::Done),
        Request::Pause { name } => driver.pause(&name).await.map(|()| Reply::Done),
        Request::Unpause { name } => driver.unpause(&name).await.map(|()| Reply::Done),
        Request::Delete { name } => driver.delete(&name).await.map(|()| Reply::Done),
        Request::DeleteCluster { cluster } => {
            driver.delete_cluster(&cluster).await.map(Reply::Removed)
        }
        Request::State { name } => driver.state(&name).await.map(Reply::State),
        Request::Ip { name } => driver.ip(&name).await.map(Reply::Ip),
        Request::Endpoint { name, port } => driver.endpoint(&name, port).await.map(Reply::Endpoint),
    };
    result.map_err(|e| WireError::from(&e))
}

async fn write_answers<W: AsyncWrite + Unpin>(
    mut rx: mpsc::UnboundedReceiver<Answer>,
    mut output: W,
) {
    while let Some(answer) = rx.recv().await {
        let id = answer.id;
        let line = serde_json::to_string(&answer).or_else(|e| {
            serde_json::to_string(&Answer {
                id,
                event: Event::Done(Err(WireError::Backend {
                    op: "writing the kvm helper's answer".to_string(),
                    message: e.to_string(),
                    hint: None,
                })),
            })
        });
        let Ok(mut line) = line else {
            continue;
        };
        line.push('\n');
        if output.write_all(line.as_bytes()).await.is_err() || output.flush().await.is_err() {
            return;
        }
    }
}

/// The driver's progress, as events of call `id`.
struct Forward {
    id: u64,
    tx: mpsc::UnboundedSender<Answer>,
}

impl Forward {
    fn send(&self, event: Event) {
        let _ = self.tx.send(Answer { id: self.id, event });
    }
}

impl Reporter for Forward {
    fn step(&self, message: &str) {
        self.send(Event::Step(message.to_string()));
    }
    fn progress(&self, done: u64, total: Option<u64>) {
        self.send(Event::Progress { done, total });
    }
    fn warn(&self, message: &str) {
        self.send(Event::Warn(message.to_string()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use timonel_driver::fake::FakeDriver;
    use timonel_driver::{FilePlacement, MachineSpec, NodeRole};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, Lines};

    struct Client {
        to: DuplexStream,
        from: Lines<BufReader<DuplexStream>>,
    }

    impl Client {
        fn serving(driver: FakeDriver) -> (Self, tokio::task::JoinHandle<std::io::Result<()>>) {
            let (to, server_in) = tokio::io::duplex(1 << 16);
            let (server_out, from) = tokio::io::duplex(1 << 16);
            let served = tokio::spawn(serve(Arc::new(driver), server_in, server_out));
            let from = BufReader::new(from).lines();
            (Self { to, from }, served)
        }
        async fn send_line(&mut self, line: &str) {
            self.to.write_all(line.as_bytes()).await.unwrap();
            self.to.write_all(b"\n").await.unwrap();
        }
        async fn call(&mut self, id: u64, request: Request) -> Event {
            self.send_line(&serde_json::to_string(&Call { id, request }).unwrap())
                .await;
            self.answer(id).await
        }
        async fn answer(&mut self, id: u64) -> Event {
            let line = self.from.next_line().await.unwrap().expect("an answer");
            let answer: Answer = serde_json::from_str(&line).unwrap();
            assert_eq!(answer.id, id, "{line}");
            answer.event
        }
    }

    #[tokio::test]
    async fn answers_calls_with_the_drivers_results_and_errors() {
        let fake = FakeDriver::new();
        let (mut client, served) = Client::serving(fake.clone());
        assert_eq!(
            client.call(1, Request::Hello).await,
            Event::Done(Ok(Reply::Hello {
                protocol: PROTOCOL,
                version: VERSION.to_string()
            }))
        );
        let name: timonel_driver::MachineName = "n1".parse().unwrap();
        let mut spec = MachineSpec::new(name.clone(), "c".parse().unwrap(), NodeRole::Agent, 2);
        spec.files
            .push(FilePlacement::bytes("/etc/x", 0o600, vec![0u8, 255, 10]));
        let create = Request::Create {
            spec: Box::new(spec.clone()),
        };
        assert_eq!(client.call(2, create).await, Event::Done(Ok(Reply::Done)));
        assert_eq!(fake.spec(&name), Some(spec), "the spec crossed unchanged");
        assert_eq!(fake.file(&name, "/etc/x"), Some(vec![0u8, 255, 10]));
        let missing = Request::Start {
            name: "n2".parse().unwrap(),
        };
        assert_eq!(
            client.call(3, missing).await,
            Event::Done(Err(WireError::NotFound {
                what: "fake node `n2`".to_string()
            }))
        );
        // The input ends: serving ends.
        drop(client);
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_line_that_is_not_a_call_is_answered_or_skipped() {
        let (mut client, _served) = Client::serving(FakeDriver::new());
        client
            .send_line(r#"{"id":9,"request":{"op":"reboot"}}"#)
            .await;
        let Event::Done(Err(WireError::Parse { what, message })) = client.answer(9).await else {
            panic!("a bad call was not refused");
        };
        assert_eq!(what, "a call to the kvm helper");
        assert!(message.contains("reboot"), "{message}");
        client.send_line("not json at all").await;
        client.send_line("").await;
        // Still serving.
        assert!(matches!(
            client.call(10, Request::Probe).await,
            Event::Done(Ok(Reply::Availability(_)))
        ));
    }
}
