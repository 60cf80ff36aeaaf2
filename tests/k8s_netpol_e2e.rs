//! Kubernetes networking with real packets (issue 16): the classic nine
//! pods (namespaces x, y, z × pods a, b, c) attached through `plexus-cni`
//! in cluster mode on two hosts, probed on TCP and UDP 80 and 81 (see
//! `support/k8s_pods.rs`); NetworkPolicies applied with `plexus k8s apply
//! -f`, each case's 9×9 matrices checked against upstream's semantics
//! (`k8s_netpol_e2e/cases.rs`) and printed on a mismatch. Needs root.

#[path = "k8s_netpol_e2e/cases.rs"]
mod cases;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::k8s_pods::{ExtraLabels, PodCluster, PodId, Proto, HOSTS};

/// How long a policy change may take to show in the whole matrix.
const CONVERGE: Duration = Duration::from_secs(10);
/// How long a pod's label change may take to change its reachability.
const LABEL_FOLLOWS: Duration = Duration::from_secs(1);

fn everything(_: PodId, _: PodId, _: Proto, _: u16) -> bool {
    true
}

/// Starts the nine pods and checks the matrix without policies (issue 16's
/// first done-when): every pod reaches every pod across namespaces and
/// hosts on TCP and UDP 80 and 81, and every server saw the client's own
/// address.
async fn unpoliced() -> PodCluster {
    let pods = PodCluster::start().await;
    // One network: every pod of every namespace is on the cluster tenant's
    // subnet, its port labelled with its namespace and name; both hosts
    // have pods.
    let labels = pods.port_labels().await;
    for pod in &pods.pods {
        let port = &labels[&pod.id.label()];
        for (key, value) in [
            ("plexus.io/namespace", pod.id.ns),
            ("plexus.io/pod", pod.id.name),
        ] {
            assert_eq!(port.get(key).map(String::as_str), Some(value), "{port:?}");
        }
        assert!(pods.pod_cidr.contains(&std::net::IpAddr::V4(pod.ip)));
    }
    for host in 0..HOSTS {
        assert!(pods.pods.iter().filter(|p| p.host == host).count() >= 4);
    }
    // The first probes also wait for the agents to learn every port.
    if let Err(report) = pods.converge(Duration::from_secs(20), &everything).await {
        panic!("{report}\n{}", pods.cluster.logs());
    }
    // And again, now that everything is warm: all 288 probes pass at once.
    let matrix = pods.matrix().await;
    assert_eq!(matrix.outcomes.len(), 9 * 8 * 4);
    if let Err(report) = matrix.compare(&everything) {
        panic!("{report}");
    }
    pods
}

/// Applies `policies` (with `extra` labels) and waits for `expected`.
async fn step(
    pods: &PodCluster,
    policies: &str,
    extra: &ExtraLabels,
    expected: &dyn Fn(PodId, PodId, Proto, u16) -> bool,
) -> Result<Duration, String> {
    pods.apply(policies, extra)?;
    pods.converge(CONVERGE, expected).await
}

/// One cluster for everything (the cases run in sequence; a second
/// cluster probing at the same time would only make both slower): first
/// the matrix without policies, then every case.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_across_namespaces_and_hosts_as_network_policies_say() {
    let pods = unpoliced().await;
    let none = ExtraLabels::default();
    let mut failures = Vec::new();
    let all = cases::cases();
    for case in &all {
        // From no policy each time (which also checks that removing a
        // case's policies restores everything); no case's matrix is the
        // unpoliced one, so an apply that did nothing cannot pass.
        if let Err(report) = step(&pods, "", &none, &everything).await {
            failures.push(format!("before {}: removing policies: {report}", case.name));
            continue;
        }
        let policies = (case.policies)(&pods);
        let started = Instant::now();
        match step(&pods, &policies, &none, &case.expected).await {
            Ok(took) => eprintln!(
                "{}: as expected, {took:?} after the apply ({:?} with it)",
                case.name,
                started.elapsed()
            ),
            Err(report) => failures.push(format!("{}:\n{policies}\n{report}", case.name)),
        }
    }
    let changes = changes(&pods).await;
    for (name, result) in &changes {
        match result {
            Ok(()) => eprintln!("{name}: as expected"),
            Err(report) => failures.push(format!("{name}: {report}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        all.len() + changes.len(),
        failures.join("\n\n")
    );
}

/// The cases that change things while traffic runs, with their outcomes.
async fn changes(pods: &PodCluster) -> Vec<(&'static str, Result<(), String>)> {
    vec![
        (
            "policies added and removed while traffic runs",
            while_traffic_runs(pods).await,
        ),
        ("a policy changed in place", changed_in_place(pods).await),
        ("a live pod's labels changed", pod_relabelled(pods).await),
        (
            "a namespace's labels changed",
            namespace_relabelled(pods).await,
        ),
    ]
}

/// Deny-all ingress in x is added and removed while y and z keep talking
/// (TCP and UDP, probed every 20 ms): the matrix follows each change, and
/// no probe between y and z ever fails.
async fn while_traffic_runs(pods: &PodCluster) -> Result<(), String> {
    let none = ExtraLabels::default();
    step(pods, "", &none, &everything).await?;
    let stop = AtomicBool::new(false);
    let (ya, zb, zc, yb) = (
        pods.pod("y", "a").id.index,
        pods.pod("z", "b").id.index,
        pods.pod("z", "c").id.index,
        pods.pod("y", "b").id.index,
    );
    let traffic = async {
        let mut failed = Vec::new();
        let mut probes = 0;
        while !stop.load(Ordering::Relaxed) {
            for (from, to, proto, port) in [(ya, zb, Proto::Tcp, 80), (zc, yb, Proto::Udp, 81)] {
                let outcome = pods.probe(from, to, proto, port).await;
                probes += 1;
                if outcome != support::k8s_pods::Outcome::Allowed {
                    failed.push(format!("{from} → {to} {proto} {port}: {outcome:?}"));
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (probes, failed)
    };
    let changes = async {
        let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
";
        let added = step(pods, policy, &none, &|_, to, _, _| to.ns != "x").await;
        let removed = step(pods, "", &none, &everything).await;
        stop.store(true, Ordering::Relaxed);
        (added, removed)
    };
    let ((probes, failed), (added, removed)) = tokio::join!(traffic, changes);
    added.map_err(|r| format!("adding: {r}"))?;
    removed.map_err(|r| format!("removing: {r}"))?;
    if !failed.is_empty() || probes < 4 {
        return Err(format!(
            "traffic between y and z was disturbed ({probes} probes): {failed:?}"
        ));
    }
    Ok(())
}

/// One policy, applied again with another spec under the same name: the
/// matrix follows the new spec, nothing of the old one stays.
async fn changed_in_place(pods: &PodCluster) -> Result<(), String> {
    let none = ExtraLabels::default();
    step(pods, "", &none, &everything).await?;
    let policy = |ns: &str| {
        format!(
            "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-one-namespace, namespace: x}}
spec:
  podSelector: {{}}
  ingress:
  - from:
    - namespaceSelector: {{matchLabels: {{ns: {ns}}}}}
"
        )
    };
    step(pods, &policy("y"), &none, &|from, to, _, _| {
        to.ns != "x" || from.ns == "y"
    })
    .await
    .map_err(|r| format!("from y: {r}"))?;
    step(pods, &policy("z"), &none, &|from, to, _, _| {
        to.ns != "x" || from.ns == "z"
    })
    .await
    .map_err(|r| format!("then from z: {r}"))?;
    Ok(())
}

/// Probes `from` → `to` on TCP 80 every 20 ms (200 ms timeout) until it is
/// `allowed` (or not); how long after `since` that was (for a block: when
/// the first blocked probe started; the whole matrix is checked after), or
/// an error after `within`.
async fn follows(
    pods: &PodCluster,
    (from, to): (&str, &str),
    allowed: bool,
    since: Instant,
    within: Duration,
) -> Result<Duration, String> {
    let index = |label: &str| {
        let (ns, name) = label.split_once('/').unwrap();
        pods.pod(ns, name).id.index
    };
    let (from, to) = (index(from), index(to));
    loop {
        let started = Instant::now();
        let outcome = pods
            .probe_once(from, to, Proto::Tcp, 80, Duration::from_millis(200))
            .await;
        let done = match (&outcome, allowed) {
            (support::k8s_pods::Outcome::Allowed, true) => Some(Instant::now()),
            (support::k8s_pods::Outcome::Blocked, false) => Some(started),
            _ => None,
        };
        if let Some(at) = done {
            return Ok(at - since);
        }
        if since.elapsed() > within {
            return Err(format!(
                "still {outcome:?} after {:?}, wanted {}",
                since.elapsed(),
                if allowed { "allowed" } else { "blocked" }
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Labels of live pods change: y/c gains `role=client` (which x/a admits)
/// and x/b gains `quarantine=yes` (which a deny policy selects); each
/// pod's reachability follows within a second of the apply, and the whole
/// matrix with it; removing the labels restores it.
async fn pod_relabelled(pods: &PodCluster) -> Result<(), String> {
    let none = ExtraLabels::default();
    let policies = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: clients, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {}
      podSelector: {matchLabels: {role: client}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: quarantine, namespace: x}
spec:
  podSelector: {matchLabels: {quarantine: \"yes\"}}
  policyTypes: [Ingress]
";
    step(pods, policies, &none, &|_, to, _, _| !to.is("x", "a"))
        .await
        .map_err(|r| format!("before: {r}"))?;
    let labelled =
        ExtraLabels::default()
            .pod("y/c", "role", "client")
            .pod("x/b", "quarantine", "yes");
    pods.apply(policies, &labelled)?;
    let applied = Instant::now();
    let (admitted, quarantined) = tokio::join!(
        follows(pods, ("y/c", "x/a"), true, applied, LABEL_FOLLOWS),
        follows(pods, ("y/a", "x/b"), false, applied, LABEL_FOLLOWS)
    );
    let (admitted, quarantined) = (
        admitted.map_err(|r| format!("y/c → x/a once y/c is a client: {r}"))?,
        quarantined.map_err(|r| format!("y/a → x/b once x/b is quarantined: {r}"))?,
    );
    eprintln!("labels added: y/c admitted after {admitted:?}, x/b isolated after {quarantined:?}");
    let labelled_matrix = |from: PodId, to: PodId, _, _| {
        implies(to.is("x", "a"), from.is("y", "c")) && !to.is("x", "b")
    };
    pods.converge(CONVERGE, &labelled_matrix)
        .await
        .map_err(|r| format!("with the labels: {r}"))?;
    pods.apply(policies, &none)?;
    let applied = Instant::now();
    let (refused, released) = tokio::join!(
        follows(pods, ("y/c", "x/a"), false, applied, LABEL_FOLLOWS),
        follows(pods, ("y/a", "x/b"), true, applied, LABEL_FOLLOWS)
    );
    let (refused, released) = (
        refused.map_err(|r| format!("y/c → x/a once y/c is no client: {r}"))?,
        released.map_err(|r| format!("y/a → x/b once x/b is released: {r}"))?,
    );
    eprintln!("labels removed: y/c refused after {refused:?}, x/b reachable after {released:?}");
    pods.converge(CONVERGE, &|_, to, _, _| !to.is("x", "a"))
        .await
        .map_err(|r| format!("without the labels: {r}"))?;
    Ok(())
}

/// Namespace z gains `team=blue`, which x/a admits: z's pods reach it.
async fn namespace_relabelled(pods: &PodCluster) -> Result<(), String> {
    let none = ExtraLabels::default();
    let policy = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: blue-team, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: blue}}
";
    step(pods, policy, &none, &|_, to, _, _| !to.is("x", "a"))
        .await
        .map_err(|r| format!("before: {r}"))?;
    let blue = ExtraLabels::default().namespace("z", "team", "blue");
    let took = step(pods, policy, &blue, &|from, to, _, _| {
        implies(to.is("x", "a"), from.ns == "z")
    })
    .await
    .map_err(|r| format!("with z blue: {r}"))?;
    eprintln!("namespace z labelled: the matrix followed after {took:?}");
    step(pods, policy, &none, &|_, to, _, _| !to.is("x", "a"))
        .await
        .map_err(|r| format!("z no longer blue: {r}"))?;
    Ok(())
}

fn implies(a: bool, b: bool) -> bool {
    !a || b
}
