//! The NetworkPolicy cases: each a policy set and the reachability it
//! must give, modelled on the Kubernetes e2e netpol suite and Cyclonus.
//! The expectations are written from the upstream semantics
//! (networking.k8s.io/v1 and its documentation), not from Plexus's
//! translation:
//!
//! - a pod is isolated for ingress (egress) once any policy of that type
//!   selects it; then only what some rule of some selecting policy allows
//!   gets through (the union); a connection needs both the sender's egress
//!   and the receiver's ingress to allow it;
//! - `policyTypes` left out means Ingress, plus Egress when the policy has
//!   egress rules;
//! - a peer's `podSelector` alone means pods of the policy's namespace, a
//!   `namespaceSelector` alone all pods of those namespaces, both in one
//!   peer the pods matching both; `{}` selects all; an empty or missing
//!   `from`/`to` or `ports` list matches everything;
//! - a port without protocol is TCP; a port without number is every port of
//!   the protocol; `endPort` makes a range; a named port is resolved
//!   against the destination pod's container ports of that protocol
//!   (matching nothing where the pod has no such name);
//! - traffic of a pod to itself is not probed.
//!
//! The pods: x/a, x/b, x/c, y/a, … z/c, labelled `pod: <name>`; the
//! namespaces labelled `ns: <name>`; named container ports `serve-80-tcp`,
//! `serve-81-tcp`, `serve-80-udp`, `serve-81-udp`, and `web` (TCP 80 on the
//! pods named a, TCP 81 on b and c).

use crate::support::k8s_pods::{PodCluster, PodId, Proto};

/// Whether a probe from a pod to a pod on (protocol, port) gets through.
pub type Expect = fn(PodId, PodId, Proto, u16) -> bool;

/// One case: its policies (a YAML stream; built from the running cluster
/// where addresses are needed) and the matrix they must give.
pub struct Case {
    /// What it checks.
    pub name: &'static str,
    /// The NetworkPolicies.
    pub policies: fn(&PodCluster) -> String,
    /// The matrix.
    pub expected: Expect,
}

fn tcp(proto: Proto, port: u16, wanted: u16) -> bool {
    proto == Proto::Tcp && port == wanted
}

fn udp(proto: Proto, port: u16, wanted: u16) -> bool {
    proto == Proto::Udp && port == wanted
}

/// `a ⇒ b`.
fn implies(a: bool, b: bool) -> bool {
    !a || b
}

const DENY_INGRESS_X: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
";

const DENY_EGRESS_X: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-egress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
";

/// Every case, in the order they run.
pub fn cases() -> Vec<Case> {
    vec![
        // Default deny.
        Case {
            name: "deny all ingress in x",
            policies: |_| DENY_INGRESS_X.into(),
            expected: |_, to, _, _| to.ns != "x",
        },
        Case {
            name: "deny all egress in x",
            policies: |_| DENY_EGRESS_X.into(),
            expected: |from, _, _, _| from.ns != "x",
        },
        Case {
            name: "deny all ingress and egress in x",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
"
                .into()
            },
            expected: |from, to, _, _| from.ns != "x" && to.ns != "x",
        },
        Case {
            name: "deny all ingress in every namespace",
            policies: |_| {
                ["x", "y", "z"]
                    .iter()
                    .map(|ns| DENY_INGRESS_X.replace("namespace: x", &format!("namespace: {ns}")))
                    .collect::<Vec<_>>()
                    .join("---\n")
            },
            expected: |_, _, _, _| false,
        },
        Case {
            name: "deny ingress in x and deny egress in z, together",
            policies: |_| {
                format!(
                    "{DENY_INGRESS_X}---{}",
                    DENY_EGRESS_X.replace("namespace: x", "namespace: z")
                )
            },
            expected: |from, to, _, _| to.ns != "x" && from.ns != "z",
        },
        // Allow-all beside deny: the union wins.
        Case {
            name: "allow all ingress beside deny all ingress (x), y still denied",
            policies: |_| {
                format!(
                    "{DENY_INGRESS_X}---{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow-all, namespace: x}}
spec:
  podSelector: {{}}
  ingress: [{{}}]
  policyTypes: [Ingress]
",
                    DENY_INGRESS_X.replace("namespace: x", "namespace: y")
                )
            },
            expected: |_, to, _, _| to.ns != "y",
        },
        Case {
            name: "allow all egress beside deny all egress (x), y still denied",
            policies: |_| {
                format!(
                    "{DENY_EGRESS_X}---{}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow-all, namespace: x}}
spec:
  podSelector: {{}}
  egress: [{{}}]
  policyTypes: [Egress]
",
                    DENY_EGRESS_X.replace("namespace: x", "namespace: y")
                )
            },
            expected: |from, _, _, _| from.ns != "y",
        },
        // Ingress peers.
        Case {
            name: "x/a from pods labelled pod=b of its own namespace",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector: {matchLabels: {pod: b}}
"
                .into()
            },
            expected: |from, to, _, _| implies(to.is("x", "a"), from.is("x", "b")),
        },
        Case {
            name: "x from pods of its own namespace (podSelector {})",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: same-namespace, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - podSelector: {}
"
                .into()
            },
            expected: |from, to, _, _| implies(to.ns == "x", from.ns == "x"),
        },
        Case {
            name: "x/a from namespace y by label",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
"
                .into()
            },
            expected: |from, to, _, _| implies(to.is("x", "a"), from.ns == "y"),
        },
        Case {
            name: "x from every other namespace (matchExpressions NotIn)",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: not-x, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
"
                .into()
            },
            expected: |from, to, _, _| implies(to.ns == "x", from.ns != "x"),
        },
        Case {
            name: "x/a from y/b: namespaceSelector and podSelector in one peer",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: and, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: b}}
"
                .into()
            },
            expected: |from, to, _, _| implies(to.is("x", "a"), from.is("y", "b")),
        },
        Case {
            name: "x/a from all of y or x/b: the same selectors as two peers",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: or, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    - podSelector: {matchLabels: {pod: b}}
"
                .into()
            },
            expected: |from, to, _, _| {
                implies(to.is("x", "a"), from.ns == "y" || from.is("x", "b"))
            },
        },
        Case {
            name: "x/a from pods b and c of x (podSelector matchExpressions In)",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: in-b-c, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - podSelector:
        matchExpressions: [{key: pod, operator: In, values: [b, c]}]
"
                .into()
            },
            expected: |from, to, _, _| implies(to.is("x", "a"), from.ns == "x" && from.name != "a"),
        },
        Case {
            name: "x/a from pods b outside x (expressions on both selectors of one peer)",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-elsewhere, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector:
        matchExpressions: [{key: ns, operator: NotIn, values: [x]}]
      podSelector:
        matchExpressions: [{key: pod, operator: In, values: [b]}]
"
                .into()
            },
            expected: |from, to, _, _| implies(to.is("x", "a"), from.ns != "x" && from.name == "b"),
        },
        Case {
            name: "deny x, then x/a from pods c of every namespace (namespaceSelector {})",
            policies: |_| {
                format!(
                    "{DENY_INGRESS_X}---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: from-c, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  ingress:
  - from:
    - namespaceSelector: {{}}
      podSelector: {{matchLabels: {{pod: c}}}}
"
                )
            },
            expected: |from, to, _, _| implies(to.ns == "x", to.name == "a" && from.name == "c"),
        },
        // Ports and protocols.
        Case {
            name: "x/a on TCP 80 only, from anywhere",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: tcp-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - {port: 80, protocol: TCP}
"
                .into()
            },
            expected: |_, to, proto, port| implies(to.is("x", "a"), tcp(proto, port, 80)),
        },
        Case {
            name: "x/a on port 81 without a protocol (TCP) from every namespace",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: port-81, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {}
    ports:
    - port: 81
"
                .into()
            },
            expected: |_, to, proto, port| implies(to.is("x", "a"), tcp(proto, port, 81)),
        },
        Case {
            name: "x/a on every UDP port (protocol without port)",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: udp, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - protocol: UDP
"
                .into()
            },
            expected: |_, to, proto, _| implies(to.is("x", "a"), proto == Proto::Udp),
        },
        Case {
            name: "x/a on UDP 81 from namespace y",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: udp-81-from-y, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    ports:
    - {protocol: UDP, port: 81}
"
                .into()
            },
            expected: |from, to, proto, port| {
                implies(to.is("x", "a"), from.ns == "y" && udp(proto, port, 81))
            },
        },
        Case {
            name: "x/a on TCP 80 and UDP 81 (two ports in one rule)",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: two-ports, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - {port: 80, protocol: TCP}
    - {port: 81, protocol: UDP}
"
                .into()
            },
            expected: |_, to, proto, port| {
                implies(
                    to.is("x", "a"),
                    tcp(proto, port, 80) || udp(proto, port, 81),
                )
            },
        },
        Case {
            name: "x/a with an empty from list: every source, UDP 81 only",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: empty-from, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: []
    ports:
    - {port: 81, protocol: UDP}
"
                .into()
            },
            expected: |_, to, proto, port| implies(to.is("x", "a"), udp(proto, port, 81)),
        },
        Case {
            name: "x on the named port serve-81-tcp",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-tcp, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports:
    - port: serve-81-tcp
"
                .into()
            },
            expected: |_, to, proto, port| implies(to.ns == "x", tcp(proto, port, 81)),
        },
        Case {
            name: "x on the named port serve-80-udp",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-udp, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports:
    - {port: serve-80-udp, protocol: UDP}
"
                .into()
            },
            expected: |_, to, proto, port| implies(to.ns == "x", udp(proto, port, 80)),
        },
        Case {
            name: "x on the named port web: 80 on x/a, 81 on x/b and x/c",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-web, namespace: x}
spec:
  podSelector: {}
  ingress:
  - ports:
    - port: web
"
                .into()
            },
            expected: |_, to, proto, port| {
                let web = if to.name == "a" { 80 } else { 81 };
                implies(to.ns == "x", tcp(proto, port, web))
            },
        },
        Case {
            name: "x/a on a TCP port name asked for as UDP: nothing",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-wrong-protocol, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - {port: serve-80-tcp, protocol: UDP}
"
                .into()
            },
            expected: |_, to, _, _| !to.is("x", "a"),
        },
        Case {
            name: "x/a on TCP 81-9000 (endPort)",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - {protocol: TCP, port: 81, endPort: 9000}
"
                .into()
            },
            expected: |_, to, proto, port| implies(to.is("x", "a"), tcp(proto, port, 81)),
        },
        Case {
            name: "x/a on UDP 70-80 (endPort, the range's last port)",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: range-udp, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - {protocol: UDP, port: 70, endPort: 80}
"
                .into()
            },
            expected: |_, to, proto, port| implies(to.is("x", "a"), udp(proto, port, 80)),
        },
        // ipBlock.
        Case {
            name: "x/a from the pod subnet except y/b (ipBlock with except)",
            policies: |c| {
                format!(
                    "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: cidr-except, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  ingress:
  - from:
    - ipBlock:
        cidr: {}
        except: [{}/32]
",
                    c.pod_cidr,
                    c.pod("y", "b").ip
                )
            },
            expected: |from, to, _, _| implies(to.is("x", "a"), !from.is("y", "b")),
        },
        Case {
            name: "x/a from z/c's address only (ipBlock /32)",
            policies: |c| {
                format!(
                    "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: one-address, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  ingress:
  - from:
    - ipBlock: {{cidr: {}/32}}
",
                    c.pod("z", "c").ip
                )
            },
            expected: |from, to, _, _| implies(to.is("x", "a"), from.is("z", "c")),
        },
        // Egress.
        Case {
            name: "x to namespace y only",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-y, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: y}}
"
                .into()
            },
            expected: |from, to, _, _| implies(from.ns == "x", to.ns == "y"),
        },
        Case {
            name: "x/a to pods b of every namespace",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: to-b, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {}
      podSelector: {matchLabels: {pod: b}}
"
                .into()
            },
            expected: |from, to, _, _| implies(from.is("x", "a"), to.name == "b"),
        },
        Case {
            name: "x/a to UDP 80 only",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: udp-80-out, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - ports:
    - {protocol: UDP, port: 80}
"
                .into()
            },
            expected: |from, _, proto, port| implies(from.is("x", "a"), udp(proto, port, 80)),
        },
        Case {
            name: "x/a to the named port serve-81-udp (resolved on the destination)",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-out, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - ports:
    - {port: serve-81-udp, protocol: UDP}
"
                .into()
            },
            expected: |from, _, proto, port| implies(from.is("x", "a"), udp(proto, port, 81)),
        },
        Case {
            name: "x/a to the pod subnet except namespace y's pods (egress ipBlock)",
            policies: |c| {
                format!(
                    "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: out-except, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  policyTypes: [Egress]
  egress:
  - to:
    - ipBlock:
        cidr: {}
        except: [{}/32, {}/32, {}/32]
",
                    c.pod_cidr,
                    c.pod("y", "a").ip,
                    c.pod("y", "b").ip,
                    c.pod("y", "c").ip
                )
            },
            expected: |from, to, _, _| implies(from.is("x", "a"), to.ns != "y"),
        },
        // Both directions, several policies, defaults.
        Case {
            name: "x/a: ingress from y, egress to z, in one policy",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: both, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: z}}
"
                .into()
            },
            expected: |from, to, _, _| {
                implies(to.is("x", "a"), from.ns == "y") && implies(from.is("x", "a"), to.ns == "z")
            },
        },
        Case {
            name: "x/a → y/b needs x/a's egress and y/b's ingress",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: out-to-yb, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  policyTypes: [Egress]
  egress:
  - to:
    - namespaceSelector: {matchLabels: {ns: y}}
      podSelector: {matchLabels: {pod: b}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: in-from-xa, namespace: y}
spec:
  podSelector: {matchLabels: {pod: b}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: x}}
      podSelector: {matchLabels: {pod: a}}
"
                .into()
            },
            expected: |from, to, _, _| {
                implies(from.is("x", "a"), to.is("y", "b"))
                    && implies(to.is("y", "b"), from.is("x", "a"))
            },
        },
        Case {
            name: "x/a: two policies unioned (y on TCP 80, z on any UDP)",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-tcp-80, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
    ports:
    - {port: 80, protocol: TCP}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: z-udp, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: z}}
    ports:
    - protocol: UDP
"
                .into()
            },
            expected: |from, to, proto, port| {
                implies(
                    to.is("x", "a"),
                    (from.ns == "y" && tcp(proto, port, 80))
                        || (from.ns == "z" && proto == Proto::Udp),
                )
            },
        },
        Case {
            name: "no policyTypes and no rules: ingress isolation of x/c",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-c, namespace: x}
spec:
  podSelector: {matchLabels: {pod: c}}
"
                .into()
            },
            expected: |_, to, _, _| !to.is("x", "c"),
        },
        Case {
            name: "no policyTypes with egress rules: x/a isolated both ways",
            policies: |_| {
                "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: egress-implied, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  egress:
  - to:
    - podSelector: {}
"
                .into()
            },
            expected: |from, to, _, _| !to.is("x", "a") && implies(from.is("x", "a"), to.ns == "x"),
        },
    ]
}
