//! End-to-end: a real container runtime (Debian's podman with its CNI
//! network backend, runc) runs containers on a Plexus network through
//! `plexus-cni`: they get their addresses from Plexus, reach each other,
//! and leave nothing behind on `podman rm`. Needs root, podman, runc and
//! busybox-static.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;
use support::cni::{network_veths, PLUGIN};
use support::netns::unique;
use support::plexus::Plexus;

/// A private podman (own storage, config and CNI directories), whose
/// guard removes every container it ran.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// Prepares the directories, the config and a busybox image.
    fn new(conflist: &serde_json::Value) -> Podman {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let plugins = d.join("plugins");
        let netconf = d.join("netconf");
        let rootfs = d.join("rootfs");
        for sub in [&plugins, &netconf, &rootfs.join("bin"), &rootfs.join("www")] {
            std::fs::create_dir_all(sub).unwrap();
        }
        std::os::unix::fs::symlink(PLUGIN, plugins.join("plexus-cni")).unwrap();
        std::fs::write(
            netconf.join("plexus.conflist"),
            serde_json::to_vec(conflist).unwrap(),
        )
        .unwrap();
        std::fs::write(
            d.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{}\"\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n[containers]\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]\n",
                plugins.display(),
                netconf.display()
            ),
        )
        .unwrap();
        std::fs::copy("/usr/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "httpd", "wget", "ip", "cat", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::write(rootfs.join("www/index.html"), "served through plexus\n").unwrap();
        let podman = Podman { dir };
        let import = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -C {} -c . | {} import - localhost/bb",
                rootfs.display(),
                podman.command_line()
            ))
            .env("CONTAINERS_CONF", podman.conf())
            .output()
            .unwrap();
        assert!(
            import.status.success(),
            "import: {}",
            String::from_utf8_lossy(&import.stderr)
        );
        podman
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("containers.conf")
    }

    fn args(&self) -> Vec<String> {
        let d: &Path = self.dir.path();
        vec![
            "--root".into(),
            d.join("root").display().to_string(),
            "--runroot".into(),
            d.join("runroot").display().to_string(),
            "--storage-driver".into(),
            "vfs".into(),
            "--runtime".into(),
            "runc".into(),
        ]
    }

    fn command_line(&self) -> String {
        format!("podman {}", self.args().join(" "))
    }

    /// Runs podman with `args`; returns its output whatever its status.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .args(self.args())
            .args(args)
            .env("CONTAINERS_CONF", self.conf())
            .output()
            .unwrap()
    }

    /// Runs podman with `args`, failing the test if it fails; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "podman {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "-a", "-f", "-t", "0"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_containers_live_on_a_plexus_network() {
    let plexus = Plexus::start().await;
    let client = plexus.client();
    let hosts: Vec<nsdb::Host> = client.list("/v1/hosts").await.unwrap();
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), &plexus.token).unwrap();
    let network = unique("podnet");
    let tenant = unique("pods");
    let podman = Podman::new(&json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [{
            "type": "plexus-cni",
            "api": plexus.url,
            "token_file": token.path(),
            "host": hosts[0].name,
            "tenant": tenant,
        }],
    }));
    assert!(network_veths(&network).is_empty());
    let server = unique("web");
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &server,
        "--network",
        &network,
        "localhost/bb",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    // Its address comes from the tenant's Plexus pool.
    let attachments = client.attachments(None, Some(&network)).await.unwrap();
    assert_eq!(
        network_veths(&network).len(),
        1,
        "the server's veth, by alias"
    );
    assert_eq!(attachments.len(), 1, "{attachments:?}");
    let attachment = &attachments[0];
    assert!(attachment.active);
    let tenants: Vec<nsdb::Tenant> = client.list("/v1/tenants").await.unwrap();
    let owner = tenants
        .iter()
        .find(|t| t.name == tenant)
        .expect("the tenant");
    assert_eq!(attachment.tenant_id, owner.id);
    let ip = attachment.address.addr().to_string();
    let format = format!("{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}");
    assert_eq!(podman.ok(&["inspect", &server, "--format", &format]), ip);
    // Another container reaches it over the Plexus bridge.
    let page = podman.ok(&[
        "run",
        "--rm",
        "--network",
        &network,
        "localhost/bb",
        "wget",
        "-qO-",
        &format!("http://{ip}:8080/"),
    ]);
    assert_eq!(page, "served through plexus");
    // `podman rm` removes the attachment, its lease and its veth; so did
    // the `--rm` of the client container.
    podman.ok(&["rm", "-f", "-t", "0", &server]);
    assert!(client
        .attachments(None, Some(&network))
        .await
        .unwrap()
        .is_empty());
    let leases: Vec<nsdb::IpLease> = client
        .list(&format!("/v1/ip_pools/{}/leases", attachment.pool_id))
        .await
        .unwrap();
    assert!(leases.is_empty(), "{leases:?}");
    assert_eq!(network_veths(&network), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_containers_on_a_dual_stack_network_talk_over_ipv6() {
    let plexus = Plexus::start().await;
    let client = plexus.client();
    let hosts: Vec<nsdb::Host> = client.list("/v1/hosts").await.unwrap();
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), &plexus.token).unwrap();
    let network = unique("podnet");
    // The tenant's network has an IPv6 pool beside its IPv4 one.
    let tenant = client.create_tenant(&unique("pods")).await.unwrap();
    let net = client.init_tenant_network(tenant.id, None).await.unwrap();
    let v6: nsdb::IpPool = client
        .post(
            "/v1/ip_pools",
            &json!({"name": unique("podv6"), "cidr": "fd00:e1::/64",
                    "tenant_id": tenant.id, "bridge_id": net.bridge.id}),
        )
        .await
        .unwrap();
    let podman = Podman::new(&json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [{
            "type": "plexus-cni",
            "api": plexus.url,
            "token_file": token.path(),
            "host": hosts[0].name,
            "tenant": tenant.name,
        }],
    }));
    assert!(network_veths(&network).is_empty());
    let server = unique("web");
    podman.ok(&[
        "run",
        "-d",
        "--name",
        &server,
        "--network",
        &network,
        "localhost/bb",
        "httpd",
        "-f",
        "-p",
        "8080",
        "-h",
        "/www",
    ]);
    let attachments = client.attachments(None, Some(&network)).await.unwrap();
    assert_eq!(
        network_veths(&network).len(),
        1,
        "the server's veth, by alias"
    );
    assert_eq!(attachments.len(), 1, "{attachments:?}");
    let addresses = &attachments[0].addresses;
    assert_eq!(addresses.len(), 2, "{addresses:?}");
    assert_eq!(addresses[1].pool_id, v6.id);
    let ip6 = addresses[1].address.addr().to_string();
    // podman took both addresses from the result.
    let format = format!("{{{{.NetworkSettings.Networks.{network}.GlobalIPv6Address}}}}");
    assert_eq!(podman.ok(&["inspect", &server, "--format", &format]), ip6);
    let format = format!("{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}");
    let ip4 = addresses[0].address.addr().to_string();
    assert_eq!(podman.ok(&["inspect", &server, "--format", &format]), ip4);
    // Another container reaches it over IPv6 (and IPv4).
    for url in [
        format!("http://[{ip6}]:8080/"),
        format!("http://{ip4}:8080/"),
    ] {
        let page = podman.ok(&[
            "run",
            "--rm",
            "--network",
            &network,
            "localhost/bb",
            "wget",
            "-qO-",
            &url,
        ]);
        assert_eq!(page, "served through plexus", "{url}");
    }
    podman.ok(&["rm", "-f", "-t", "0", &server]);
    for address in addresses {
        let leases: Vec<nsdb::IpLease> = client
            .list(&format!("/v1/ip_pools/{}/leases", address.pool_id))
            .await
            .unwrap();
        assert!(leases.is_empty(), "{leases:?}");
    }
    assert_eq!(network_veths(&network), Vec::<String>::new());
}
