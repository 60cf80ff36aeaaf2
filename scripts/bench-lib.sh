# Helpers the multi-host benchmarks share. Source after setting `tag` (the
# run's namespace prefix).

# underlay_hosts A B: namespaces ${tag}A and ${tag}B joined by an underlay
# veth ul0 (192.168.100.1/.2, MTU 1500), up, with loopback.
underlay_hosts() {
  ip netns add "${tag}$1"; ip netns add "${tag}$2"
  ip link add ul0 netns "${tag}$1" type veth peer name ul0 netns "${tag}$2"
  ip -n "${tag}$1" addr add 192.168.100.1/24 dev ul0
  ip -n "${tag}$2" addr add 192.168.100.2/24 dev ul0
  for h in "$1" "$2"; do ip -n "${tag}$h" link set ul0 up; ip -n "${tag}$h" link set lo up; done
}
