//! NetworkPolicy semantics through the real engine: the classic namespaces
//! x, y, z with pods a, b, c each, on one bridge; each case is a policy set
//! translated by `k8s::policy::translate`, and the full 9×9 matrix of new
//! TCP connections on port 80 and 81 decided by `vswitch::engine::simulate`
//! against what upstream's semantics say (printed on a mismatch).

use std::collections::BTreeMap;

use k8s::pods::port_labels;
use k8s::policy::{translate, Cluster};
use k8s::types::NetworkPolicy;
use nsdb::{Bridge, DeviceType, MacAddr, Port, Record};
use uuid::Uuid;
use vswitch::engine::{simulate, NothingLearned};
use vswitch::probe::{Probe, ProbeProtocol};
use vswitch::snapshot::Topology;

const TENANT: Uuid = Uuid::from_u128(0x7e);
const BRIDGE: Uuid = Uuid::from_u128(0xb0);
const HOST: Uuid = Uuid::from_u128(0x40);
const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];

/// A pod: namespace, name, its number (1-9: address 10.0.0.n, MAC …:n).
#[derive(Clone, Copy)]
struct Pod {
    ns: &'static str,
    name: &'static str,
    n: u8,
}

impl Pod {
    fn port(&self) -> Uuid {
        Uuid::from_u128(0x100 + u128::from(self.n))
    }
    fn mac(&self) -> [u8; 6] {
        [2, 0, 0, 0, 0, self.n]
    }
    fn ip(&self) -> String {
        format!("10.0.0.{}", self.n)
    }
    /// The Pod object: label `pod`, named container ports `serve-80` and
    /// `serve-81` (TCP), and `web` (TCP) on 80 for pods a, on 81 for the others.
    fn object(&self) -> k8s::objects::Pod {
        let web = if self.name == "a" { 80 } else { 81 };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": self.name, "namespace": self.ns, "labels": {"pod": self.name}},
            "spec": {"containers": [{"name": "c", "ports": [
                {"name": "serve-80", "containerPort": 80},
                {"name": "serve-81", "containerPort": 81},
                {"name": "web", "containerPort": web}
            ]}]}
        }))
        .unwrap()
    }
    fn label(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

fn pods() -> Vec<Pod> {
    let mut all = Vec::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        for (j, name) in PODS.iter().enumerate() {
            all.push(Pod {
                ns,
                name,
                n: (i * 3 + j + 1) as u8,
            });
        }
    }
    all
}

fn topology(policies: &[NetworkPolicy]) -> Topology {
    Topology::build(1, &records(policies, false))
}

const ROUTER: Uuid = Uuid::from_u128(0x70);
const ROUTER_PORT: Uuid = Uuid::from_u128(0x71);
const BRIDGE_PORT: Uuid = Uuid::from_u128(0x72);
const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const SERVICE_IP: &str = "10.96.0.10";

/// The cluster router linked to the pods' bridge, with a Service at
/// 10.96.0.10:80 whose one endpoint is y/b (10.0.0.5) port 80.
fn service_records(cluster: &Cluster) -> Vec<Record> {
    use nsdb::{
        LbAlgorithm, LbProtocol, LoadBalancer, MemberHealth, Pool, PoolMember, Router,
        SessionAffinity, Vip,
    };
    let (lb, pool, vip) = (
        Uuid::from_u128(0x80),
        Uuid::from_u128(0x81),
        Uuid::from_u128(0x82),
    );
    let port = |id: Uuid, device: Uuid, device_type: DeviceType, mac: [u8; 6], peer: Uuid| Port {
        id,
        revision: 1,
        device_id: device,
        device_type,
        mac: MacAddr(mac),
        address: None,
        extra_addresses: Vec::new(),
        peer_id: Some(peer),
        host_id: None,
        interface_name: None,
        inbound_chain_id: None,
        outbound_chain_id: None,
        allowed_addresses: vec![],
        tunnel_key: 100 + (id.as_u128() as u32),
        vtep: None,
        labels: Default::default(),
    };
    let mut router_port = port(
        ROUTER_PORT,
        ROUTER,
        DeviceType::Router,
        ROUTER_MAC,
        BRIDGE_PORT,
    );
    router_port.address = Some("10.0.0.254/24".parse().unwrap());
    router_port.outbound_chain_id = Some(cluster.deferred_chain());
    vec![
        Record::Router(Router {
            id: ROUTER,
            revision: 1,
            tenant_id: TENANT,
            name: "cluster".into(),
            admin_state_up: true,
            inbound_chain_id: None,
            outbound_chain_id: None,
        }),
        Record::Port(router_port),
        Record::Port(port(
            BRIDGE_PORT,
            BRIDGE,
            DeviceType::Bridge,
            [2, 0, 0, 0, 0, 0xfd],
            ROUTER_PORT,
        )),
        Record::IpAddressGroup(nsdb::IpAddressGroup {
            id: cluster.services_group(),
            revision: 1,
            tenant_id: TENANT,
            name: "services".into(),
            addresses: vec![format!("{SERVICE_IP}/32").parse().unwrap()],
            selector: None,
        }),
        Record::LoadBalancer(LoadBalancer {
            id: lb,
            revision: 1,
            tenant_id: TENANT,
            router_id: ROUTER,
            name: "services".into(),
            admin_state_up: true,
        }),
        Record::Pool(Pool {
            id: pool,
            revision: 1,
            tenant_id: TENANT,
            load_balancer_id: lb,
            name: "web".into(),
            algorithm: LbAlgorithm::RoundRobin,
            admin_state_up: true,
        }),
        Record::Vip(Vip {
            id: vip,
            revision: 1,
            tenant_id: TENANT,
            load_balancer_id: lb,
            name: "web".into(),
            pool_id: pool,
            address: SERVICE_IP.parse().unwrap(),
            protocol: LbProtocol::Tcp,
            port: 80,
            session_affinity: SessionAffinity::None,
            affinity_timeout_s: 60,
            admin_state_up: true,
        }),
        Record::PoolMember(PoolMember {
            id: Uuid::from_u128(0x83),
            revision: 1,
            tenant_id: TENANT,
            pool_id: pool,
            address: "10.0.0.5".parse().unwrap(),
            port: 80,
            weight: 1,
            admin_state_up: true,
            health: MemberHealth::Unknown,
        }),
    ]
}

fn records(policies: &[NetworkPolicy], with_service: bool) -> Vec<Record> {
    let cluster = Cluster {
        tenant: TENANT,
        nodes: None,
        services: with_service.then(|| {
            Cluster {
                tenant: TENANT,
                nodes: None,
                services: None,
            }
            .services_group()
        }),
    };
    let k8s_pods: Vec<k8s::objects::Pod> = pods().iter().map(Pod::object).collect();
    let translation = translate(&cluster, policies, &k8s_pods);
    assert_eq!(translation.refused, vec![], "every policy translated");
    let mut records = translation.records();
    records.push(Record::Bridge(Bridge {
        id: BRIDGE,
        revision: 1,
        tenant_id: TENANT,
        name: "pods".into(),
        admin_state_up: true,
        inbound_chain_id: None,
        outbound_chain_id: None,
        tunnel_key: 1,
    }));
    for pod in pods() {
        let namespace: k8s::objects::Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": pod.ns, "labels": {"ns": pod.ns}}
        }))
        .unwrap();
        let labels = port_labels(&pod.object(), Some(&namespace));
        records.push(Record::Port(Port {
            id: pod.port(),
            revision: 1,
            device_id: BRIDGE,
            device_type: DeviceType::Bridge,
            mac: MacAddr(pod.mac()),
            address: None,
            extra_addresses: Vec::new(),
            peer_id: None,
            host_id: Some(HOST),
            interface_name: Some(format!("veth{}", pod.n)),
            inbound_chain_id: Some(cluster.egress_chain()),
            outbound_chain_id: Some(cluster.ingress_chain()),
            allowed_addresses: vec![nsdb::AllowedAddress {
                mac: MacAddr(pod.mac()),
                ip: format!("{}/32", pod.ip()).parse().unwrap(),
            }],
            tunnel_key: u32::from(pod.n) + 1,
            vtep: None,
            labels,
        }));
    }
    if with_service {
        records.extend(service_records(&cluster));
    }
    records
}

/// Whether a new TCP connection from `from` to `to` on `port` is delivered.
fn reaches(topo: &Topology, from: Pod, to: Pod, port: u16) -> bool {
    let frame = Probe {
        src_mac: from.mac(),
        dst_mac: to.mac(),
        src_ip: from.ip().parse().unwrap(),
        dst_ip: to.ip().parse().unwrap(),
        protocol: ProbeProtocol::Tcp,
        src_port: 40_000,
        dst_port: port,
        ttl: 64,
    }
    .frame()
    .unwrap();
    let sim = simulate(topo, &NothingLearned, from.port(), &frame);
    sim.outputs.iter().any(|o| o.egress.port == to.port())
}

/// Checks the matrix on ports 80 and 81 against `expected(from, to, port)`;
/// prints both matrices on a mismatch.
fn check(case: &str, policies: &[NetworkPolicy], expected: impl Fn(Pod, Pod, u16) -> bool) {
    let topo = topology(policies);
    let mut wrong = Vec::new();
    let mut matrices: BTreeMap<u16, String> = BTreeMap::new();
    for port in [80, 81] {
        let mut text =
            format!("port {port} (row: from, column: to; . allowed, X blocked, ! wrong)\n     ");
        for to in pods() {
            text.push_str(&format!("{:>4}", to.label()));
        }
        text.push('\n');
        for from in pods() {
            text.push_str(&format!("{:>4} ", from.label()));
            for to in pods() {
                if from.n == to.n {
                    text.push_str("   -");
                    continue;
                }
                let got = reaches(&topo, from, to, port);
                let want = expected(from, to, port);
                if got != want {
                    wrong.push(format!(
                        "{} → {} :{port}: got {got}, want {want}",
                        from.label(),
                        to.label()
                    ));
                }
                text.push_str(match (got == want, got) {
                    (false, _) => "   !",
                    (true, true) => "   .",
                    (true, false) => "   X",
                });
            }
            text.push('\n');
        }
        matrices.insert(port, text);
    }
    assert!(
        wrong.is_empty(),
        "{case}: {} wrong\n{}\n{}",
        wrong.len(),
        wrong.join("\n"),
        matrices.values().cloned().collect::<Vec<_>>().join("\n")
    );
}

fn policy(json: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json).expect("a NetworkPolicy")
}

#[test]
fn without_policies_every_pod_reaches_every_pod() {
    check("no policy", &[], |_, _, _| true);
}

#[test]
fn deny_all_ingress_isolates_a_namespace() {
    let deny = policy(serde_json::json!({
        "metadata": {"name": "deny", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
    }));
    check("deny-all ingress in x", &[deny], |_, to, _| to.ns != "x");
}

#[test]
fn deny_all_egress_silences_a_namespace() {
    let deny = policy(serde_json::json!({
        "metadata": {"name": "deny", "namespace": "z"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"]}
    }));
    check("deny-all egress in z", &[deny], |from, _, _| from.ns != "z");
}

#[test]
fn allow_from_a_namespace_by_label() {
    let allow = policy(serde_json::json!({
        "metadata": {"name": "from-y", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}
    }));
    check("x/a allows namespace y", &[allow], |from, to, _| {
        to.label() != "x/a" || from.ns == "y"
    });
}

#[test]
fn namespace_and_pod_selector_in_one_peer_is_an_and_in_two_peers_an_or() {
    let and = policy(serde_json::json!({
        "metadata": {"name": "and", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                                        "podSelector": {"matchLabels": {"pod": "b"}}}]}]}
    }));
    check("one peer: y/b only", &[and], |from, to, _| {
        to.label() != "x/a" || from.label() == "y/b"
    });
    let or = policy(serde_json::json!({
        "metadata": {"name": "or", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}},
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                                       {"podSelector": {"matchLabels": {"pod": "b"}}}]}]}
    }));
    check("two peers: all of y, or x/b", &[or], |from, to, _| {
        to.label() != "x/a" || from.ns == "y" || from.label() == "x/b"
    });
}

#[test]
fn ports_and_port_ranges_limit_what_is_allowed() {
    let port80 = policy(serde_json::json!({
        "metadata": {"name": "web", "namespace": "x"},
        "spec": {"podSelector": {},
                 "ingress": [{"ports": [{"protocol": "TCP", "port": 80}]}]}
    }));
    check("x takes TCP 80 from anyone", &[port80], |_, to, port| {
        to.ns != "x" || port == 80
    });
    let range = policy(serde_json::json!({
        "metadata": {"name": "range", "namespace": "y"},
        "spec": {"podSelector": {"matchLabels": {"pod": "c"}},
                 "ingress": [{"ports": [{"port": 81, "endPort": 90}]}]}
    }));
    check("y/c takes 81-90", &[range], |_, to, port| {
        to.label() != "y/c" || port == 81
    });
    let udp_only = policy(serde_json::json!({
        "metadata": {"name": "udp", "namespace": "z"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"protocol": "UDP", "port": 80}]}]}
    }));
    check("z takes only UDP", &[udp_only], |_, to, _| to.ns != "z");
}

#[test]
fn ip_blocks_allow_their_addresses_but_their_exceptions() {
    let block = policy(serde_json::json!({
        "metadata": {"name": "block", "namespace": "x"},
        "spec": {"podSelector": {},
                 "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/28", "except": ["10.0.0.4/30"]}}]}]}
    }));
    // 10.0.0.4/30 holds 10.0.0.4-7: y/a, y/b, y/c, z/a.
    check(
        "x from 10.0.0.0/28 except 10.0.0.4/30",
        &[block],
        |from, to, _| to.ns != "x" || !(4..=7).contains(&from.n),
    );
}

#[test]
fn allowed_traffic_is_the_union_of_every_selecting_policy() {
    let deny = policy(serde_json::json!({
        "metadata": {"name": "deny", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}
    }));
    let from_z = policy(serde_json::json!({
        "metadata": {"name": "from-z", "namespace": "x"},
        "spec": {"podSelector": {"matchLabels": {"pod": "b"}},
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}
    }));
    let same_ns = policy(serde_json::json!({
        "metadata": {"name": "same", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]}
    }));
    check(
        "deny + z→x/b + x→x",
        &[deny, from_z, same_ns],
        |from, to, _| to.ns != "x" || from.ns == "x" || (to.name == "b" && from.ns == "z"),
    );
}

#[test]
fn an_egress_policy_allows_only_its_peers() {
    let to_y = policy(serde_json::json!({
        "metadata": {"name": "to-y", "namespace": "z"},
        "spec": {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                             "ports": [{"port": 81}]}]}
    }));
    check("z/a reaches only y on 81", &[to_y], |from, to, port| {
        from.label() != "z/a" || (to.ns == "y" && port == 81)
    });
}

#[test]
fn named_ports_resolve_per_destination_pod() {
    // Ingress to x on the port each pod calls `web`: 80 on x/a, 81 on x/b
    // and x/c; and on `serve-81`.
    let web = policy(serde_json::json!({
        "metadata": {"name": "web", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "web"}]}]}
    }));
    check(
        "ingress to x on its named port web",
        &[web],
        |_, to, port| to.ns != "x" || (to.name == "a") == (port == 80),
    );
    // Egress from y to pods' `serve-81` only.
    let out = policy(serde_json::json!({
        "metadata": {"name": "out", "namespace": "y"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": "serve-81"}]}]}
    }));
    check("egress from y to serve-81", &[out], |from, _, port| {
        from.ns != "y" || port == 81
    });
    // A name no pod declares allows nothing (the pods stay isolated).
    let nothing = policy(serde_json::json!({
        "metadata": {"name": "nothing", "namespace": "z"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "gopher"}]}]}
    }));
    check(
        "ingress to z on an undeclared name",
        &[nothing],
        |_, to, _| to.ns != "z",
    );
}

#[test]
fn end_port_ranges_and_kubernetes_namespace_names() {
    let range = policy(serde_json::json!({
        "metadata": {"name": "range", "namespace": "y"},
        "spec": {"podSelector": {"matchLabels": {"pod": "b"}},
                 "ingress": [{"from": [{"namespaceSelector":
                                {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}],
                              "ports": [{"port": 81, "endPort": 90}]}]}
    }));
    check("y/b from x on 81-90", &[range], |from, to, port| {
        to.label() != "y/b" || (from.ns == "x" && port == 81)
    });
}

/// Whether a new TCP connection from `from` to the Service (10.96.0.10:80,
/// endpoint y/b) reaches y/b, and with which source address.
fn reaches_service(topo: &Topology, from: Pod) -> Option<std::net::IpAddr> {
    let frame = Probe {
        src_mac: from.mac(),
        dst_mac: ROUTER_MAC,
        src_ip: from.ip().parse().unwrap(),
        dst_ip: SERVICE_IP.parse().unwrap(),
        protocol: ProbeProtocol::Tcp,
        src_port: 40_000,
        dst_port: 80,
        ttl: 64,
    }
    .frame()
    .unwrap();
    let sim = simulate(topo, &NothingLearned, from.port(), &frame);
    let member = Uuid::from_u128(0x100 + 5);
    sim.outputs
        .iter()
        .find(|o| o.egress.port == member)
        .map(|o| o.rewrite.ip_src.unwrap_or(from.ip().parse().unwrap()))
}

/// Policies apply to Service traffic after the translation, as upstream
/// says: egress by the endpoint's labels, ingress by the client's own
/// address (no NAT on the way).
#[test]
fn policies_see_service_traffic_after_the_translation() {
    let check_service = |case: &str, policies: &[NetworkPolicy], expected: &dyn Fn(Pod) -> bool| {
        let topo = Topology::build(1, &records(policies, true));
        let mut wrong = Vec::new();
        for from in pods() {
            let got = reaches_service(&topo, from);
            if let Some(source) = got {
                if from.label() != "y/b" {
                    assert_eq!(
                        source.to_string(),
                        from.ip(),
                        "{case}: the endpoint sees the client"
                    );
                }
            }
            if got.is_some() != expected(from) {
                wrong.push(format!(
                    "{} → service: got {:?}, want {}",
                    from.label(),
                    got,
                    expected(from)
                ));
            }
        }
        assert!(wrong.is_empty(), "{case}:\n{}", wrong.join("\n"));
    };
    check_service("no policy", &[], &|_| true);
    let deny_x = policy(serde_json::json!({
        "metadata": {"name": "deny", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"]}
    }));
    check_service("deny-all egress in x", &[deny_x], &|from| from.ns != "x");
    // Egress by the endpoint's labels: x may reach y's b (the endpoint),
    // z only c pods (not the endpoint).
    let x_to_b = policy(serde_json::json!({
        "metadata": {"name": "to-b", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "b"}}}],
                             "ports": [{"port": 80}]}]}
    }));
    let z_to_c = policy(serde_json::json!({
        "metadata": {"name": "to-c", "namespace": "z"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"],
                 "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pod": "c"}}}]}]}
    }));
    check_service("egress by the endpoint", &[x_to_b, z_to_c], &|from| {
        from.ns != "z"
    });
    // Ingress on the endpoint by the client's namespace.
    let from_x = policy(serde_json::json!({
        "metadata": {"name": "from-x", "namespace": "y"},
        "spec": {"podSelector": {"matchLabels": {"pod": "b"}},
                 "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "x"}}}]}]}
    }));
    check_service("ingress on the endpoint from x", &[from_x], &|from| {
        from.ns == "x"
    });
}

/// An SCTP packet (INIT-sized common header + chunk) from `from` to `to`
/// on `port`, with correct IPv4 and SCTP checksums.
fn sctp_frame(from: Pod, to: Pod, port: u16) -> Vec<u8> {
    let mut frame = Probe {
        src_mac: from.mac(),
        dst_mac: to.mac(),
        src_ip: from.ip().parse().unwrap(),
        dst_ip: to.ip().parse().unwrap(),
        protocol: ProbeProtocol::Udp,
        src_port: 40_000,
        dst_port: port,
        ttl: 64,
    }
    .frame()
    .unwrap();
    // The UDP probe's header becomes SCTP's: same ports, then a
    // verification tag and the CRC32c over the packet.
    let ip = 14;
    frame[ip + 9] = 132;
    frame[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let sum = vswitch::wire::checksum::checksum(&frame[ip..ip + 20]);
    frame[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    let l4 = ip + 20;
    frame[l4 + 4..l4 + 12].copy_from_slice(&[0; 8]);
    let crc = vswitch::wire::sctp::crc32c(&frame[l4..]);
    frame[l4 + 8..l4 + 12].copy_from_slice(&crc.to_le_bytes());
    frame
}

/// SCTP ports are read like TCP's and UDP's: a policy allowing SCTP on
/// 80 lets SCTP to 80 through, not to 81 and not TCP to 80.
#[test]
fn sctp_ports_are_policed() {
    let sctp_80 = policy(serde_json::json!({
        "metadata": {"name": "sctp", "namespace": "y"},
        "spec": {"podSelector": {}, "ingress": [{"ports": [{"protocol": "SCTP", "port": 80}]}]}
    }));
    let topo = topology(&[sctp_80]);
    let sctp_reaches = |from: Pod, to: Pod, port: u16| {
        let sim = simulate(
            &topo,
            &NothingLearned,
            from.port(),
            &sctp_frame(from, to, port),
        );
        sim.outputs.iter().any(|o| o.egress.port == to.port())
    };
    let all = pods();
    let (x_a, y_b) = (all[0], all[4]);
    assert_eq!(y_b.label(), "y/b");
    assert!(sctp_reaches(x_a, y_b, 80), "SCTP to 80 is allowed");
    assert!(!sctp_reaches(x_a, y_b, 81), "SCTP to 81 is not");
    assert!(!reaches(&topo, x_a, y_b, 80), "TCP to 80 is not");
    assert!(sctp_reaches(y_b, x_a, 81), "x is not isolated");
}

/// An ARP frame from `from`: a broadcast request for `target`'s address,
/// or (with `reply_to`) its answer to that pod.
fn arp_frame(from: Pod, target: Pod, reply_to: bool) -> Vec<u8> {
    let (dst_mac, op, target_mac) = if reply_to {
        (target.mac(), 2u16, target.mac())
    } else {
        ([0xff; 6], 1, [0; 6])
    };
    let ip = |pod: Pod| pod.ip().parse::<std::net::Ipv4Addr>().unwrap().octets();
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&from.mac());
    frame.extend_from_slice(&0x0806u16.to_be_bytes());
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    frame.extend_from_slice(&op.to_be_bytes());
    frame.extend_from_slice(&from.mac());
    frame.extend_from_slice(&ip(from));
    frame.extend_from_slice(&target_mac);
    frame.extend_from_slice(&ip(target));
    frame
}

/// Policies are about IP: a pod isolated both ways still resolves its
/// peers' addresses (the bridge answers for them) and its ARP answers
/// reach the asker, else it could not reach even what its policies allow
/// once its neighbour cache forgets.
#[test]
fn isolated_pods_still_resolve_addresses() {
    let deny_all = policy(serde_json::json!({
        "metadata": {"name": "deny", "namespace": "x"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    }));
    let topo = topology(&[deny_all]);
    let all = pods();
    let (x_a, y_a) = (all[0], all[3]);
    for (from, to) in [(x_a, y_a), (y_a, x_a)] {
        let sim = simulate(
            &topo,
            &NothingLearned,
            from.port(),
            &arp_frame(from, to, false),
        );
        assert!(
            sim.generated
                .iter()
                .any(|g| g.egress.port == from.port() && g.frame[12..14] == [8, 6]),
            "{} asking for {}: {:?} {:?}",
            from.label(),
            to.label(),
            sim.drops,
            sim.trace
        );
        let sim = simulate(
            &topo,
            &NothingLearned,
            from.port(),
            &arp_frame(from, to, true),
        );
        assert!(
            sim.outputs.iter().any(|o| o.egress.port == to.port()),
            "{} answering {}: {:?}",
            from.label(),
            to.label(),
            sim.drops
        );
    }
    // IP stays isolated.
    assert!(!reaches(&topo, y_a, x_a, 80));
    assert!(!reaches(&topo, x_a, y_a, 80));
}
