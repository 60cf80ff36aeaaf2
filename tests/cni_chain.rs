//! End-to-end: `plexus-cni` second in a chain, run the way a runtime runs
//! a conflist. Debian's reference `macvlan` plugin with `static` IPAM puts
//! `net1` into the pod first; `plexus-cni` then adds `eth0` on a real
//! `plexus serve`. The runtime must get both back, the pod must have both,
//! and DEL and CHECK must work with the merged result. Needs root and
//! containernetworking-plugins.

mod support;

use std::process::Command;

use serde_json::{json, Value};
use support::cni::{host_veths, sandbox, Network};
use support::netns::{run, unique};
use support::plexus::Plexus;
use support::runtime::Runtime;
use support::world::wait_ping;

/// A veth pair in the root namespace (the macvlan's parent), removed by
/// its guard.
struct Parent(String);

impl Parent {
    fn new() -> Parent {
        let (name, peer) = (unique("pxm"), unique("pxn"));
        run(&[
            "ip", "link", "add", &name, "type", "veth", "peer", "name", &peer,
        ]);
        let parent = Parent(name);
        run(&["ip", "link", "set", &peer, "up"]);
        run(&["ip", "link", "set", &parent.0, "up"]);
        parent
    }
}

impl Drop for Parent {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// A network configuration for `plexus`'s API and agent.
async fn network(plexus: &Plexus) -> Network {
    let hosts: Vec<nsdb::Host> = plexus.client().list("/v1/hosts").await.unwrap();
    let host = hosts.iter().find(|h| h.alive).expect("an agent");
    Network::new(&plexus.url, &plexus.token, &host.name)
}

/// The conflist: `macvlan` on `parent` with a static address, route and
/// DNS, then `plexus-cni` (its entry from `net`) with DNS of its own.
fn conflist(net: &Network, parent: &str) -> Value {
    let mut plexus = net.conf.clone();
    let entry = plexus.as_object_mut().unwrap();
    entry.remove("name");
    entry.remove("cniVersion");
    entry.insert(
        "dns".into(),
        json!({"nameservers": ["10.0.0.53", "10.99.0.53"], "search": ["pods.example"],
               "options": ["ndots:2"]}),
    );
    json!({
        "cniVersion": "1.0.0",
        "name": net.conf["name"],
        "plugins": [
            {
                "type": "macvlan",
                "master": parent,
                "mode": "bridge",
                "dns": {"nameservers": ["10.99.0.53"], "domain": "side.example",
                        "search": ["side.example"]},
                "ipam": {
                    "type": "static",
                    "addresses": [{"address": "10.99.0.5/24", "gateway": "10.99.0.254"}],
                    "routes": [{"dst": "192.168.77.0/24", "gw": "10.99.0.254"}],
                },
            },
            plexus,
        ],
    })
}

/// `ip -j` output of `args` inside `netns`.
fn ip_json(netns: &str, args: &[&str]) -> Value {
    let mut full = vec!["ip", "-j", "-n", netns];
    full.extend_from_slice(args);
    serde_json::from_slice(&run(&full).stdout).unwrap()
}

/// The `address/prefix`es and MAC of `ifname` in `netns`.
fn addresses(netns: &str, ifname: &str) -> (Vec<String>, String) {
    let link = &ip_json(netns, &["addr", "show", "dev", ifname])[0];
    let inet = link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    (inet, link["address"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_plugins_interface_survives_plexus_in_the_chain() {
    let plexus = Plexus::start().await;
    let net = network(&plexus).await;
    let parent = Parent::new();
    let pod = sandbox(&net, "chained");
    let netns = format!("/var/run/netns/{}", pod.netns);
    let runtime =
        Runtime::new(conflist(&net, &parent.0), "chained", &netns, "eth0").with_ifname(0, "net1");
    let result = runtime.add().unwrap_or_else(|f| {
        panic!(
            "ADD failed in {}: {} {}",
            f.plugin, f.answer.json, f.answer.stderr
        )
    });
    // The runtime's result: macvlan's interface first, then Plexus's two,
    // each address pointing at its own interface.
    assert_eq!(result["cniVersion"], "1.0.0");
    let names: Vec<&str> = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["net1", pod.host_if.as_str(), "eth0"], "{result}");
    assert_eq!(result["interfaces"][0]["sandbox"], netns.as_str());
    assert_eq!(result["interfaces"][2]["sandbox"], netns.as_str());
    let ips = result["ips"].as_array().unwrap();
    assert_eq!(ips.len(), 2, "{result}");
    assert_eq!(ips[0]["address"], "10.99.0.5/24");
    assert_eq!(ips[0]["interface"], 0);
    assert_eq!(ips[1]["interface"], 2);
    let plexus_address = ips[1]["address"].as_str().unwrap().to_string();
    let gateway = ips[1]["gateway"].as_str().unwrap().to_string();
    assert_eq!(
        result["routes"],
        json!([{"dst": "192.168.77.0/24", "gw": "10.99.0.254"},
               {"dst": "0.0.0.0/0", "gw": gateway}])
    );
    assert_eq!(
        result["dns"],
        json!({"nameservers": ["10.99.0.53", "10.0.0.53"], "domain": "side.example",
               "search": ["side.example", "pods.example"], "options": ["ndots:2"]})
    );
    // The pod has what the result says: both interfaces, their addresses
    // and MACs, macvlan's route and Plexus's default route.
    let (net1, net1_mac) = addresses(&pod.netns, "net1");
    assert_eq!(net1, ["10.99.0.5/24"]);
    assert_eq!(result["interfaces"][0]["mac"], net1_mac.as_str());
    let (eth0, eth0_mac) = addresses(&pod.netns, "eth0");
    assert_eq!(eth0, [plexus_address]);
    assert_eq!(result["interfaces"][2]["mac"], eth0_mac.as_str());
    let routes = ip_json(&pod.netns, &["route", "show"]);
    let route = |dst: &str| {
        routes
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["dst"] == dst)
            .unwrap_or_else(|| panic!("no route to {dst}: {routes}"))
            .clone()
    };
    assert_eq!(route("192.168.77.0/24")["dev"], "net1");
    assert_eq!(route("192.168.77.0/24")["gateway"], "10.99.0.254");
    assert_eq!(route("default")["dev"], "eth0");
    assert_eq!(route("default")["gateway"], gateway.as_str());
    // Traffic flows over the Plexus interface.
    wait_ping(&pod, &gateway);
    // CHECK of plexus-cni accepts the merged result, and notices when it
    // puts Plexus's address on another plugin's interface. (Debian's
    // macvlan 1.1.1 CHECK wants every address of a result on its own
    // interface, so a chain with a second interface cannot pass its CHECK
    // whatever plexus-cni returns; it is not run here.)
    let check = runtime.exec("CHECK", 1, Some(&result));
    assert!(check.ok, "{} {}", check.json, check.stderr);
    let mut misplaced = result.clone();
    misplaced["ips"][1]["interface"] = json!(0);
    let check = runtime.exec("CHECK", 1, Some(&misplaced));
    assert_eq!(check.code(), 103, "{}", check.json);
    assert!(check.json["details"].as_str().unwrap().contains("net1"));
    // DEL through the chain, in reverse, twice: both interfaces, the host
    // veth and the attachment are gone.
    for _ in 0..2 {
        if let Err(f) = runtime.del(Some(&result)) {
            panic!(
                "DEL failed in {}: {} {}",
                f.plugin, f.answer.json, f.answer.stderr
            );
        }
    }
    let links = ip_json(&pod.netns, &["link", "show"]);
    let left: Vec<&str> = links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["lo"], "{links}");
    assert!(!host_veths().contains(&pod.host_if));
    assert!(plexus
        .client()
        .attachment(&net.key("chained", "eth0"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmergeable_prev_result_changes_nothing() {
    // No API is needed: the prevResult is refused before anything else.
    let net = Network::new("http://127.0.0.1:9", "no-token", "nohost");
    let pod = sandbox(&net, "refused");
    let netns = format!("/var/run/netns/{}", pod.netns);
    let earlier = json!({
        "cniVersion": "0.3.1",
        "interfaces": [{"name": "net1", "sandbox": netns}],
        "ips": [{"version": "4", "interface": 0, "address": "10.99.0.5/24"}],
    });
    let add = |prev: Value| {
        net.call(
            "ADD",
            "refused",
            "eth0",
            Some(&pod.netns),
            "",
            &net.with(json!({"cniVersion": "1.0.0", "prevResult": prev})),
        )
    };
    let answer = add(earlier.clone());
    assert_eq!(answer.code(), 1, "{}", answer.json);
    assert!(answer.json["msg"].as_str().unwrap().contains("0.3.1"));
    let mut dangling = earlier;
    dangling["cniVersion"] = json!("1.0.0");
    dangling["ips"][0]["interface"] = json!(3);
    let answer = add(dangling);
    assert_eq!(answer.code(), 7, "{}", answer.json);
    assert!(!host_veths().contains(&pod.host_if));
    let links = ip_json(&pod.netns, &["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 1, "only lo: {links}");
}
