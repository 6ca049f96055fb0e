mod support;
use support::*;

#[tokio::test]
async fn harness_admits_a_created_key() {
    let gw = TestGateway::start().await;
    let (_id, key) = gw.create_key(&["--org", "acme", "--role", "viewer"]);
    let r = get(&gw.url("/v1/models"), &[("authorization", &bearer(&key))]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.upstream_headers()["x-keygate-org"], "acme");
    gw.stop().await;
}
