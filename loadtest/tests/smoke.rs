//! The smoke scenario of the test command: one synthetic simulcast publisher, 20 viewers, 10 s,
//! against a real server on loopback (started in this process). A correctness check, not a
//! timing test: every viewer joins, receives media, and loses under 1 % of it.

use loadtest::{Layer, Scenario, Tokens};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publisher_twenty_viewers_ten_seconds() {
    let mut config = signaling::config::Config { dev: Some(false), ..Default::default() };
    config.auth.secret = "loadtest-smoke".into();
    config.http.bind = "127.0.0.1:0".parse().unwrap();
    config.rtc.udp_bind = "127.0.0.1:0".parse().unwrap();
    config.rtc.advertise_ip = "127.0.0.1".parse().unwrap();
    config.rtc.workers = 1;
    config.rtmp.enabled = false;
    config.rtmp.keys_file = String::new();
    config.store.url = "sqlite::memory:".into();
    let server = signaling::Server::start(config).await.expect("server starts");
    let scenario = Scenario {
        target: loadtest::Target::Onair,
        url: format!("http://{}", server.http_addr),
        room: "smoke".into(),
        tokens: Tokens::Secret("loadtest-smoke".into()),
        publishers: 1,
        rates: [150_000, 500_000, 1_500_000],
        keyframe_every: Duration::from_secs(2),
        viewers: 20,
        ramp: 20.0,
        duration: Duration::from_secs(10),
        layer: Layer::Auto,
        local_ip: "127.0.0.1".parse().unwrap(),
        server_pid: None,
        progress: None,
    };
    let report = tokio::time::timeout(Duration::from_secs(90), loadtest::run(scenario)).await.expect("bounded run").expect("run");
    eprintln!("{}", report.table());
    assert_eq!(report.failed, 0, "join failures: {:?}", report.failures);
    assert_eq!(report.joined, 20);
    assert_eq!(report.receiving, 20, "every viewer receives media");
    assert!(report.loss_percent < 1.0, "loss {:.3} %", report.loss_percent);
    assert!(report.packets_received > 20 * 500, "media flowed: {} packets", report.packets_received);
    assert!(report.delay_ms.is_some(), "stamped packets were measured");
    assert_eq!(report.layer_distribution[3], 0, "every viewer got video");
    server.shutdown().await;
}
