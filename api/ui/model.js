// From API records to the graph of one tenant: nodes in layers (uplink,
// routers, bridges, ports and members, hosts) and the edges between them.

/** Layers, top to bottom. */
export const LAYER = { uplink: 0, router: 1, bridge: 2, endpoint: 3, member: 3, host: 4 };

/** The first 8 hex digits of an id, as the CLI prints it. */
export function short(id) {
  return String(id).slice(0, 8);
}

/** The addresses of a port: its own (router ports) and its allowed ones. */
export function portAddresses(port) {
  const out = [];
  if (port.address) out.push(port.address);
  for (const allowed of port.allowed_addresses || []) {
    if (allowed.ip) out.push(String(allowed.ip).replace(/\/32$/, ""));
  }
  return out;
}

/**
 * The graph of `tenantId` from `data` (lists of tenants, routers, bridges,
 * ports, hosts (null when the token may not list them), load balancers,
 * pools and members).
 */
export function buildModel(data, tenantId) {
  const devices = new Map();
  for (const r of data.routers) devices.set(r.id, { kind: "router", record: r });
  for (const b of data.bridges) devices.set(b.id, { kind: "bridge", record: b });
  const tenants = new Map(data.tenants.map((t) => [t.id, t]));
  const ports = new Map(data.ports.map((p) => [p.id, p]));
  const hosts = new Map((data.hosts || []).map((h) => [h.id, h]));
  const mine = (deviceId) => devices.get(deviceId)?.record.tenant_id === tenantId;
  const nodes = new Map();
  const edges = new Map();
  const choices = [];

  const addNode = (node) => {
    if (!nodes.has(node.id)) nodes.set(node.id, { lines: [], ...node, layer: LAYER[node.kind] });
    return nodes.get(node.id);
  };
  const addEdge = (edge) => {
    if (!edges.has(edge.id)) edges.set(edge.id, { ports: [], label: "", ...edge });
  };

  for (const [id, device] of devices) {
    if (device.record.tenant_id !== tenantId) continue;
    addNode({ id, kind: device.kind, name: device.record.name, title: device.kind + " " + device.record.name });
  }

  const sorted = [...ports.values()].filter((p) => mine(p.device_id));
  sorted.sort((a, b) => (a.mac < b.mac ? -1 : 1));
  for (const port of sorted) {
    const device = devices.get(port.device_id);
    const peer = port.peer_id ? ports.get(port.peer_id) : undefined;
    if (port.peer_id && peer && mine(peer.device_id)) {
      // An interior link inside the tenant: one edge, named by its router side.
      const [a, b] = [port, peer].sort((x, y) => (x.id < y.id ? -1 : 1));
      const routerSide = [a, b].find((p) => devices.get(p.device_id)?.kind === "router");
      const [upper, lower] = devices.get(a.device_id).kind === "router" ? [a, b] : [b, a];
      addEdge({
        id: "link:" + a.id,
        kind: "link",
        from: upper.device_id,
        to: lower.device_id,
        ports: [a.id, b.id],
        label: routerSide?.address || "",
      });
      continue;
    }
    if (port.peer_id) {
      // The link leaves the tenant: the provider uplink.
      const far = peer && devices.get(peer.device_id);
      const owner = far && tenants.get(far.record.tenant_id);
      const id = far ? peer.device_id : "uplink:" + port.id;
      addNode({
        id,
        kind: "uplink",
        name: far ? far.record.name : "provider",
        title: "provider uplink",
        lines: far
          ? [far.kind + " " + far.record.name + (owner ? " of " + owner.name : ""), peer.address || ""].filter(Boolean)
          : ["beyond this tenant"],
      });
      addEdge({ id: "uplink:" + port.id, kind: "uplink", from: id, to: port.device_id, ports: [port.id, port.peer_id], label: port.address || "" });
      continue;
    }
    // An exterior port: a pod, a VM, an uplink interface, or not bound yet.
    const addresses = portAddresses(port);
    const node = addNode({
      id: "port:" + port.id,
      kind: "endpoint",
      name: short(port.id),
      title: "port " + short(port.id),
      portId: port.id,
      lines: [addresses.join(" ") || port.mac],
      counters: true,
    });
    addEdge({ id: "attach:" + port.id, kind: "attach", from: port.device_id, to: node.id, ports: [port.id] });
    choices.push({
      id: port.id,
      label: "port " + short(port.id) + " " + (addresses[0] || port.mac) + " on " + device.kind + " " + device.record.name,
      bridge: device.kind === "bridge",
    });
    if (port.host_id) {
      const host = hosts.get(port.host_id);
      const hostNode = addNode({
        id: "host:" + port.host_id,
        kind: "host",
        name: host ? host.name : short(port.host_id),
        title: "host " + (host ? host.name : short(port.host_id)),
        lines: host ? [String(host.tunnel_ip), host.alive ? "alive" : "not alive"] : [],
        alive: host ? host.alive : undefined,
      });
      addEdge({ id: "bound:" + port.id, kind: "bound", from: node.id, to: hostNode.id, ports: [port.id], label: port.interface_name || "" });
    }
  }

  // Load-balancer members and their health, under their router.
  const lbs = new Map(data.loadBalancers.map((lb) => [lb.id, lb]));
  const pools = new Map(data.pools.map((p) => [p.id, p]));
  for (const member of data.members) {
    if (member.tenant_id !== tenantId) continue;
    const pool = pools.get(member.pool_id);
    const lb = pool && lbs.get(pool.load_balancer_id);
    const id = "member:" + member.id;
    addNode({
      id,
      kind: "member",
      name: member.address + ":" + member.port,
      title: "member " + member.address + ":" + member.port,
      lines: [(lb ? lb.name + "/" : "") + (pool ? pool.name + ", " : "") + "health " + member.health],
      health: member.health,
    });
    if (lb && nodes.has(lb.router_id)) {
      addEdge({ id: "member:" + member.id, kind: "member", from: lb.router_id, to: id });
    }
  }

  choices.sort((a, b) => (a.bridge === b.bridge ? a.label.localeCompare(b.label) : a.bridge ? -1 : 1));
  return { nodes: [...nodes.values()], edges: [...edges.values()], choices };
}
