//! `plexus tenant …`: tenants and their default networks through the API.

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::tools::ApiClientArgs;

/// `plexus tenant` subcommands.
#[derive(Subcommand)]
pub enum TenantCommand {
    /// Create the tenant if needed and initialise its default network
    /// (router linked to the provider, host access without NAT, masquerade
    /// to the outside, default bridge and pod subnet; dual-stack when the
    /// deployment has IPv6, which it also adds to an IPv4-only network made
    /// before). Idempotent.
    Init(InitArgs),
    /// Show a tenant's default network.
    Show(ShowArgs),
}

/// `plexus tenant init`.
#[derive(Parser)]
pub struct InitArgs {
    /// The tenant's name.
    name: String,
    /// The pod subnet (default: the next free one of the provider's pod range).
    #[arg(long)]
    pod_cidr: Option<String>,
    /// The IPv6 pod prefix when the deployment is dual-stack (default: the
    /// next free one of the provider's IPv6 pod range).
    #[arg(long)]
    pod_cidr6: Option<String>,
    /// Accept that the host reaches the pods only through NAT (needed when
    /// the pod subnet overlaps another tenant's; refused otherwise).
    #[arg(long)]
    nat_only: bool,
    #[command(flatten)]
    api: ApiClientArgs,
}

/// `plexus tenant show`.
#[derive(Parser)]
pub struct ShowArgs {
    /// The tenant's name or id.
    name: String,
    #[command(flatten)]
    api: ApiClientArgs,
}

async fn find(client: &api::Client, name: &str) -> anyhow::Result<Option<nsdb::Tenant>> {
    let tenants: Vec<nsdb::Tenant> = client.list("/v1/tenants").await?;
    Ok(tenants
        .into_iter()
        .find(|t| t.name == name || t.id.to_string() == name))
}

fn print(network: &api::TenantNetwork, name: &str) {
    println!("tenant {name} ({})", network.tenant_id);
    println!("    router {} ({})", network.router.name, network.router.id);
    println!(
        "    bridge {} ({}) pods {} gateway {} mtu {}",
        network.bridge.name, network.bridge.id, network.pod_cidr, network.gateway, network.mtu
    );
    if let (Some(pods), Some(gateway)) = (network.pod_cidr6, network.gateway6) {
        println!("    IPv6 pods {pods} gateway {gateway} (routed, never NATed)");
    }
    if let Some(link) = network.link_port.address {
        let link6: Vec<String> = network
            .link_port
            .extra_addresses
            .iter()
            .map(|a| format!(" {a}"))
            .collect();
        println!(
            "    provider link {link}{} (port {})",
            link6.concat(),
            network.link_port.id
        );
    }
    if network.nat_only {
        println!("    host access: NAT only (the host cannot reach these pods; they reach it masqueraded)");
    } else {
        println!("    host access: direct (host and pods see each other's own addresses)");
    }
}

/// Runs a `plexus tenant` subcommand.
pub async fn run(command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Init(args) => {
            let client = args.api.client()?;
            let tenant =
                match find(&client, &args.name).await? {
                    Some(tenant) => tenant,
                    None => match client.create_tenant(&args.name).await {
                        Ok(tenant) => tenant,
                        // Someone created it meanwhile.
                        Err(error) if error.status() == Some(409) => find(&client, &args.name)
                            .await?
                            .context("the tenant was created and removed meanwhile")?,
                        Err(error) => return Err(error.into()),
                    },
                };
            let network = client
                .init_tenant_network_on(
                    tenant.id,
                    (args.pod_cidr.as_deref(), args.pod_cidr6.as_deref()),
                    args.nat_only,
                )
                .await
                .map_err(|error| {
                    let overlap = matches!(&error, api::ApiError::Problem(p)
                        if p.problem_type.ends_with("/pod-subnet-overlap"));
                    let hint = if overlap {
                        "\nchoose another --pod-cidr (or --pod-cidr6), or pass --nat-only to accept that the host reaches these pods only through NAT"
                    } else {
                        ""
                    };
                    anyhow::anyhow!(
                        "cannot initialise the network of tenant {}: {error}{hint}",
                        tenant.name
                    )
                })?;
            print(&network, &tenant.name);
        }
        TenantCommand::Show(args) => {
            let client = args.api.client()?;
            let tenant = find(&client, &args.name)
                .await?
                .with_context(|| format!("no tenant named or with id '{}'", args.name))?;
            let network = client.tenant_network(tenant.id).await?.with_context(|| {
                format!(
                    "tenant {} has no network; run plexus tenant init",
                    tenant.name
                )
            })?;
            print(&network, &tenant.name);
        }
    }
    Ok(())
}
