//! The deploy-side etcd client against the lab's real etcd: put, get, prefix delete, and an
//! unreachable endpoint followed by a good one.

use installer::etcd_gateway::{EtcdGateway, EtcdTls};
use installer::lab::LabGuard;

#[test]
fn put_get_and_delete_prefix_against_real_etcd_root() {
    let Some(lab) = LabGuard::up_or_skip("etcd_gateway", 1).expect("lab") else {
        return;
    };
    // A dead endpoint in the lab's own range first: the client must fall through to etcd.
    let dead = format!("http://{}:1", lab.deploy_ip);
    let etcd =
        EtcdGateway::new(&[dead, lab.etcd_endpoint.clone()], &EtcdTls::default()).expect("client");
    let prefix = "/installer-test/network";
    etcd.put(
        &format!("{prefix}/config"),
        "{\"Network\":\"198.19.0.0/16\"}",
    )
    .expect("put");
    etcd.put(&format!("{prefix}/subnets/198.19.1.0-24"), "{}")
        .expect("put lease");
    assert_eq!(
        etcd.get(&format!("{prefix}/config"))
            .expect("get")
            .as_deref(),
        Some("{\"Network\":\"198.19.0.0/16\"}")
    );
    assert_eq!(etcd.get("/installer-test/absent").expect("get"), None);
    assert_eq!(
        etcd.delete_prefix(&format!("{prefix}/")).expect("delete"),
        2
    );
    assert_eq!(etcd.get(&format!("{prefix}/config")).expect("get"), None);
}

#[test]
fn every_endpoint_failing_names_each_root() {
    let Some(lab) = LabGuard::up_or_skip("etcd_gateway_down", 1).expect("lab") else {
        return;
    };
    let dead = format!("http://{}:1", lab.deploy_ip);
    let etcd = EtcdGateway::new(std::slice::from_ref(&dead), &EtcdTls::default()).expect("client");
    let err = etcd.get("/x").expect_err("no etcd there").to_string();
    assert!(err.contains(&dead), "{err}");
}
