//! kubeasz's real conflist through the runtime's loader and the flannel plugin's delegate
//! builder: the golden delegate config of flannel-spec.md §8.

use installer::cni::flannel::NetConf;
use installer::cni::gojson;
use installer::cni::runtime::conf;
use installer::cni::subnet_env::SubnetEnv;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cni")
        .join(name)
}

#[test]
fn kubeasz_conflist_yields_the_spec_delegate() {
    let list = conf::load_file(&fixture("10-flannel.conflist")).expect("conflist loads");
    assert_eq!(
        (list.name.as_str(), list.cni_version.as_str()),
        ("cbr0", "0.3.1")
    );
    let flannel = &list.plugins[0];
    assert_eq!(flannel.plugin_type, "flannel");
    assert!(
        flannel.capabilities.is_empty(),
        "flannel gets no runtimeConfig"
    );
    assert_eq!(list.plugins[1].capabilities, ["portMappings"]);

    // what the runtime hands the plugin: its entry plus the list's name and version
    let mut entry = serde_json::Value::Object(flannel.conf.clone());
    entry["name"] = list.name.clone().into();
    entry["cniVersion"] = list.cni_version.clone().into();
    let netconf = NetConf::parse(entry.to_string().as_bytes()).expect("netconf");
    let env = SubnetEnv::load(&fixture("subnet.env")).expect("subnet.env");
    let delegate = netconf.delegate_config(&env).expect("delegate");
    assert_eq!(
        gojson::to_compact(&delegate),
        std::fs::read_to_string(fixture("delegate.json")).unwrap()
    );
}
