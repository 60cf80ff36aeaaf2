//! The etcd backend against a real etcd with authentication and with TLS.

mod support;

use std::process::Command;
use std::sync::Arc;

use nsdb::{EtcdBackend, EtcdConfig, Nsdb, NsdbError, StoreError, Tenant};
use support::etcd::EtcdServer;
use uuid::Uuid;

fn etcdctl(endpoint: &str, args: &[&str]) {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint])
        .args(args)
        .output()
        .expect("run etcdctl (Debian package etcd-client)");
    assert!(
        output.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn config(endpoint: &str, user: Option<(&str, &str)>) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![endpoint.to_string()],
        prefix: format!("/plexus-auth-{}/", Uuid::new_v4()),
        user: user.map(|(u, _)| u.to_string()),
        password: user.map(|(_, p)| p.to_string()),
        ..EtcdConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password_authenticate_and_a_wrong_password_is_refused() {
    let etcd = EtcdServer::start();
    etcdctl(&etcd.endpoint, &["user", "add", "root:rootpw"]);
    etcdctl(&etcd.endpoint, &["user", "add", "plexus:s3cret"]);
    etcdctl(&etcd.endpoint, &["role", "add", "plexus"]);
    etcdctl(
        &etcd.endpoint,
        &[
            "role",
            "grant-permission",
            "plexus",
            "--prefix=true",
            "readwrite",
            "/plexus-auth-",
        ],
    );
    etcdctl(&etcd.endpoint, &["user", "grant-role", "plexus", "plexus"]);
    etcdctl(&etcd.endpoint, &["auth", "enable"]);

    let backend = EtcdBackend::connect(config(&etcd.endpoint, Some(("plexus", "s3cret"))))
        .await
        .unwrap();
    let db = Nsdb::new(Arc::new(backend));
    let tenant = db
        .create(Tenant {
            id: Uuid::new_v4(),
            revision: 0,
            name: "authed".into(),
            network: None,
        })
        .await
        .unwrap();
    assert_eq!(db.fetch::<Tenant>(tenant.id).await.unwrap().name, "authed");

    let wrong = EtcdBackend::connect(config(&etcd.endpoint, Some(("plexus", "nope")))).await;
    assert!(wrong.is_err(), "a wrong password must be refused");

    // Without credentials every request is refused, with a clear error.
    if let Ok(anonymous) = EtcdBackend::connect(config(&etcd.endpoint, None)).await {
        let db = Nsdb::new(Arc::new(anonymous));
        let error = db
            .create(Tenant {
                id: Uuid::new_v4(),
                revision: 0,
                name: "anon".into(),
                network: None,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                NsdbError::Store(StoreError::Backend(_) | StoreError::Unavailable(_))
            ),
            "{error}"
        );
    }
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("run openssl");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let ext = dir.join("san.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=plexus-test-ca",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    for name in ["server", "client"] {
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN=plexus-{name}"),
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            &format!("{name}.pem"),
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_connects_and_untrusted_clients_are_refused() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let etcd = EtcdServer::start_tls(certs.path());
    let tls = |cert: bool| EtcdConfig {
        ca_file: Some(certs.path().join("ca.pem")),
        cert_file: cert.then(|| certs.path().join("client.pem")),
        key_file: cert.then(|| certs.path().join("client-key.pem")),
        ..config(&format!("https://{}", etcd.endpoint), None)
    };

    let backend = EtcdBackend::connect(tls(true)).await.unwrap();
    let db = Nsdb::new(Arc::new(backend));
    let tenant = db
        .create(Tenant {
            id: Uuid::new_v4(),
            revision: 0,
            name: "over-tls".into(),
            network: None,
        })
        .await
        .unwrap();
    assert_eq!(
        db.fetch::<Tenant>(tenant.id).await.unwrap().name,
        "over-tls"
    );
    // The etcds:// URL form means TLS too.
    let from_url = EtcdConfig::from_url(&format!("etcds://{}/plexus-tls/", etcd.endpoint)).unwrap();
    assert!(from_url.endpoints[0].starts_with("https://"));

    // Without a client certificate the server refuses us.
    let refused = match EtcdBackend::connect(tls(false)).await {
        Err(_) => true,
        Ok(backend) => Nsdb::new(Arc::new(backend))
            .current_revision()
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate must not get in");
    // A CA we do not trust: the server's certificate is refused.
    let stranger = tempfile::tempdir().unwrap();
    make_certs(stranger.path());
    let untrusted = EtcdConfig {
        ca_file: Some(stranger.path().join("ca.pem")),
        ..tls(true)
    };
    let refused = match EtcdBackend::connect(untrusted).await {
        Err(_) => true,
        Ok(backend) => Nsdb::new(Arc::new(backend))
            .current_revision()
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a server certificate from an untrusted CA must be refused"
    );
}
