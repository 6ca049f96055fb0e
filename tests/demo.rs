//! `keygate demo` (issue 17 item 7): every curl line it prints answers what the demo says
//! it will, run here against the demo itself (the same `Try` list it prints from).

mod support;

use bytes::Bytes;
use http::Method;
use keygate::cli::DemoArgs;
use support::*;

#[tokio::test]
async fn every_line_the_demo_prints_answers_what_it_says() {
    let dir = tempfile::tempdir().expect("tempdir");
    let demo = keygate::demo::start(&DemoArgs {
        listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        dir: dir.path().join("demo"),
    })
    .await
    .expect("the demo starts");
    let base = format!("http://{}", demo.running.addr());
    let admin = format!("http://{}", demo.running.admin_addr());
    assert_eq!(demo.tries.len(), 11);
    for t in &demo.tries {
        let url = format!("{}{}", if t.admin { &admin } else { &base }, t.path);
        let headers: Vec<(&str, &str)> = t.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let method = Method::from_bytes(t.method.as_bytes()).expect("method");
        for i in 0..t.times {
            let body = Bytes::from(t.body.unwrap_or(""));
            let r = send_body(method.clone(), &url, &headers, body).await;
            assert_eq!(
                r.status.as_u16(),
                t.status,
                "{} {} (#{i}): {}",
                t.method,
                t.path,
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(t.code.unwrap_or(""), r.code(), "{} {}", t.method, t.path);
            if t.path == "/health" {
                assert!(
                    r.upstream_headers().get("x-keygate-org").is_none(),
                    "spoof gone"
                );
            }
        }
        // The printed line carries the answer.
        assert!(demo.text.contains(&t.status.to_string()));
    }
    assert!(demo.text.contains("-> 429 rate_limited"), "{}", demo.text);
    assert!(demo.text.contains("-> 401 missing_key"), "{}", demo.text);
    demo.running
        .shutdown_draining(std::time::Duration::from_secs(1))
        .await;
}
